#!/usr/bin/env bash
# Tries docker-run privilege combinations on an image that has nsjail at
# /opt/pyexec/bin/nsjail and prints what each allows (docker/probe-inside.sh):
# nsjail with all namespaces, and a writable cgroup subtree. The evidence
# behind the run flags documented in docs/operations.md.
#   docker/probe-privileges.sh [IMAGE]      (default pyexec:test, built by docker/test-image.sh)
set -uo pipefail
image=${1:-pyexec:test}
here=$(cd "$(dirname "$0")" && pwd)
cfg=$(cd "$here/.." && pwd)/nsjail.cfg
combos=(
  ""
  "--security-opt seccomp=unconfined"
  "--cap-add SYS_ADMIN"
  "--cap-add SYS_ADMIN --security-opt seccomp=unconfined"
  "--cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined"
  "--cap-add SYS_ADMIN --security-opt seccomp=unconfined --cgroupns private"
  "--cap-add SYS_ADMIN --cgroupns private"
  "--security-opt seccomp=unconfined -v /sys/fs/cgroup:/sys/fs/cgroup:rw"
  "--cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt systempaths=unconfined"
)
for flags in "${combos[@]}"; do
  echo "=== docker run ${flags:-(no extra flags)}"
  # shellcheck disable=SC2086
  docker run --rm --network host $flags \
    -v "$here/probe-inside.sh:/probe/probe-inside.sh:ro" \
    -v "$cfg:/probe/nsjail.cfg:ro" \
    --entrypoint /bin/sh "$image" /probe/probe-inside.sh 2>&1 | sed 's/^/    /'
done
