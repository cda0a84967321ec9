#!/usr/bin/env bash
# vm-test.sh: the test suite on cgroup v2, in a QEMU virtual machine.
#
# These machines mount cgroup v1; Cloud Run's second generation gives a
# container cgroup v2. This boots a small Debian 12 VM whose kernel has every
# v1 controller disabled (cgroup_no_v1=all) and runs there, on the real v2
# hierarchy (scripts/vm-guest.sh does the guest's part) what differs there:
#   - the cgroup code: the worker crate's cgroup unit tests and
#     worker/tests/real_jail.rs (both real sandboxes, both modes), and one
#     end-to-end suite per isolation mode of VM_ISOLATION_MODES: sandbox.rs's
#     tests of the v2 paths (VM_SUITE=full: every end-to-end suite), each test
#     binary started like a container: a descendant of PID 1 (tini), in a
#     cgroup of its own that already holds processes;
#   - the jail policy, property by property, in both modes
#     (worker/tests/jail_policy, the "probe" stage);
#   - per mode, the release server started that way (the self-check), its
#     cgroups inspected from outside, its API checked from this host through
#     the VM's one forwarded port, then SIGTERM;
#   - the Docker image built here by docker/test-image.sh, `docker save`d,
#     `docker load`ed in the VM and checked there by docker/check-image.sh.
#
#   scripts/vm-test.sh          (as root; `make test-cgroup2`; part of `make test`)
#
# What happens, in order:
#   1. qemu-system-x86, debootstrap, e2fsprogs are installed if missing.
#   2. scripts/vm-image.sh builds the VM image unless the cache has it (keyed
#      by a hash of its inputs): debootstrap minbase bookworm with the kernel,
#      systemd, docker.io, tini, and the project's own scripts/setup.sh run in
#      the chroot. In the background, while step 3 runs.
#   3. On the host: the release `pyexec`, the test binaries (`cargo test
#      --no-run`, the dev profile `make test-rust` builds; bookworm's glibc on
#      both sides) and the Docker image (`docker save`, cached by image id).
#   4. QEMU boots the image with its own kernel, `-snapshot` (the cached image
#      is never written), 9p shares: this checkout read-only at the *same
#      absolute path* (so the paths compiled into the test binaries, such as
#      CARGO_BIN_EXE_pyexec and CARGO_MANIFEST_DIR, resolve unchanged), and a
#      per-run directory for results. KVM is tried first; this machine's
#      /dev/kvm (PVM) refuses a stock kernel, so it falls back to TCG and says so.
#      User-mode networking, restrict=on: the guest reaches nothing; one
#      forwarded 127.0.0.1 port reaches the guest's :8080.
#   5. It waits for the guest's ready marker, streams the guest's log, waits
#      for its exit code, and stops QEMU by its PID (also on failure or Ctrl-C).
#
# Knobs (environment):
#   VM_ISOLATION_MODES  isolation modes the suite runs in (default "fork spawn");
#                       each run exports PYEXEC_TEST_ISOLATION=<mode>
#   VM_STAGES           guest stages (default "e2e probe server docker")
#   VM_SUITE            v2 (default): the tests of the v2 paths; full: every
#                       end-to-end suite (api, sandbox and job_features in every
#                       mode; startup, observability and in_process once)
#   VM_TESTS            tests run in every mode: test binaries, or binary:filter
#                       (a test's name, or a module path, as cargo test filters)
#                       (default: the sandbox.rs tests of the v2 paths: attacks,
#                       a kill mid-job, SIGTERM leftovers)
#   VM_TESTS_ONCE       tests run in the first mode only (default: real_jail and
#                       the worker crate's cgroup unit tests, pyexec_worker:jail::cgroup::)
#   VM_TIME_SCALE       PYEXEC_TEST_TIME_SCALE in the guest (default 8): the
#                       emulated CPU is 10-15x slower than the host's
#   VM_ACCEL            auto (KVM, else TCG), kvm or tcg
#   VM_CACHE            where images and runs are kept (/var/cache/pyexec-vm)
#   VM_TIMEOUT          seconds the guest may run from boot to its exit code (1800)
#   VM_CPUS, VM_MEMORY_MB   guest size (2, 3072)
#   VM_DOCKER_IMAGE     the image the docker stage builds and checks
#                       (pyexec:vm-<checkout directory name>)
#   VM_REBUILD=1        rebuild the VM image even when the cache has it
#   DEBIAN_MIRROR       the mirror debootstrap uses (default: the one apt uses)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

