#!/usr/bin/env bash
# Schemathesis (installed by scripts/setup.sh) against a live pyexec with the
# real sandbox: every check of the tool (no 5xx; status codes, content types,
# headers and bodies as openapi.json says; schema-violating requests refused,
# valid ones accepted), a bounded number of examples per operation so the run
# stays well under two minutes. Part of `make test`; exits non-zero on any
# finding. Run as root from the repository (the jail needs it).
#
#   SCHEMATHESIS_EXAMPLES  examples per operation (default 1000: about 30 s here)
#   PYEXEC_BIN             the server binary (default: target/debug/pyexec, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

examples=${SCHEMATHESIS_EXAMPLES:-1000}
bin=${PYEXEC_BIN:-target/debug/pyexec}
schemathesis=/opt/pyexec/bin/schemathesis
[ -x "$schemathesis" ] || { echo "schemathesis: $schemathesis missing; run scripts/setup.sh" >&2; exit 1; }
if [ -z "${PYEXEC_BIN:-}" ]; then
  cargo build --locked --quiet -p pyexec-server --bin pyexec
fi

work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A small pool: the run sends a few hundred jobs, two at a time.
PORT=$port PYEXEC_POOL_SIZE=4 PYEXEC_LOG_LEVEL=warn "$bin" >"$work/server.log" 2>&1 &
server=$!
cleanup() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

base="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
  curl -fs "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { echo "schemathesis: pyexec exited:" >&2; cat "$work/server.log" >&2; exit 1; }
  sleep 0.2
done
curl -fs "$base/readyz" >/dev/null || { echo "schemathesis: pyexec never became ready" >&2; cat "$work/server.log" >&2; exit 1; }

started=$(date +%s)
status=0
"$schemathesis" --config-file scripts/schemathesis.toml run openapi.json \
  --url "$base" \
  --checks all \
  --max-examples "$examples" \
  --seed 20261126 \
  --workers 2 \
  --request-timeout 30 \
  --no-color \
  --report junit --report-dir "$work/report" || status=$?
echo "schemathesis: finished in $(( $(date +%s) - started )) s, exit $status"
if [ "$status" -ne 0 ]; then
  echo "--- server log (warnings and errors)" >&2
  tail -50 "$work/server.log" >&2
fi
exit "$status"
