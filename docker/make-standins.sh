#!/usr/bin/env bash
# Makes local stand-ins for the two base images the Dockerfile names, for
# machines that reach the Debian, PyPI and crates.io registries but no image
# registry:
#
#   pyexec-standin/debian:bookworm-slim  for debian:bookworm-slim (runtime stage)
#   pyexec-standin/rust:bookworm         for rust:<version>-bookworm (builder stage)
#
# Both are a debootstrapped Debian 12 (minbase) plus this machine's CA
# certificates (an egress proxy here re-signs TLS; without them pip and cargo
# cannot reach their registries). The Rust stand-in also gets gcc/libc6-dev and
# this machine's Rust toolchain, laid out like the official rust image
# (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo on PATH).
#
# Each image carries a label `pyexec.standin.key`: a hash of this script, the
# CA files and the toolchain version. An image whose key matches is reused, so
# repeat runs take a second; change the recipe and it is rebuilt.
#
# Usage: docker/make-standins.sh            (as root; needs debootstrap, docker)
#        FORCE=1 docker/make-standins.sh    (rebuild both)
set -euo pipefail

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
RUNTIME_IMAGE=${STANDIN_RUNTIME_IMAGE:-pyexec-standin/debian:bookworm-slim}
RUST_IMAGE=${STANDIN_RUST_IMAGE:-pyexec-standin/rust:bookworm}
# The toolchain copied into the Rust stand-in: the machine's default rustup one.
RUSTUP_SRC=${RUSTUP_HOME:-/root/.rustup}
TOOLCHAIN_SRC=${STANDIN_TOOLCHAIN:-$(rustc --print sysroot 2>/dev/null || true)}

log() { printf 'make-standins: %s\n' "$*" >&2; }
die() { printf 'make-standins: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap needs it)"
command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
docker info >/dev/null 2>&1 || die "docker daemon not reachable"
[ -n "$TOOLCHAIN_SRC" ] && [ -x "$TOOLCHAIN_SRC/bin/cargo" ] \
  || die "no Rust toolchain found (rustc --print sysroot gave '$TOOLCHAIN_SRC')"

shopt -s nullglob
cas=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob

rust_version=$("$TOOLCHAIN_SRC/bin/rustc" --version)
# The key: what goes into the images. Not the Debian archive's state: that only
# changes through a FORCE=1 rebuild, like a pinned registry image would.
key=$( { cat "$0"; for c in "${cas[@]}"; do sha256sum "$c"; done; echo "$rust_version"; } \
       | sha256sum | cut -c1-16)

image_key() { docker image inspect -f '{{ index .Config.Labels "pyexec.standin.key" }}' "$1" 2>/dev/null || true; }

work=$(mktemp -d /var/tmp/pyexec-standin.XXXXXX)
cleanup() { rm -rf --one-file-system "$work"; }
trap cleanup EXIT

# debootstrap DIR [extra packages...]: a minbase bookworm with the machine's CAs,
# the same apt sources the official image has, and apt caches emptied.
bootstrap() {
  local dir=$1; shift
  local include="ca-certificates${1:+,$(IFS=,; echo "$*")}"
  log "debootstrap $SUITE into $dir (+ $include)"
  debootstrap --variant=minbase --include="$include" "$SUITE" "$dir" "$DEBIAN_MIRROR" \
    > "$dir.debootstrap.log" 2>&1 || { tail -30 "$dir.debootstrap.log" >&2; die "debootstrap failed"; }
  rm -f "$dir/etc/apt/sources.list"
  cat > "$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  for c in "${cas[@]}"; do cp "$c" "$dir/usr/local/share/ca-certificates/"; done
  chroot "$dir" update-ca-certificates >/dev/null
  # pip ignores the system store by default; point it (and curl-based tools) at it.
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$dir/etc/pip.conf"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
         "$dir"/var/log/* 2>/dev/null || true
}

import() { # import DIR IMAGE [--change ...]
  local dir=$1 image=$2; shift 2
  log "importing $image"
  tar --numeric-owner -C "$dir" -c . | docker import \
    --change "LABEL pyexec.standin.key=$key" \
    --change 'CMD ["bash"]' \
    "$@" - "$image" >/dev/null
}

build_runtime() {
  local dir=$work/runtime
  mkdir -p "$dir"
  bootstrap "$dir"
  import "$dir" "$RUNTIME_IMAGE" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
}

build_rust() {
  local dir=$work/rust tc
  mkdir -p "$dir"
  # What the official rust:*-bookworm image (buildpack-deps) offers that a build needs.
  bootstrap "$dir" gcc libc6-dev make pkg-config
  tc=$dir/usr/local/rustup/toolchains/$(echo "$rust_version" | awk '{print $2}')-x86_64-unknown-linux-gnu
  mkdir -p "$tc" "$dir/usr/local/cargo/bin"
  # bin, lib (rustc's own libraries and the std rlibs), libexec, etc; not the
  # 800 MB of share/ (docs).
  log "copying the Rust toolchain from $TOOLCHAIN_SRC"
  for d in bin lib libexec etc; do
    [ -e "$TOOLCHAIN_SRC/$d" ] && cp -a "$TOOLCHAIN_SRC/$d" "$tc/"
  done
  for b in "$tc"/bin/*; do ln -s "${b#"$dir"}" "$dir/usr/local/cargo/bin/$(basename "$b")"; done
  chroot "$dir" /usr/local/cargo/bin/cargo --version >/dev/null || die "cargo does not run in the stand-in"
  import "$dir" "$RUST_IMAGE" \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
}

pids=()
if [ "${FORCE:-0}" = 1 ] || [ "$(image_key "$RUNTIME_IMAGE")" != "$key" ]; then
  build_runtime & pids+=($!)
else
  log "reusing $RUNTIME_IMAGE (key $key)"
fi
if [ "${FORCE:-0}" = 1 ] || [ "$(image_key "$RUST_IMAGE")" != "$key" ]; then
  build_rust & pids+=($!)
else
  log "reusing $RUST_IMAGE (key $key)"
fi
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ "$rc" -eq 0 ] || die "building a stand-in failed"
log "ready: $RUNTIME_IMAGE $RUST_IMAGE"