VM_CACHE=${VM_CACHE:-/var/cache/pyexec-vm}
VM_ISOLATION_MODES=${VM_ISOLATION_MODES:-fork spawn}
VM_STAGES=${VM_STAGES:-e2e probe server docker}
VM_SUITE=${VM_SUITE:-v2}
# What differs on cgroup v2 is the cgroup code (the root's set-up in a
# populated container cgroup, per-worker limits, a fork child moved by pid,
# memory.events, memory.max written per job, memory.peak and cpu.stat read
# after it, removal) and the jail's limits as a script meets them. Once, in
# the first mode: the worker crate's cgroup unit tests and real_jail.rs (both
# real sandboxes, each test in both modes: memory.events, a job's own
# memory.max, its usage, the self-check). In every mode, one end-to-end
# suite: sandbox.rs's tests of the v2 paths (the server's root set-up in the
# container cgroup, a memory bomb told apart by memory.events, a fork bomb
# held by pids.max, a job killed mid-way, no leftovers after SIGTERM), the
# most telling: they reach every one of those paths through the real server.
# The jail policy's own stage ("probe") proves the limits and counters
# property by property, in both modes. api.rs, job_features.rs, startup.rs
# and the rest go through the same paths and depend on the cgroup version
# nowhere else; the host's `make test` runs them, and VM_SUITE=full here
# (under emulation they add several minutes).
case $VM_SUITE in
  v2)
    VM_TESTS=${VM_TESTS-sandbox:attacks_get_their_kind_and_the_next_job_succeeds
      sandbox:a_client_disconnect_mid_job_frees_and_replaces_the_worker
      sandbox:sigterm_leaves_no_jail_and_no_cgroup_behind}
    VM_TESTS_ONCE=${VM_TESTS_ONCE-real_jail pyexec_worker:jail::cgroup::} ;;
  full)
    VM_TESTS=${VM_TESTS-api sandbox job_features}
    VM_TESTS_ONCE=${VM_TESTS_ONCE-real_jail pyexec_worker:jail::cgroup:: startup observability in_process} ;;
  *) echo "vm-test: VM_SUITE=$VM_SUITE: want v2 or full" >&2; exit 64 ;;
esac
VM_TESTS=$(xargs <<< "$VM_TESTS")   # one line
VM_TIME_SCALE=${VM_TIME_SCALE:-8}
VM_ACCEL=${VM_ACCEL:-auto}
VM_TIMEOUT=${VM_TIMEOUT:-1800}
VM_CPUS=${VM_CPUS:-2}
VM_MEMORY_MB=${VM_MEMORY_MB:-3072}
# A tag of this checkout's own: checkouts sharing the machine's Docker retag
# pyexec:test and prune what it pointed to, which would cost a rebuild and a
# docker load each time. Same layers, so no second build.
VM_DOCKER_IMAGE=${VM_DOCKER_IMAGE:-pyexec:vm-$(basename "$repo" | tr -c 'a-z0-9_.\n-' '-')}
CARGO=${CARGO:-cargo}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}   # the machine is shared

SUITE=bookworm

log() { printf '=== vm-test: %s\n' "$*"; }
die() { printf 'vm-test: FAIL: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot, docker)"
t_start=$(now)

# ------------------------------------------------------------------ 1. host tools
# The Debian mirror apt already uses (debootstrap needs one; no other is reachable).
DEBIAN_MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p' \
  /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

install_qemu() {
  # bookworm's qemu-system-x86 (7.2) conflicts with a qemu-utils from
  # bookworm-backports (these machines have one). Then take qemu-system-x86
  # from backports too, through a private source list that is not left
  # configured, instead of downgrading what the machine has.
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       qemu-system-x86 >/dev/null 2>&1; then
    return
  fi
  local utils
  utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  case $utils in *bpo12*) ;; *) die "apt-get install qemu-system-x86 failed" ;; esac
  log "qemu-utils $utils is a backport: taking qemu-system-x86 from bookworm-backports"
  local tmp
  tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial"
  cat > "$tmp/sources.list" <<EOF
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security $SUITE-security main
deb $DEBIAN_MIRROR $SUITE-backports main
EOF
  local apt_opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=-
                  -o "Dir::State::lists=$tmp/lists")
  apt-get "${apt_opts[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
    -t "$SUITE-backports" qemu-system-x86 >/dev/null
  rm -rf "$tmp"
}

missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  log "installing qemu-system-x86"
  apt-get update -qq
  install_qemu
fi
command -v qemu-system-x86_64 >/dev/null 2>&1 || die "qemu-system-x86_64 missing after install"

