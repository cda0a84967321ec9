#!/usr/bin/env bash
# bench-syscall-filter.sh: what the job's seccomp filter costs per system
# call, measured inside the real jail in both modes.
#
#   sudo bash scripts/bench-syscall-filter.sh
#   COMPARE="deny-list:/path/to/an/older/confine.py" sudo bash scripts/bench-syscall-filter.sh
#
# One job per mode, started without a job filter of its own (a runner copy
# whose install_job_filter does nothing; nsjail.cfg's policy applies as
# always). It runs a small C program (compiled here with gcc, carried in the
# runner copy the jail sees as /pyexec) that, round after round, forks one
# child per variant: "none" installs nothing, "allow-list" installs
# python/confine.py's job filter, and each COMPARE entry the filter of that
# confine.py. Each child times 200 000 getppid() calls (the cheapest call
# there is, so the filter's share is as large as it gets) and 200 000
# one-byte read()s of /dev/zero, in the CPU time it spent (the time it was
# preempted for other work does not count). Interleaving the variants makes
# them share whatever else the machine is doing; the best of 30 rounds is
# printed, in ns per call. A benchmark prints figures; it checks nothing. Environment:
# NSJAIL, VENV, CFG, RUNNER_DIR, as worker/examples/run_jobs.rs (the driver)
# reads them; RUN_JOBS, a built run_jobs (default: cargo builds it).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
NSJAIL=${NSJAIL:-/opt/pyexec/bin/nsjail}
VENV=${VENV:-/opt/pyexec/sandbox-venv}
CFG=$(realpath "${CFG:-$here/nsjail.cfg}")
RUNNER_DIR=$(realpath "${RUNNER_DIR:-$here/python}")
HOSTPY=/usr/bin/python3
COMPARE=${COMPARE:-}

if [ "$(id -u)" -ne 0 ]; then echo "bench-syscall-filter: run as root" >&2; exit 2; fi
command -v gcc >/dev/null || { echo "bench-syscall-filter: needs gcc" >&2; exit 2; }
if [ -z "${RUN_JOBS:-}" ]; then
  (cd "$here" && cargo build -q -p pyexec-worker --features test-support --example run_jobs)
  RUN_JOBS=${CARGO_TARGET_DIR:-$here/target}/debug/examples/run_jobs
fi
WORK=$(mktemp -d /tmp/bench-syscall-filter.XXXXXX)
chmod 755 "$WORK"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

runner="$WORK/runner"
mkdir -p "$runner/filters"
cp -r "$RUNNER_DIR"/*.py "$RUNNER_DIR/pyexec_runner" "$runner/"
printf '\n\ndef install_job_filter():\n    """The benchmark installs its filters itself."""\n' >> "$runner/confine.py"

# The variants' programs, packed as the kernel takes them.
: > "$runner/filters/none"
variants="none allow-list"
"$HOSTPY" - "$RUNNER_DIR/confine.py" "$runner/filters/allow-list" <<'EOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("variant", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
open(sys.argv[2], "wb").write(module.job_filter_program()[1])
EOF
for entry in $COMPARE; do
  name=${entry%%:*}
  "$HOSTPY" - "${entry#*:}" "$runner/filters/$name" <<'EOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("variant", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
open(sys.argv[2], "wb").write(module.job_filter_program()[1])
EOF
  variants+=" $name"
done

cat > "$WORK/loop.c" <<'EOF'
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CALLS 200000
#define ROUNDS 30

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* In a child: install the filter in `path` (none if empty), time both calls. */
static void measure(const char *path, int out) {
    static struct sock_filter program[4096];
    char byte;
    int fd = open(path, O_RDONLY);
    ssize_t size = read(fd, program, sizeof program);
    close(fd);
    if (size > 0) {
        struct sock_fprog prog = {(unsigned short)(size / sizeof program[0]), program};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
            _exit(2);
    }
    int zero = open("/dev/zero", O_RDONLY);
    double ns[2], started = now();
    for (int i = 0; i < CALLS; i++)
        syscall(SYS_getppid);
    ns[0] = (now() - started) / CALLS;
    started = now();
    for (int i = 0; i < CALLS; i++)
        if (read(zero, &byte, 1) != 1)
            _exit(3);
    ns[1] = (now() - started) / CALLS;
    _exit(write(out, ns, sizeof ns) == sizeof ns ? 0 : 4);
}

int main(int argc, char **argv) {
    int variants = argc - 1;
    double best[64][2];
    for (int v = 0; v < variants; v++)
        best[v][0] = best[v][1] = 1e18;
    for (int round = 0; round < ROUNDS; round++) {
        for (int v = 0; v < variants; v++) {
            int pipefd[2];
            double ns[2];
            if (pipe(pipefd) != 0)
                return 1;
            pid_t pid = fork();
            if (pid == 0)
                measure(argv[v + 1], pipefd[1]);
            close(pipefd[1]);
            if (read(pipefd[0], ns, sizeof ns) != sizeof ns)
                return 1;
            close(pipefd[0]);
            waitpid(pid, NULL, 0);
            for (int k = 0; k < 2; k++)
                if (ns[k] < best[v][k])
                    best[v][k] = ns[k];
        }
    }
    for (int v = 0; v < variants; v++)
        printf("NS %s %.1f %.1f\n", argv[v + 1], best[v][0], best[v][1]);
    return 0;
}
EOF
gcc -O2 -o "$runner/syscall-loop" "$WORK/loop.c"
chmod -R a+rX "$runner"

args=$(for v in $variants; do printf '"/pyexec/filters/%s", ' "$v"; done)
for mode in spawn fork; do
  mkdir -p "$WORK/run.$mode.bench"
  printf 'import subprocess\nprint(subprocess.run(["/pyexec/syscall-loop", %s], capture_output=True, text=True, timeout=250).stdout)\n' \
    "$args" > "$WORK/run.$mode.bench/job.py"
done
for mode in spawn fork; do
  NSJAIL="$NSJAIL" VENV="$VENV" CFG="$CFG" RUNNER_DIR="$runner" \
    "$RUN_JOBS" "$mode" 300 "$WORK/run.$mode.bench" 2>>"$WORK/driver.log" ||
    { echo "bench-syscall-filter: run_jobs $mode failed:" >&2; tail -5 "$WORK/driver.log" >&2; }
done

echo "CPU ns per call, best of 30 interleaved rounds of 200 000 calls (from C, in the jail):"
printf '%-6s %-12s %10s %10s\n' mode filter getppid read
for mode in spawn fork; do
  for v in $variants; do
    set -- $(awk -v v="/pyexec/filters/$v" '$1 == "NS" && $2 == v { print $3, $4 }' \
               "$WORK/run.$mode.bench/out" 2>/dev/null) "?" "?"
    printf '%-6s %-12s %10s %10s\n' "$mode" "$v" "$1" "$2"
  done
done
