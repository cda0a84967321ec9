#!/usr/bin/env bash
# The container image test: builds the top-level Dockerfile, then
# docker/check-image.sh runs the image with the documented privileges and
# checks the API over 127.0.0.1, then runs it without them and checks that it
# refuses to start and says why.
#
# No image registry is reachable from CI, so the base images are local
# stand-ins (docker/make-standins.sh), reused across runs. Containers are
# always removed; images are kept so the next run hits the build cache.
#
#   docker/test-image.sh              (as root, from anywhere)
#   IMAGE=pyexec:test NO_CACHE=1 docker/test-image.sh   (cold build)
#   BUILD_ONLY=1 docker/test-image.sh (build, no checks: scripts/vm-test.sh
#                                      takes the image into the cgroup v2 VM)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
IMAGE=${IMAGE:-pyexec:test}
RUST_STANDIN=pyexec-standin/rust:bookworm
RUNTIME_STANDIN=pyexec-standin/debian:bookworm-slim
READY_TIMEOUT=${READY_TIMEOUT:-60}

log() { printf '\n=== test-image: %s\n' "$*"; }
die() { printf 'test-image: FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs and starts docker)"

# 1. Docker engine and debootstrap.
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/pyexec-dockerd.log)"
  setsid dockerd >/var/log/pyexec-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/pyexec-dockerd.log >&2; die "dockerd did not come up"; }
fi

# 2. Base image stand-ins (reused when their recipe is unchanged).
log "base image stand-ins"
bash "$here/make-standins.sh"

# 3. Build.
log "docker build -t $IMAGE"
build_args=(--network host
  --build-arg "RUST_IMAGE=$RUST_STANDIN"
  --build-arg "RUNTIME_IMAGE=$RUNTIME_STANDIN")
[ "${NO_CACHE:-0}" = 1 ] && build_args+=(--no-cache)
build_log=/tmp/pyexec-test-image-build.log
t0=$(date +%s)
# The web and builder stages get tags of their own so their caches survive
# the pruning below; the later builds reuse them.
{ docker build "${build_args[@]}" --target web -t "$IMAGE-web" "$repo" \
  && docker build "${build_args[@]}" --target builder -t "$IMAGE-builder" "$repo" \
  && docker build "${build_args[@]}" -t "$IMAGE" "$repo"; } > "$build_log" 2>&1 \
  || { tail -40 "$build_log" >&2; die "docker build failed (full log: $build_log)"; }
t1=$(date +%s)
# Superseded images of earlier runs (untagged now); nothing else is touched.
docker image prune -f --filter label=pyexec.stage=builder >/dev/null
docker image prune -f --filter label=org.opencontainers.image.title=pyexec >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "built $IMAGE in $((t1 - t0)) s; image size $((size / 1000000)) MB ($size bytes)"

[ "${BUILD_ONLY:-0}" = 1 ] && exit 0

# 4.-6. Run it with and without the privileges (shared with the cgroup v2 VM).
READY_TIMEOUT=$READY_TIMEOUT bash "$here/check-image.sh" "$IMAGE"

log "PASS ($IMAGE, $((size / 1000000)) MB)"