# ------------------------------------------------------------------ 2. the VM image
image_dir=$(bash "$here/vm-image.sh" --dir)
key=${image_dir##*/image-}
mkdir -p "$VM_CACHE"

image_pid=""
image_built=0
if [ "${VM_REBUILD:-0}" = 1 ] || [ ! -f "$image_dir/disk.img" ]; then
  image_built=1
  # In a process group of its own, so that an interrupted run can stop all of it.
  setsid bash "$here/vm-image.sh" > "$VM_CACHE/image-$key.log" 2>&1 < /dev/null &
  image_pid=$!
  log "VM image $key not cached: building it in the background ($VM_CACHE/image-$key.log)"
else
  log "VM image $key from the cache (built in $(cat "$image_dir/build-seconds" 2>/dev/null || echo '?') s)"
fi

# ------------------------------------------------------------------ 3. host artefacts
run_dir=""
qemu_pid=""
tail_pid=""
tests_json=""
docker_store=""
# A Docker store the guest opened but did not close cleanly (stage or VM
# interrupted, Docker not stopped) may be half-written: the next run starts
# from an empty one.
check_docker_store() {
  if [ -n "$docker_store" ] && [ -f "$run_dir/docker-store-opened" ] \
     && [ ! -f "$run_dir/docker-store-closed" ]; then
    log "the guest did not close the cached Docker store cleanly: dropping it"
    rm -f "$docker_store"
  fi
  docker_store=""
}

cleanup() {
  local rc=$?
  if [ -n "$tests_json" ]; then rm -f "$tests_json"; fi
  if [ -n "$tail_pid" ]; then kill "$tail_pid" 2>/dev/null || true; fi
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    log "stopping QEMU (pid $qemu_pid)"
    kill -TERM "$qemu_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  check_docker_store
  if [ -n "$image_pid" ] && kill -0 "$image_pid" 2>/dev/null; then
    log "stopping the VM image build (process group $image_pid)"
    kill -TERM -- "-$image_pid" 2>/dev/null || true
    wait "$image_pid" 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$(now)
log "building the release pyexec and the test binaries (cargo, $CARGO_BUILD_JOBS job(s))"
# The test binaries in the dev profile, as `make test-rust` builds them (after
# it, nothing to do; a release build of every test would cost about three
# minutes more); the release pyexec (the server stage) as `make build` does.
tests_json=$(mktemp)
(cd "$repo" && $CARGO test --locked --workspace --no-run --message-format=json) > "$tests_json"
(cd "$repo" && $CARGO build --release --locked)
target_dir=$(cd "$repo" && $CARGO metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
t_cargo=$(since "$t0")

docker_image_id=""
if [[ " $VM_STAGES " == *" docker "* ]]; then
  t0=$(now)
  log "building the Docker image $VM_DOCKER_IMAGE on the host (docker/test-image.sh, build only)"
  IMAGE=$VM_DOCKER_IMAGE BUILD_ONLY=1 bash "$repo/docker/test-image.sh"
  docker_image_id=$(docker image inspect -f '{{.Id}}' "$VM_DOCKER_IMAGE")
  docker_dir=$VM_CACHE/docker/${VM_DOCKER_IMAGE//[:\/]/_}
  docker_tar=$docker_dir/${docker_image_id#sha256:}.tar
  if [ ! -f "$docker_tar" ]; then
    mkdir -p "$docker_dir"
    rm -f "$docker_dir"/*.tar        # one saved image per tag is enough
    docker save -o "$docker_tar.tmp" "$docker_image_id"
    mv "$docker_tar.tmp" "$docker_tar"
  fi
  t_docker=$(since "$t0")
fi

if [ -n "$image_pid" ]; then
  log "waiting for the VM image build"
  wait "$image_pid" || { cat "$VM_CACHE/image-$key.log" >&2; die "building the VM image failed"; }
  image_pid=""
  sed 's/^/    /' "$VM_CACHE/image-$key.log"
fi
[ -f "$image_dir/disk.img" ] || die "no VM image at $image_dir"
# Keep the three newest images (other checkouts may use other keys).
ls -dt "$VM_CACHE"/image-*/ 2>/dev/null | tail -n +4 | while read -r old; do
  [ "${old%/}" = "$image_dir" ] || rm -rf --one-file-system "$old"
done
# Logs of the image builds whose images are gone.
for f in "$VM_CACHE"/image-*.log; do [ -d "${f%.log}" ] || rm -f "$f"; done

# ------------------------------------------------------------------ 4. the run
run_dir=$VM_CACHE/runs/$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$run_dir"
ls -dt "$VM_CACHE"/runs/*/ 2>/dev/null | tail -n +6 | xargs -r rm -rf --one-file-system
chmod 755 "$run_dir"

# The test binaries, by name (api, sandbox, ..., real_jail, jail_policy, and
# the crates' unit tests: pyexec_worker, pyexec_server), as cargo built them.
python3 - "$tests_json" "$run_dir/tests.list" <<'EOF'
import json, sys
with open(sys.argv[1]) as messages, open(sys.argv[2], "w") as out:
    for line in messages:
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if msg["profile"]["test"] and msg["target"]["kind"] in (["test"], ["lib"]):
            out.write("%s %s\n" % (msg["target"]["name"], msg["executable"]))
EOF
rm -f "$tests_json"
tests_json=""
cat > "$run_dir/config" <<EOF
VM_ISOLATION_MODES="$VM_ISOLATION_MODES"
VM_STAGES="$VM_STAGES"
VM_TESTS="$VM_TESTS"
VM_TESTS_ONCE="$VM_TESTS_ONCE"
PYEXEC_TEST_TIME_SCALE="$VM_TIME_SCALE"
VM_DOCKER_IMAGE="$VM_DOCKER_IMAGE"
VM_DOCKER_IMAGE_ID="$docker_image_id"
VM_PYEXEC="$target_dir/release/pyexec"
EOF
disks=()
if [ -n "$docker_image_id" ]; then
  # The saved image reaches the guest as a read-only disk holding the tar
  # (/dev/disk/by-id/virtio-pyexec-image).
  disks=(-drive "file=$docker_tar,if=none,id=image,format=raw,readonly=on"
         -device virtio-blk-pci,drive=image,serial=pyexec-image)
  # The guest's /var/lib/docker persists between runs on a disk of its own:
  # `docker load` under emulation takes 80-120 s when no layer of the image is
  # there yet, a third of that when only the top layers changed. One run at a
  # time may use it (QEMU inherits the lock); another one loads from scratch.
  store=$image_dir/docker-store.img
  exec 8> "$image_dir/docker-store.lock"
  if flock -n 8; then
    if [ ! -f "$store" ]; then
      truncate -s 6G "$store.tmp"
      mkfs.ext4 -q -F -L pyexec-docker "$store.tmp"
      mv "$store.tmp" "$store"
    fi
    disks+=(-drive "file=$store,if=none,id=store,format=raw"
            -device virtio-blk-pci,drive=store,serial=pyexec-docker)
    docker_store=$store
  else
    log "another run holds the VM's cached Docker store: this one loads the image from scratch"
  fi
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# apparmor=0: Debian's kernel enables AppArmor, and Docker then wants its
# profile loaded (apparmor_parser); Cloud Run has no AppArmor either.
cmdline="root=LABEL=pyexec-vm rw console=ttyS0 net.ifnames=0 cgroup_no_v1=all apparmor=0 panic=-1 pyexec.repo=$repo"
shares=(-virtfs "local,path=$run_dir,mount_tag=xfer,security_model=none,id=xfer"
        -virtfs "local,path=$repo,mount_tag=repo,security_model=none,readonly=on,id=repo")
case $target_dir/ in
  "$repo"/*) ;;
  *) cmdline+=" pyexec.target=$target_dir"
     shares+=(-virtfs "local,path=$target_dir,mount_tag=target,security_model=none,readonly=on,id=target") ;;
esac

boot() { # boot ACCEL: starts QEMU in the background, sets qemu_pid
  local accel=$1 cpu=max
  [ "$accel" = kvm ] && cpu=host
  rm -f "$run_dir/ready" "$run_dir/console.log"
  qemu-system-x86_64 -name pyexec-vm -accel "$accel" -cpu "$cpu" \
    -smp "$VM_CPUS" -m "$VM_MEMORY_MB" \
    -kernel "$image_dir/vmlinuz" -initrd "$image_dir/initrd.img" -append "$cmdline" \
    -drive "file=$image_dir/disk.img,if=virtio,format=raw,snapshot=on" "${disks[@]}" \
    "${shares[@]}" \
    -nic "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:$port-:8080" \
    -display none -serial "file:$run_dir/console.log" -monitor none -no-reboot \
    > "$run_dir/qemu.log" 2>&1 &
  qemu_pid=$!
}

# wait_ready SECONDS: 0 once the guest's ready marker is there, 1 if QEMU
# died or the time ran out.
wait_ready() {
  local deadline=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    [ -f "$run_dir/ready" ] && return 0
    kill -0 "$qemu_pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

stop_qemu() {
  kill -KILL "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=""
}

t_boot0=$(now)
accel=""
if [ "$VM_ACCEL" != tcg ] && [ -w /dev/kvm ]; then
  # A working KVM boots in seconds; this machine's PVM /dev/kvm makes QEMU
  # abort at once on a stock kernel ("failed to set MSR"), or crawl.
  # (Redirected: bash would report QEMU's abort with its whole command line.)
  if { boot kvm; wait_ready 90; } 2>/dev/null; then
    accel=kvm
  else
    reason=$(grep -m1 -iE 'error|fail' "$run_dir/qemu.log" || echo "no ready marker within 90 s")
    { stop_qemu; } 2>/dev/null
    [ "$VM_ACCEL" = kvm ] && die "KVM was asked for (VM_ACCEL=kvm) but did not boot: $reason"
    log "KVM did not boot the guest ($reason); using TCG (software emulation)"
  fi
fi
if [ -z "$accel" ]; then
  [ "$VM_ACCEL" = kvm ] && die "KVM was asked for (VM_ACCEL=kvm) but /dev/kvm is not usable"
  t_boot0=$(now)
  boot tcg
  wait_ready 300 || { tail -30 "$run_dir/console.log" >&2; cat "$run_dir/qemu.log" >&2
                      die "the VM did not come up within 300 s"; }
  accel=tcg
fi
t_boot=$(since "$t_boot0")
log "VM up with $accel after $t_boot s (guest uptime $(cat "$run_dir/ready") s); console: $run_dir/console.log"

# The guest's log, live, while it runs.
touch "$run_dir/guest.log"
tail -n +1 -F "$run_dir/guest.log" 2>/dev/null | sed -u 's/^/vm| /' &
tail_pid=$!

# Host side of the server stage: the guest serves on :8080 and leaves
# serving-<mode>; this host checks the API through the forwarded port (from
# outside the VM, as Cloud Run's front end would) and leaves host-checks-<mode>.
host_checks() {
  local marker mode rc
  for marker in "$run_dir"/serving-*; do
    [ -e "$marker" ] || continue
    mode=${marker##*/serving-}
    [ -e "$run_dir/host-checks-$mode" ] && continue
    rc=0
    python3 "$repo/docker/api_checks.py" "http://127.0.0.1:$port" --wait 60 \
      > "$run_dir/host-checks-$mode.log" 2>&1 || rc=$?
    sed "s/^/host| /" "$run_dir/host-checks-$mode.log"
    echo "$rc" > "$run_dir/host-checks-$mode.tmp"
    mv "$run_dir/host-checks-$mode.tmp" "$run_dir/host-checks-$mode"
  done
}

t_run0=$(now)
deadline=$(( $(date +%s) + VM_TIMEOUT ))
while [ ! -f "$run_dir/exit-code" ]; do
  kill -0 "$qemu_pid" 2>/dev/null || { sleep 1; break; }
  [ "$(date +%s)" -lt "$deadline" ] || { tail -20 "$run_dir/console.log" >&2; die "the guest did not finish within $VM_TIMEOUT s"; }
  host_checks
  sleep 1
done
t_run=$(since "$t_run0")
[ -f "$run_dir/exit-code" ] || { tail -30 "$run_dir/console.log" >&2; die "QEMU exited before the guest finished (console: $run_dir/console.log)"; }
guest_rc=$(cat "$run_dir/exit-code")

# The guest powers itself off; QEMU then exits.
for _ in $(seq 120); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$qemu_pid" 2>/dev/null; then
  log "the guest did not power off within 60 s: stopping QEMU"
fi
stop_qemu
check_docker_store
sleep 0.5
kill "$tail_pid" 2>/dev/null || true
tail_pid=""

# ------------------------------------------------------------------ 5. summary
echo
log "figures: accel $accel; VM image $( [ "$image_built" = 1 ] && echo "built in $(cat "$image_dir/build-seconds") s" || echo cached); host cargo ${t_cargo} s${t_docker:+; host docker build+save ${t_docker} s}; boot to ready ${t_boot} s; guest run ${t_run} s; total $(since "$t_start") s"
if [ -f "$run_dir/stages.tsv" ]; then
  log "guest stages (seconds, exit code):"
  awk -F'\t' '{ printf "    %-24s %8s s  exit %s\n", $1, $2, $3 }' "$run_dir/stages.tsv"
fi
log "logs: $run_dir"
[ "$guest_rc" = 0 ] || die "the cgroup v2 suite failed in the VM (exit $guest_rc); guest log: $run_dir/guest.log"
log "PASS: the cgroup v2 suite passed in the VM ($accel)"
