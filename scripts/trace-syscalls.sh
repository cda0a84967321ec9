#!/usr/bin/env bash
# trace-syscalls.sh: measure every system call the runtime makes in a job
# process, in both isolation modes, and write python/syscall_trace.json, the
# measured list the job's allow-list (python/syscalls.py) is reviewed against.
#
#   sudo bash scripts/trace-syscalls.sh          # about a minute
#   /opt/pyexec/sandbox-venv/bin/python3 -m unittest python/test_syscalls.py -v
#
# How: worker/examples/run_jobs.rs starts the real runner (spawn mode) and
# the real zygote and its children (fork mode) through the server's own
# launcher, but with `strace -f -X verbose` wrapped around nsjail, so every
# process of the jail is traced from its exec to its end. Each mode runs three jobs:
# hello (the runner's own life: ready frame, one job, output files, exit),
# walk (python/runtime_exercise.py importing every public module of numpy,
# pandas and matplotlib) and smoke (its smoke calls: numpy, pandas,
# matplotlib PNG/SVG/PDF, multiprocessing with every start method, threads,
# fork, subprocess, tempfile, /tmp/outputs, time, signals, sockets, asyncio
# and the stdlib's file, descriptor and process calls).
#
# The jail runs nsjail.cfg as it is, but the job filter is replaced by one
# that allows everything: the trace sees what the runtime would do if
# nothing were refused, and the stand-in's installation still marks the
# seal, which scripts/syscall-trace-summary.py uses to split each process's
# calls into "warm-up" (before) and "job" (after, and every process a sealed
# one started).
#
# When the runtime changes (a new numpy, pandas, matplotlib or Python),
# run this, then the unit test above: it fails naming every traced job call
# the policy refuses. Review each, add it to python/syscalls.py with its
# reason (or explain in that file why it stays refused), and commit both
# files. Environment: NSJAIL, VENV, CFG, RUNNER_DIR (as worker/examples/run_jobs.rs
# reads them), RUN_JOBS (a built run_jobs; default: cargo builds it),
# OUT (default python/syscall_trace.json), KEEP=1 keeps the raw traces.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
NSJAIL=${NSJAIL:-/opt/pyexec/bin/nsjail}
VENV=${VENV:-/opt/pyexec/sandbox-venv}
CFG=$(realpath "${CFG:-$here/nsjail.cfg}")
RUNNER_DIR=$(realpath "${RUNNER_DIR:-$here/python}")
OUT=${OUT:-$here/python/syscall_trace.json}
HOSTPY=/usr/bin/python3

if [ "$(id -u)" -ne 0 ]; then echo "trace-syscalls: run as root" >&2; exit 2; fi
command -v strace >/dev/null || { echo "trace-syscalls: needs strace (apt-get install strace)" >&2; exit 2; }

if [ -z "${RUN_JOBS:-}" ]; then
  (cd "$here" && cargo build -q -p pyexec-worker --features test-support --example run_jobs)
  RUN_JOBS=${CARGO_TARGET_DIR:-$here/target}/debug/examples/run_jobs
fi

WORK=$(mktemp -d /tmp/trace-syscalls.XXXXXX)
chmod 755 "$WORK"   # bind sources must be readable by the jail's uid
cleanup() {
  if [ -n "${KEEP:-}" ]; then echo "trace-syscalls: traces kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The runner, with a job filter that allows everything (see above).
mkdir "$WORK/runner"
cp -r "$RUNNER_DIR"/*.py "$RUNNER_DIR/pyexec_runner" "$WORK/runner/"
cat >> "$WORK/runner/confine.py" <<'EOF'


def install_job_filter():
    """The trace's stand-in: allow everything, but still install a filter."""
    install_program(allow_all_program())
EOF
chmod -R a+rX "$WORK/runner"

# nsjail under strace: one trace file per launch.
cat > "$WORK/nsjail" <<EOF
#!/bin/sh
exec strace -f -qq -X verbose --decode-pids=pidns -s 48 -o "$WORK/trace.\$\$" -- "$NSJAIL" "\$@"
EOF
chmod 755 "$WORK/nsjail"

for mode in spawn fork; do
  for name in hello walk smoke; do
    mkdir -p "$WORK/run.$mode.$name"
  done
  echo 'print("hello")' > "$WORK/run.$mode.hello/job.py"
  { cat "$RUNNER_DIR/runtime_exercise.py"; echo; echo 'print("REPORT", json.dumps(exercise(calls=False)))'; } \
    > "$WORK/run.$mode.walk/job.py"
  { cat "$RUNNER_DIR/runtime_exercise.py"; echo; echo 'print("REPORT", json.dumps(exercise(walk=False)))'; } \
    > "$WORK/run.$mode.smoke/job.py"
done

echo "trace-syscalls: tracing 3 jobs in each mode (strace slows them down; about a minute)"
for mode in spawn fork; do
  NSJAIL="$WORK/nsjail" VENV="$VENV" CFG="$CFG" RUNNER_DIR="$WORK/runner" PYEXEC_TEST_TIME_SCALE=10 \
    "$RUN_JOBS" "$mode" 600 "$WORK/run.$mode.hello" "$WORK/run.$mode.walk" "$WORK/run.$mode.smoke" \
    2>>"$WORK/driver.log" || { echo "trace-syscalls: run_jobs $mode failed:" >&2; tail -5 "$WORK/driver.log" >&2; }
done

# Every job must have answered and every smoke call passed, or the trace is
# of a runtime that did not do its work.
failed=0
for mode in spawn fork; do
  for name in hello walk smoke; do
    r="$WORK/run.$mode.$name"
    if ! "$HOSTPY" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["type"] != "result")' \
         "$r/answer" 2>/dev/null; then
      echo "trace-syscalls: the $mode $name job did not answer:" >&2
      tail -5 "$r/answer" "$r/err" "$r/log" 2>/dev/null >&2; failed=1; continue
    fi
    if [ "$name" != hello ]; then
      grep '^REPORT ' "$r/out" | cut -d' ' -f2- | "$HOSTPY" -c '
import json, sys
report = json.load(sys.stdin)
bad = {k: v for k, v in report.get("smoke", {}).items() if v}
if bad:
    sys.exit("smoke calls failed: %s" % bad)
' || { echo "trace-syscalls: in the $mode $name job" >&2; failed=1; }
    fi
  done
done
[ "$failed" = 0 ] || exit 1

versions=$("$VENV/bin/python3" -c 'import platform, numpy, pandas, matplotlib; print(f"python={platform.python_version()} numpy={numpy.__version__} pandas={pandas.__version__} matplotlib={matplotlib.__version__}")')
"$HOSTPY" "$here/scripts/syscall-trace-summary.py" "$OUT" "$WORK"/trace.* \
  --meta "kernel=$(uname -r)" --meta "runtime=$versions" \
  --meta "glibc=$(ldd --version | head -1 | awk '{print $NF}')" \
  --meta "how=scripts/trace-syscalls.sh: hello, walk and smoke jobs in spawn and fork mode"
echo "trace-syscalls: wrote $OUT"
