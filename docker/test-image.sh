#!/usr/bin/env bash
# The container image test: builds the top-level Dockerfile, runs the image
# with the documented privileges and checks the API over 127.0.0.1, then runs
# it without them and checks that it refuses to start and says why.
#
# No image registry is reachable from CI, so the base images are local
# stand-ins (docker/make-standins.sh), reused across runs. Containers are
# always removed; images are kept so the next run hits the build cache.
#
#   docker/test-image.sh              (as root, from anywhere)
#   IMAGE=pyexec:test NO_CACHE=1 docker/test-image.sh   (cold build)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
IMAGE=${IMAGE:-pyexec:test}
RUST_STANDIN=pyexec-standin/rust:bookworm
RUNTIME_STANDIN=pyexec-standin/debian:bookworm-slim
READY_TIMEOUT=${READY_TIMEOUT:-60}
# The least privilege the sandbox needs inside Docker (README, "Docker"):
RUN_FLAGS=(--cap-add SYS_ADMIN --security-opt seccomp=unconfined --cgroupns private)

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
# The builder stage gets a tag of its own so its compile cache survives the
# pruning below; the second build reuses it.
{ docker build "${build_args[@]}" --target builder -t "$IMAGE-builder" "$repo" \
  && docker build "${build_args[@]}" -t "$IMAGE" "$repo"; } > "$build_log" 2>&1 \
  || { tail -40 "$build_log" >&2; die "docker build failed (full log: $build_log)"; }
t1=$(date +%s)
# Superseded images of earlier runs (untagged now); nothing else is touched.
docker image prune -f --filter label=pyexec.stage=builder >/dev/null
docker image prune -f --filter label=org.opencontainers.image.title=pyexec >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "built $IMAGE in $((t1 - t0)) s; image size $((size / 1000000)) MB ($size bytes)"

containers=()
cleanup() {
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# 4. With the documented privileges: the API works.
port=$(free_port)
name=pyexec-test-$$-ok
containers+=("$name")
log "docker run ${RUN_FLAGS[*]} --network host -e PORT=$port $IMAGE"
docker run -d --name "$name" --network host "${RUN_FLAGS[@]}" -e PORT="$port" "$IMAGE" >/dev/null

rc=0
python3 "$here/api_checks.py" "http://127.0.0.1:$port" --wait "$READY_TIMEOUT" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "--- container state: $(docker inspect -f '{{.State.Status}} exit={{.State.ExitCode}}' "$name" 2>&1)"
  echo "--- container logs:"
  docker logs "$name" 2>&1 | tail -60
  die "API checks failed against the container"
fi

# The entrypoint used CAP_SYS_ADMIN only to make the cgroup mounts writable;
# pyexec (and every nsjail it starts) must run without it.
capbnd=$(docker exec "$name" sh -c 'for d in /proc/[0-9]*; do
  [ "$(cat "$d/comm" 2>/dev/null)" = pyexec ] && sed -n "s/^CapBnd:[[:space:]]*//p" "$d/status"; done' | head -1)
[ -n "$capbnd" ] || die "could not read pyexec's capabilities in the container"
(( (16#$capbnd >> 21) & 1 )) && die "pyexec runs with CAP_SYS_ADMIN (CapBnd $capbnd)"
echo "ok   pyexec runs without CAP_SYS_ADMIN (CapBnd $capbnd)"

# SIGTERM: the server drains and exits 0 within Cloud Run's 10 s.
t0=$(date +%s%N)
docker stop -t 10 "$name" >/dev/null
t1=$(date +%s%N)
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
echo "docker stop: exit code $code after $(( (t1 - t0) / 1000000 )) ms"
[ "$code" = 0 ] || { docker logs "$name" 2>&1 | tail -20; die "the server did not exit 0 on SIGTERM (exit $code)"; }

# 5. Without the privileges: it must refuse to start and say what is missing.
name=pyexec-test-$$-unprivileged
containers+=("$name")
log "docker run without the privileges (must fail closed)"
out=$(timeout 120 docker run --name "$name" --network host -e PORT="$(free_port)" "$IMAGE" 2>&1) && rc=0 || rc=$?
echo "$out" | tail -15
[ "$rc" -ne 0 ] || die "the image served without the privileges it needs"
[ "$rc" -ne 124 ] || die "the unprivileged container neither served nor exited within 120 s"
echo "$out" | grep -q -e 'SYS_ADMIN' -e 'seccomp' \
  || die "the refusal does not say which docker flags are missing"
echo "exit code $rc, message names the missing privilege"

# 6. With the cgroup privilege but Docker's default seccomp profile (which
#    blocks pivot_root): nsjail cannot build its jail; same refusal.
name=pyexec-test-$$-default-seccomp
containers+=("$name")
log "docker run --cap-add SYS_ADMIN only (must fail closed: no jail under the default seccomp profile)"
out=$(timeout 120 docker run --name "$name" --network host --cap-add SYS_ADMIN --cgroupns private \
        -e PORT="$(free_port)" "$IMAGE" 2>&1) && rc=0 || rc=$?
echo "$out" | grep -E 'pyexec:|Likely fix|pivot_root' | tail -4 | cut -c1-400
[ "$rc" -ne 0 ] || die "the image served although nsjail cannot build its jail"
[ "$rc" -ne 124 ] || die "the container neither served nor exited within 120 s"
echo "$out" | grep -q 'seccomp=unconfined' || die "the refusal does not name --security-opt seccomp=unconfined"
echo "exit code $rc, message names the missing privilege"

log "PASS ($IMAGE, $((size / 1000000)) MB)"
