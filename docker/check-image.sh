#!/usr/bin/env bash
# Checks a built pyexec image against a running Docker engine: runs it with
# the documented privileges and checks the API over 127.0.0.1, then runs it
# without them and checks that it refuses to start and says why.
#
# Shared by docker/test-image.sh (on the host, after it builds the image) and
# scripts/vm-guest.sh (inside the cgroup v2 VM, after `docker load`), so the
# same checks run on cgroup v1 and on v2. Containers are always removed.
#
#   docker/check-image.sh [IMAGE]      (as root; IMAGE defaults to pyexec:test)
#
# READY_TIMEOUT (seconds, default 60) bounds the wait for /readyz; STOP_TIMEOUT
# (default 10, Cloud Run's) the wait for `docker stop`. SERVER_ENV: extra
# NAME=value settings for the served container (the VM stretches the server's
# spawn and queue timeouts: its CPU is emulated).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
IMAGE=${1:-${IMAGE:-pyexec:test}}
READY_TIMEOUT=${READY_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}
# The least privilege the sandbox needs inside Docker (docs/operations.md, "Docker"):
RUN_FLAGS=(--cap-add SYS_ADMIN --security-opt seccomp=unconfined --cgroupns private)
SERVER_ENV=(${SERVER_ENV:-})

log() { printf '\n=== check-image: %s\n' "$*"; }
die() { printf 'check-image: FAIL: %s\n' "$*" >&2; exit 1; }

docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE"

containers=()
cleanup() {
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# 1. With the documented privileges: the API works.
port=$(free_port)
name=pyexec-test-$$-ok
containers+=("$name")
log "docker run ${RUN_FLAGS[*]} --network host -e PORT=$port $IMAGE"
docker run -d --name "$name" --network host "${RUN_FLAGS[@]}" -e PORT="$port" \
  "${SERVER_ENV[@]/#/--env=}" "$IMAGE" >/dev/null

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
  if [ "$(cat "$d/comm" 2>/dev/null)" = pyexec ]; then sed -n "s/^CapBnd:[[:space:]]*//p" "$d/status"; fi
  done' | head -1)
[ -n "$capbnd" ] || die "could not read pyexec's capabilities in the container"
(( (16#$capbnd >> 21) & 1 )) && die "pyexec runs with CAP_SYS_ADMIN (CapBnd $capbnd)"
echo "ok   pyexec runs without CAP_SYS_ADMIN (CapBnd $capbnd)"

# On a cgroup v2 host the container's cgroup (its own root, --cgroupns
# private) held tini and pyexec when pyexec started: pyexec must have moved
# them into a leaf of their own, then delegated the controllers to its
# workers ("no internal processes"; worker/src/cgroup.rs).
if docker exec "$name" test -f /sys/fs/cgroup/cgroup.controllers; then
  v2=$(docker exec "$name" sh -c 'cd /sys/fs/cgroup
    echo "root procs: $(cat cgroup.procs | wc -l)"
    echo "root subtree_control: $(cat cgroup.subtree_control)"
    for d in */; do if [ -f "$d/cgroup.procs" ]; then echo "${d%/} procs: $(cat "$d/cgroup.procs" | wc -l)"; fi; done
    for d in /proc/[0-9]*; do
      if [ "$(cat "$d/comm" 2>/dev/null)" = pyexec ]; then echo "pyexec in: $(cat "$d/cgroup")"; fi
    done')
  echo "$v2" | sed 's/^/     /'
  echo "$v2" | grep -qx 'root procs: 0' || die "cgroup v2: processes left in the container's root cgroup"
  for c in memory pids cpu; do
    echo "$v2" | grep '^root subtree_control:' | grep -qw "$c" \
      || die "cgroup v2: the $c controller is not delegated below the container's root"
  done
  echo "$v2" | grep -qx 'pyexec in: 0::/pyexec-server' || die "cgroup v2: pyexec is not in its own leaf"
  echo "ok   cgroup v2: pyexec moved the container's processes out of its root and delegated memory, pids, cpu"
fi

# SIGTERM: the server drains and exits 0 within Cloud Run's 10 s.
t0=$(date +%s%N)
docker stop -t "$STOP_TIMEOUT" "$name" >/dev/null
t1=$(date +%s%N)
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
echo "docker stop: exit code $code after $(( (t1 - t0) / 1000000 )) ms"
[ "$code" = 0 ] || { docker logs "$name" 2>&1 | tail -20; die "the server did not exit 0 on SIGTERM (exit $code)"; }

# 2. Without the privileges: it must refuse to start and say what is missing.
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

# 3. With the cgroup privilege but Docker's default seccomp profile (which
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

log "PASS ($IMAGE)"
