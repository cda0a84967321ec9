#!/usr/bin/env bash
# probe-jail.sh: exercise nsjail.cfg for real and print PASS/FAIL per check.
#
# Run as root on a pyexec machine (Debian 12; cgroup v1, or v2 as in the VM of
# scripts/vm-test.sh). Exits non-zero if any check FAILs. INFO lines are
# measurements, not checks.
#
# Every jail is started the way the server starts it:
#   nsjail --config nsjail.cfg --bindmount_ro $VENV --bindmount_ro $DIR:/pyexec \
#     --rlimit_fsize 10 --rlimit_nofile 128 --rlimit_cpu 30 \
#     -- $VENV/bin/python3 -I -X utf8 -B -u /pyexec/runner.py
# with fd 3 = a unix socket (the probe sends the job's code over it), fd 4/5 =
# pipes (job stdout/stderr), stdin/stdout = /dev/null, stderr = a pipe holding
# nsjail's log. /pyexec/runner.py is a small stand-in for the real runner: it
# reads the code from fd 3 and exec()s it in __main__ with stdout/stderr on 4/5.
#
# Environment overrides: NSJAIL, VENV, CFG; PROBE_SPAWNS (how many jails the
# spawn-time measurement starts, default 10).
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
NSJAIL=${NSJAIL:-/opt/pyexec/bin/nsjail}
VENV=${VENV:-/opt/pyexec/sandbox-venv}
CFG=${CFG:-$here/nsjail.cfg}
HOSTPY=/usr/bin/python3   # runs the launcher on the host side

if [ "$(id -u)" -ne 0 ]; then echo "probe-jail: run as root" >&2; exit 2; fi
for f in "$NSJAIL" "$VENV/bin/python3" "$CFG" "$HOSTPY"; do
  [ -e "$f" ] || { echo "probe-jail: missing $f" >&2; exit 2; }
done

fails=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; fails=$((fails + 1)); }
info() { printf 'INFO  %s\n' "$*"; }
check() { # check "description" cmd...  (PASS if cmd succeeds)
  local d=$1; shift
  if "$@"; then pass "$d"; else fail "$d"; fi
}

# ---------------------------------------------------------------- clean-up
WORK=$(mktemp -d /tmp/probe-jail.XXXXXX)
chmod 755 "$WORK"          # the jail's uid (outside 65534) must read the bind source
CG_NAME="probe-$$"
CG_CTLS=(memory pids cpu)
# The cgroups the server would make (worker/src/cgroup.rs): on v1 one per
# controller, /sys/fs/cgroup/<controller>/pyexec/<name>; on v2 (a single
# hierarchy) one, /sys/fs/cgroup/pyexec/<name>.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  CG_V2=1; CG_BASES=(/sys/fs/cgroup)
else
  CG_V2=0; CG_BASES=("${CG_CTLS[@]/#//sys/fs/cgroup/}")
fi
made_parent=()
cleanup() {
  local c d
  for c in "${CG_BASES[@]}"; do
    d=$c/pyexec/$CG_NAME
    if [ -d "$d" ]; then
      # anything left (it should not be) is killed before rmdir
      for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
      for _ in $(seq 50); do rmdir "$d" 2>/dev/null && break; sleep 0.1; done
    fi
  done
  for d in "${made_parent[@]}"; do rmdir "$d" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
[ -n "${PROBE_KEEP:-}" ] && trap - EXIT   # debugging: keep $WORK and the cgroups
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- stand-in runner
mkdir "$WORK/pyexec"
cat > "$WORK/pyexec/runner.py" <<'EOF'
# Stand-in for the real runner: read the job from fd 3, run it in __main__
# (so multiprocessing can pickle its functions), stdout/stderr on fds 4/5.
import os, socket, sys
sock = socket.socket(fileno=3)
buf = b""
while True:
    chunk = sock.recv(65536)
    if not chunk:
        break
    buf += chunk
sys.stdout = os.fdopen(4, "w", buffering=1, closefd=False)
sys.stderr = os.fdopen(5, "w", buffering=1, closefd=False)
main = sys.modules["__main__"]
exec(compile(buf.decode(), "<job>", "exec"), main.__dict__)
EOF
chmod 755 "$WORK/pyexec"; chmod 644 "$WORK/pyexec/runner.py"

# ---------------------------------------------------------------- launcher
# launch.py OUTDIR JOBFILE [--timeout S] [--cgroups DIR,DIR] [--kill-after S]
#           [--child-uid] [-- extra nsjail flags]
# Forks "sh -c 'echo $$ > cgroup.procs...; exec nsjail ...'" with fds 0-5 set up
# as the server does, sends the job over fd 3, collects fd 4/5 and the log.
# Writes OUTDIR/{out,err,log,rc,first_ms,total_ms,max_pids,empty_ms,child_uid}.
cat > "$WORK/launch.py" <<'EOF'
import os, select, signal, socket, sys, time
outdir, jobfile = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
opts = {"timeout": 60.0, "cgroups": "", "kill_after": None, "child_uid": False, "kill_child": False,
        "subreaper": False, "sig": signal.SIGKILL}
extra = []
while args:
    a = args.pop(0)
    if a == "--":
        extra = args; break
    elif a == "--timeout": opts["timeout"] = float(args.pop(0))
    elif a == "--cgroups": opts["cgroups"] = args.pop(0)
    elif a == "--kill-after": opts["kill_after"] = float(args.pop(0))
    elif a == "--child-uid": opts["child_uid"] = True
    elif a == "--kill-child": opts["kill_child"] = True
    elif a == "--subreaper": opts["subreaper"] = True   # reap orphans like a PR_SET_CHILD_SUBREAPER server
    elif a == "--signal": opts["sig"] = int(args.pop(0))  # what --kill-after sends to nsjail
    else: sys.exit("launch.py: bad arg " + a)
NSJAIL, CFG, VENV, PYEXEC = (os.environ[k] for k in ("NSJAIL", "CFG", "VENV", "PYEXEC_DIR"))
cgs = [c for c in opts["cgroups"].split(",") if c]
nsjail_cmd = [NSJAIL, "--config", CFG,
              "--bindmount_ro", VENV,
              "--bindmount_ro", PYEXEC + ":/pyexec",
              "--rlimit_fsize", "10", "--rlimit_nofile", "128", "--rlimit_cpu", "30",
              *extra,
              "--", VENV + "/bin/python3", "-I", "-X", "utf8", "-B", "-u", "/pyexec/runner.py"]
script = "".join('echo $$ > "%s/cgroup.procs" || exit 99; ' % c for c in cgs) + 'exec "$@"'
cmd = ["/bin/sh", "-c", script, "sh", *nsjail_cmd]

if opts["subreaper"]:
    import ctypes
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER
srv, cli = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
r4, w4 = os.pipe(); r5, w5 = os.pipe(); rlog, wlog = os.pipe()
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        devnull = os.open("/dev/null", os.O_RDWR)
        # park the fds high first so the dup2 onto 0-5 cannot clobber them
        hi = []
        for i, fd in enumerate((cli.fileno(), w4, w5, wlog, devnull)):
            os.dup2(fd, 200 + i); hi.append(200 + i)
        os.dup2(hi[4], 0); os.dup2(hi[4], 1); os.dup2(hi[3], 2)
        os.dup2(hi[0], 3); os.dup2(hi[1], 4); os.dup2(hi[2], 5)
        os.closerange(6, 4096)
        os.execv(cmd[0], cmd)
    finally:
        os._exit(127)
cli.close(); os.close(w4); os.close(w5); os.close(wlog)
srv.sendall(open(jobfile, "rb").read()); srv.shutdown(socket.SHUT_WR)

bufs = {r4: b"", r5: b"", rlog: b""}
open_fds = [r4, r5, rlog]
first_ms = None; max_pids = 0; killed = False; child_uid = ""; kill_t = None
pids_file = next((c + "/pids.current" for c in cgs if os.path.exists(c + "/pids.current")), None)
deadline = t0 + opts["timeout"]
while open_fds:
    now = time.monotonic()
    if now > deadline and not killed:
        os.kill(pid, signal.SIGKILL); killed = True; kill_t = now
    if killed and now - kill_t > 40:
        break                      # something in the jail still holds the pipes
    if opts["kill_after"] is not None and not killed and now - t0 > opts["kill_after"]:
        os.kill(pid, opts["sig"]); killed = True; kill_t = now
    r, _, _ = select.select(open_fds, [], [], 0.02)
    for fd in r:
        d = os.read(fd, 65536)
        if not d:
            open_fds.remove(fd); continue
        if fd == r4 and first_ms is None:
            first_ms = (time.monotonic() - t0) * 1000
            try:   # the jailed python is nsjail's only child
                kid = int(open("/proc/%d/task/%d/children" % (pid, pid)).read().split()[0])
            except Exception:
                kid = None
            if opts["child_uid"] and kid:
                st = open("/proc/%d/status" % kid).read()
                child_uid = " | ".join(" ".join(l.split()) for l in st.splitlines()
                                       if l.startswith(("Uid:", "Gid:")))
            if opts["kill_child"] and kid:
                os.kill(kid, signal.SIGKILL)   # from outside the pid namespace
        bufs[fd] += d
    if pids_file:
        try: max_pids = max(max_pids, int(open(pids_file).read()))
        except Exception: pass
_, status = os.waitpid(pid, 0)
total_ms = (time.monotonic() - t0) * 1000
rc = os.waitstatus_to_exitcode(status)
empty_ms = ""
if killed and opts["kill_after"] is not None and cgs:
    # how long until every process of the cgroup is gone
    def empty():
        if opts["subreaper"]:
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0: pass
            except ChildProcessError:
                pass
        if any(open(c + "/cgroup.procs").read().strip() for c in cgs):
            return False
        return not pids_file or open(pids_file).read().strip() == "0"
    while time.monotonic() - kill_t < 10:
        if empty():
            empty_ms = "%.1f" % ((time.monotonic() - kill_t) * 1000); break
        time.sleep(0.005)
    else:
        empty_ms = "never"
for name, val in (("out", bufs[r4]), ("err", bufs[r5]), ("log", bufs[rlog])):
    open(os.path.join(outdir, name), "wb").write(val)
for name, val in (("rc", rc), ("first_ms", "" if first_ms is None else "%.1f" % first_ms),
                  ("total_ms", "%.1f" % total_ms), ("max_pids", max_pids),
                  ("empty_ms", empty_ms), ("child_uid", child_uid)):
    open(os.path.join(outdir, name), "w").write(str(val))
EOF

export NSJAIL CFG VENV PYEXEC_DIR="$WORK/pyexec"
R=""   # result dir of the last run
run_job() { # run_job NAME [launcher opts...] <<< job code
  R="$WORK/run.$1"; mkdir -p "$R"; shift
  cat > "$R/job.py"
  "$HOSTPY" "$WORK/launch.py" "$R" "$R/job.py" "$@"
}
rc()  { cat "$R/rc"; }
out() { cat "$R/out"; }
has() { grep -qE -- "$1" "$R/out"; }          # job stdout contains regex
loghas() { grep -qE -- "$1" "$R/log"; }      # nsjail log contains regex
show_failure() { # print context when a run did not go as expected
  sed 's/^/      out| /' "$R/out" | head -20
  sed 's/^/      err| /' "$R/err" | tail -8
  grep -vE 'Mount: |Symlink: |map: |Jail parameters' "$R/log" | sed 's/^/      log| /' | tail -8
}

echo "== probe-jail: $CFG with $NSJAIL"

# ================================================================ 1. basics
run_job basic --child-uid <<'EOF'
import os, sys
import stat
kinds = []
for fd in range(0, 6):
    m = os.fstat(fd).st_mode
    kinds.append("sock" if stat.S_ISSOCK(m) else "fifo" if stat.S_ISFIFO(m) else "chr" if stat.S_ISCHR(m) else "other")
print("FDS", " ".join(kinds))
extra = []
for fd in range(6, 128):
    try:
        os.fstat(fd); extra.append(fd)
    except OSError:
        pass
print("EXTRAFDS", extra)
print("PYTHON", sys.version.split()[0], sys.executable, sys.prefix)
print("IDS", os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups()))
print("PID", os.getpid())
print("HOST", os.uname().nodename)
print("CWD", os.getcwd())
import numpy as np, pandas as pd
a = np.arange(90000, dtype=float).reshape(300, 300)
print("MATMUL", float((a @ a.T).trace()) > 0)
df = pd.DataFrame({"k": ["a", "b", "a", "c"] * 250, "v": range(1000)})
g = df.groupby("k")["v"].sum().to_dict()
print("GROUPBY", g == {"a": sum(range(0, 1000, 4)) + sum(range(2, 1000, 4)), "b": sum(range(1, 1000, 4)), "c": sum(range(3, 1000, 4))})
print("TZ", pd.Timestamp("2024-06-01 12:00", tz="Europe/Paris").tz_convert("UTC").hour == 10)
import multiprocessing, math
with multiprocessing.Pool(2) as p:
    print("POOL", p.map(math.factorial, range(6)) == [1, 1, 2, 6, 24, 120])
def sq(x):
    return x * x
with multiprocessing.Pool(2) as p:
    print("POOLFN", p.map(sq, range(5)) == [0, 1, 4, 9, 16])
import threading
t = threading.Thread(target=lambda: None); t.start(); t.join()
print("THREAD", True)
print("CPUS", os.cpu_count())
print("ENV", sorted(os.environ))
import resource
print("RLIMITS", {n: resource.getrlimit(getattr(resource, "RLIMIT_" + n)) for n in ("FSIZE", "NOFILE", "CPU", "AS", "CORE", "STACK")})
for p in ("/proc", "/sys", "/etc", "/root", "/home", "/bin", "/usr/bin/sh", "/usr/bin/env"):
    print("EXISTS", p, os.path.exists(p))
print("DEV", sorted(os.listdir("/dev")))
import time; time.sleep(0.5)
EOF
if [ "$(rc)" = 0 ] && has '^PYTHON 3\.11'; then pass "python starts in the jail ($(grep ^PYTHON "$R/out" | cut -d' ' -f2-))"; else fail "python starts in the jail (rc=$(rc))"; show_failure; fi
check "numpy matmul works" has '^MATMUL True'
check "pandas groupby works" has '^GROUPBY True'
check "pandas tz_convert works (zoneinfo/tzdata)" has '^TZ True'
check "multiprocessing.Pool(2).map works (builtin fn)" has '^POOL True'
check "multiprocessing.Pool(2).map works (fn defined by the job)" has '^POOLFN True'
check "threads work (clone3 -> ENOSYS falls back to clone)" has '^THREAD True'
check "uid/gid inside are 1000/1000, no supplementary groups" has '^IDS 1000 1000 1000 1000 \[(1000)?\]'
cu=$(cat "$R/child_uid")
if echo "$cu" | grep -qE '^Uid: 65534 65534 65534 65534 \| Gid: 65534 65534 65534 65534$'; then pass "jailed process is uid/gid 65534 on the host"; else fail "jailed process is uid/gid 65534 on the host ($cu)"; fi
info "job is $(grep ^PID "$R/out") inside its pid namespace (python is the namespace's init)"
check "hostname is pyexec" has '^HOST pyexec$'
check "cwd is /tmp" has '^CWD /tmp$'
check "env has only the listed variables" has "^ENV \['HOME', 'LANG', 'MKL_NUM_THREADS', 'MPLCONFIGDIR', 'NUMEXPR_NUM_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'PATH', 'TZ'\]$"
check "fd 0,1 /dev/null, fd 2 pipe, fd 3 socket, fd 4/5 pipes" has '^FDS chr chr fifo sock fifo fifo$'
check "no other fd leaks into the jail" has '^EXTRAFDS \[\]$'
check "command-line --rlimit_* override the cfg (fsize 10M, nofile 128, cpu 30)" \
  has "'FSIZE': \(10485760, 10485760\), 'NOFILE': \(128, 128\), 'CPU': \(30, 30\)"
check "rlimit core 0, as 1 GiB, stack 8 MiB" has "'AS': \(1073741824, 1073741824\), 'CORE': \(0, 0\), 'STACK': \(8388608, 8388608\)"
check "/proc is absent" has '^EXISTS /proc False'
check "/sys, /etc, /root, /home are absent" bash -c "grep -qE '^EXISTS /sys False' $R/out && grep -qE '^EXISTS /etc False' $R/out && grep -qE '^EXISTS /root False' $R/out && grep -qE '^EXISTS /home False' $R/out"
check "no shell or tools (/bin, /usr/bin/sh, /usr/bin/env absent)" bash -c "grep -qE '^EXISTS /bin False' $R/out && grep -qE '^EXISTS /usr/bin/sh False' $R/out && grep -qE '^EXISTS /usr/bin/env False' $R/out"
check "/dev holds only null, random, shm, urandom, zero" has "^DEV \['null', 'random', 'shm', 'urandom', 'zero'\]$"
info "os.cpu_count() in the jail: $(grep ^CPUS "$R/out" | cut -d' ' -f2)"
check "nsjail log has the exit line" loghas '^\[I\]\[[^]]+\] pid=[0-9]+ \(\[STANDALONE MODE\]\) exited with status: 0, \(PIDs left: 0\)$'

# ================================================================ 2. network
run_job net <<'EOF'
import socket, errno
for host in ("127.0.0.1", "8.8.8.8"):
    try:
        socket.create_connection((host, 53), timeout=2).close()
        print("CONNECT", host, "OK")
    except OSError as e:
        print("CONNECT", host, "FAIL", errno.errorcode.get(e.errno, e.errno))
try:
    socket.getaddrinfo("example.com", 80); print("DNS OK")
except OSError as e:
    print("DNS FAIL", e)
print("IFACES", socket.if_nameindex())
EOF
check "connect to 127.0.0.1 fails ($(grep 'CONNECT 127' "$R/out" | cut -d' ' -f3-))" has '^CONNECT 127.0.0.1 FAIL'
check "connect to 8.8.8.8 fails ($(grep 'CONNECT 8' "$R/out" | cut -d' ' -f3-))" has '^CONNECT 8.8.8.8 FAIL'
check "DNS resolution fails" has '^DNS FAIL'
check "only a (down) lo interface exists" has "^IFACES \[\(1, 'lo'\)\]$"

# ================================================================ 3. filesystem
run_job fs <<'EOF'
import errno, os
def try_write(path, size=10):
    try:
        with open(path, "wb") as f:
            f.write(b"x" * size)
        return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
for p in ("/x", "/usr/x", "/usr/lib/python3.11/x", "/opt/x", "/opt/pyexec/sandbox-venv/x",
          "/opt/pyexec/sandbox-venv/lib/python3.11/site-packages/x", "/pyexec/x", "/dev/x", "/tmp/x", "/dev/shm/x"):
    print("WRITE", p, try_write(p))
print("WRITE devnull", try_write("/dev/null"))
try:
    os.mkdir("/newdir"); print("MKDIR / OK")
except OSError as e:
    print("MKDIR /", errno.errorcode[e.errno])
print("BIG", try_write("/tmp/big", 11 * 1024 * 1024))
print("BIGSIZE", os.path.getsize("/tmp/big"))
# fill /tmp (64 MiB cap) with files under the 10 MiB fsize limit
res = "OK"
for i in range(8):
    r = try_write("/tmp/fill%d" % i, 9 * 1024 * 1024)
    if r != "OK":
        res = "%s at file %d" % (r, i); break
print("FILLTMP", res)
# exec of a file written to /tmp (noexec)
for i in range(8):
    try: os.unlink("/tmp/fill%d" % i)
    except OSError: pass
with open("/tmp/t.sh", "w") as f: f.write("#!/usr/bin/python3.11\n")
os.chmod("/tmp/t.sh", 0o755)
try:
    os.execv("/tmp/t.sh", ["/tmp/t.sh"])
except OSError as e:
    print("EXECTMP", errno.errorcode[e.errno])
EOF
for p in / /usr /usr/lib/python3.11 /opt /opt/pyexec/sandbox-venv /opt/pyexec/sandbox-venv/lib/python3.11/site-packages /pyexec /dev; do
  q=$p; [ "$p" = / ] && q=""
  r=$(grep -E "^WRITE $q/x " "$R/out" | awk '{print $3}')
  if [ -n "$r" ] && [ "$r" != OK ]; then pass "write to $p fails ($r)"; else fail "write to $p fails (got '${r:-nothing}')"; fi
done
check "mkdir in / fails" has '^MKDIR / E'
check "write to /tmp works" has '^WRITE /tmp/x OK'
check "write to /dev/shm works" has '^WRITE /dev/shm/x OK'
check "write to /dev/null works" has '^WRITE devnull OK'
check "an 11 MiB file write fails with EFBIG (file stops at 10 MiB)" bash -c "grep -q '^BIG EFBIG' $R/out && grep -q '^BIGSIZE 10485760' $R/out"
check "/tmp is capped (ENOSPC before 64 MiB)" has '^FILLTMP ENOSPC'
check "exec from /tmp is refused (noexec)" has '^EXECTMP EACCES'

# ================================================================ 4. seccomp
cat > "$WORK/seccomp_job.py" <<'EOF'
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
# x86_64 syscall numbers; arguments chosen to be harmless if allowed
calls = {
    "ptrace": (101, 0x10, 1, 0, 0),            # PTRACE_ATTACH pid 1
    "process_vm_readv": (310, 1, 0, 0, 0, 0, 0),
    "pidfd_getfd": (438, 0, 0, 0),
    "kcmp": (312, 1, 1, 0, 0, 0),
    "perf_event_open": (298, 0, 0, -1, -1, 0),
    "bpf": (321, 0, 0, 0),
    "userfaultfd": (323, 0),
    "keyctl": (250, 0, 0),
    "add_key": (248, 0, 0, 0, 0, 0),
    "mount": (165, 0, 0, 0, 0, 0),
    "umount2": (166, 0, 0),
    "fsopen": (430, 0, 0),
    "open_tree": (428, -100, 0, 0),
    "pivot_root": (155, 0, 0),
    "chroot": (161, 0),
    "setns": (308, -1, 0),
    "finit_module": (313, -1, 0, 0),
    "kexec_load": (246, 0, 0, 0, 0),
    "open_by_handle_at": (304, -1, 0, 0),
    "io_uring_setup": (425, 1, 0),
    "personality(ADDR_NO_RANDOMIZE)": (135, 0x0040000),
    "clone(CLONE_NEWUSER)": (56, 0x10000000 | 17, 0, 0, 0, 0),
    "clone3": (435, 0, 0),
    # last: in the control run (no filter) this succeeds and moves the job
    # into a new user namespace, which would change the later results
    "unshare": (272, 0x10000000),              # CLONE_NEWUSER
}
for name, (nr, *args) in calls.items():
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r == 0 and name.startswith("clone"):
        os._exit(0)          # in case the clone was allowed: the child leaves now
    e = ctypes.get_errno()
    print("SYSCALL", name, "ret=%d" % r, errno.errorcode.get(e, e) if r == -1 else "-")
print("PERSONA_QUERY", libc.syscall(ctypes.c_long(135), ctypes.c_long(0xffffffff)))
EOF
run_job seccomp < "$WORK/seccomp_job.py"
cp "$R/out" "$WORK/seccomp.with"
# (a command-line --seccomp_string is APPENDED to the cfg's policy, so the
# control run uses a copy of the cfg without the seccomp_string lines)
grep -v '^seccomp_string:' "$CFG" > "$WORK/noseccomp.cfg"
CFG=$WORK/noseccomp.cfg run_job seccomp_off < "$WORK/seccomp_job.py"
cp "$R/out" "$WORK/seccomp.without"
while read -r _ name _ e; do
  ctl=$(grep -F "SYSCALL $name " "$WORK/seccomp.without" | awk '{print $4}')
  want=EPERM; [ "$name" = clone3 ] && want=ENOSYS
  if [ "$e" = "$want" ]; then pass "seccomp: $name -> $e (without the filter: ${ctl:-?})"; else fail "seccomp: $name -> $e, want $want"; fi
done < <(grep '^SYSCALL' "$WORK/seccomp.with")
[ "$(grep -c '^SYSCALL' "$WORK/seccomp.with")" -ge 24 ] || { fail "seccomp job ran all calls"; R=$WORK/run.seccomp; show_failure; }
check "personality(0xffffffff) query still allowed" grep -q '^PERSONA_QUERY 0$' "$WORK/seccomp.with"

# ================================================================ 5. log lines
run_job logkill --kill-child <<'EOF'
import time
print("ready")
time.sleep(10)
EOF
info "job SIGKILLed from outside: rc=$(rc), log: $(grep -oE 'pid=.*' "$R/log" | tail -1)"
check "SIGKILL of the job: rc 137 and 'terminated with signal: SIGKILL (9)'" \
  bash -c "[ $(rc) = 137 ] && grep -qE 'pid=[0-9]+ \(\[STANDALONE MODE\]\) terminated with signal: SIGKILL \(9\), \(PIDs left: 0\)' $R/log"
run_job logcpu -- --rlimit_cpu 1 <<'EOF'
while True: pass
EOF
info "rlimit_cpu exhausted: rc=$(rc), log: $(grep -oE 'pid=.*' "$R/log" | tail -1)"
check "rlimit_cpu (backstop) kills the job (soft=hard, so SIGKILL, not SIGXCPU)" bash -c "[ $(rc) = 137 ]"
run_job logsetup -- --bindmount_ro /nonexistent-probe-path:/nowhere <<'EOF'
print("should not run")
EOF
info "setup failure: rc=$(rc), log: $(grep -E '^\[[EF]\]' "$R/log" | sed 's/\[[0-9T:+-]*\]//' | tr '\n' ' ')"
check "setup failure: rc 255 and 'Couldn't launch the child process'" bash -c "[ $(rc) = 255 ] && grep -q \"Couldn't launch the child process\" $R/log"

# ================================================================ 6. cgroups
cg_dirs=()
if [ "$CG_V2" = 1 ]; then
  # The controllers must be enabled for the children of the root and of
  # pyexec/ ("no internal processes": neither may hold a process).
  for d in /sys/fs/cgroup /sys/fs/cgroup/pyexec; do
    if [ ! -d "$d" ]; then mkdir "$d" && made_parent+=("$d"); fi
    echo "+memory +pids +cpu" > "$d/cgroup.subtree_control" \
      || fail "enable memory, pids, cpu in $d/cgroup.subtree_control"
  done
  mkdir "/sys/fs/cgroup/pyexec/$CG_NAME" && cg_dirs+=("/sys/fs/cgroup/pyexec/$CG_NAME")
  MEM=/sys/fs/cgroup/pyexec/$CG_NAME PIDS=$MEM CPU=$MEM
  echo $((256 * 1024 * 1024)) > "$MEM/memory.max"
  [ -f "$MEM/memory.swap.max" ] && echo 0 > "$MEM/memory.swap.max"
  echo 129 > "$PIDS/pids.max"        # 1 for nsjail itself + 128 for the job
  echo "100000 100000" > "$CPU/cpu.max"
  # v2 counters: memory.events (oom_kill; max = times the limit was hit),
  # memory.peak (since the cgroup was made: it cannot be reset on 6.1).
  events() { awk -v k="$1" '$1 == k { print $2 }' "$MEM/memory.events"; }
  oom_kills() { events oom_kill; }
  limit_hits() { events max; }
  peak_bytes() { cat "$MEM/memory.peak" 2>/dev/null || echo 0; }
  memstat() { printf 'memory.events: %s; peak=%s limit=%s' "$(tr '\n' ' ' < "$MEM/memory.events")" \
    "$(peak_bytes)" "$(cat "$MEM/memory.max")"; }
  memreset() { echo 0 > "$MEM/memory.peak" 2>/dev/null || true; }
else
  for c in "${CG_CTLS[@]}"; do
    base=/sys/fs/cgroup/$c
    [ -d "$base" ] || { fail "cgroup v1 controller $c mounted at $base"; continue; }
    if [ ! -d "$base/pyexec" ]; then mkdir "$base/pyexec" && made_parent+=("$base/pyexec"); fi
    mkdir "$base/pyexec/$CG_NAME" && cg_dirs+=("$base/pyexec/$CG_NAME")
  done
  MEM=/sys/fs/cgroup/memory/pyexec/$CG_NAME
  PIDS=/sys/fs/cgroup/pids/pyexec/$CG_NAME
  CPU=/sys/fs/cgroup/cpu/pyexec/$CG_NAME
  echo $((256 * 1024 * 1024)) > "$MEM/memory.limit_in_bytes"
  echo 129 > "$PIDS/pids.max"        # 1 for nsjail itself + 128 for the job
  echo 100000 > "$CPU/cpu.cfs_period_us"
  echo 100000 > "$CPU/cpu.cfs_quota_us"
  oom_kills() { awk '/^oom_kill /{print $2}' "$MEM/memory.oom_control"; }
  limit_hits() { cat "$MEM/memory.failcnt"; }
  peak_bytes() { cat "$MEM/memory.max_usage_in_bytes"; }
  memstat() { printf 'oom_kill=%s failcnt=%s memsw.failcnt=%s max_usage=%s limit=%s' \
    "$(oom_kills)" "$(cat "$MEM/memory.failcnt")" \
    "$(cat "$MEM/memory.memsw.failcnt" 2>/dev/null)" "$(peak_bytes)" "$(cat "$MEM/memory.limit_in_bytes")"; }
  memreset() { echo 0 > "$MEM/memory.max_usage_in_bytes"; echo 0 > "$MEM/memory.failcnt"; echo 0 > "$MEM/memory.memsw.failcnt" 2>/dev/null; }
fi
CGS=$(IFS=,; echo "${cg_dirs[*]}")
info "cgroup $( [ "$CG_V2" = 1 ] && echo v2 || echo v1 ): ${cg_dirs[*]}"

# --- 6a. footprint of import numpy+pandas and spawn time
times=()
for i in $(seq "${PROBE_SPAWNS:-10}"); do
  memreset
  run_job spawn$i --cgroups "$CGS" <<'EOF'
import numpy, pandas; print(1)
EOF
  times+=("$(cat "$R/first_ms")")
  [ "$i" = 1 ] && peak1=$(peak_bytes)
done
peak=$(peak_bytes)
med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
check "${PROBE_SPAWNS:-10} jailed 'import numpy, pandas; print(1)' all printed" bash -c "[ $(printf '%s\n' "${times[@]}" | grep -c .) = ${PROBE_SPAWNS:-10} ]"
info "spawn-to-first-output, import numpy+pandas, in the cgroup: median ${med} ms (all: ${times[*]})"
info "peak memory of a numpy+pandas jail: first run $((peak1 / 1048576)) MiB, last run $((peak / 1048576)) MiB (page cache of the libraries is charged to whoever reads it first)"
run_job footprint --cgroups "$CGS" <<'EOF'
import numpy as np, pandas as pd, multiprocessing, math
a = np.random.rand(300, 300); a @ a
pd.DataFrame({"k": list("abc") * 1000, "v": range(3000)}).groupby("k").v.sum()
with multiprocessing.Pool(2) as p: p.map(math.factorial, range(10))
print("done")
EOF
info "peak memory after matmul + groupby + Pool(2): $(( $(peak_bytes) / 1048576 )) MiB"

# --- 6b. memory bomb
memreset
oom_before=$(oom_kills)
run_job membomb --cgroups "$CGS" <<'EOF'
chunks = []
for i in range(100):              # 100 x 10 MiB = 1 GiB, touched
    chunks.append(b"x" * (10 << 20))
    if i % 5 == 0: print("allocated", (i + 1) * 10, "MiB")
print("survived")
EOF
oom_after=$(oom_kills)
info "memory bomb: rc=$(rc), last: $(tail -1 "$R/out"), log: $(grep -oE 'pid=.*' "$R/log" | tail -1)"
info "memory bomb cgroup counters: $(memstat)"
check "memory bomb dies with 137" bash -c "[ $(rc) = 137 ] && ! grep -q survived $R/out"
check "the cgroup's oom_kill counter moved by 1 ($oom_before -> $oom_after)" bash -c "[ $((oom_after - oom_before)) = 1 ]"
check "the memory limit was hit (failcnt / memory.events max: $(limit_hits))" bash -c "[ $(limit_hits) -gt 0 ]"
check "peak memory reached the limit ($(peak_bytes))" bash -c "[ $(peak_bytes) -ge $((250 * 1024 * 1024)) ]"
run_job bigalloc --cgroups "$CGS" <<'EOF'
try:
    b = bytearray(2 << 30); print("ALLOC OK")
except MemoryError:
    print("ALLOC MemoryError")
EOF
check "one 2 GiB allocation fails with MemoryError (rlimit_as 1 GiB), no OOM kill" has '^ALLOC MemoryError'

# --- 6c. fork bomb + SIGKILL of nsjail + clean-up
run_job forkbomb --cgroups "$CGS" --kill-after 4 --subreaper <<'EOF'
import os, time
ok = fail = 0
t = time.time()
while time.time() - t < 10:
    try:
        if os.fork() == 0:
            ok = fail = 0; t = time.time()      # every child is a forker too
            continue
        ok += 1
    except OSError:
        fail += 1
        time.sleep(0.01)
    if ok + fail == 1 or (ok + fail) % 500 == 0:
        print("pid", os.getpid(), "forks", ok, "eagain", fail, flush=True)
EOF
maxp=$(cat "$R/max_pids"); events=$(tr '\n' ' ' < "$PIDS/pids.events" 2>/dev/null); ppeak=$(cat "$PIDS/pids.peak" 2>/dev/null)
info "fork bomb: max pids.current seen = $maxp, pids.peak = ${ppeak:-n/a} (pids.max 129 incl. nsjail), pids.events: ${events:-n/a}, EAGAIN seen: $(grep -c 'eagain [1-9]' "$R/out") lines"
check "fork bomb is capped (pids.current never above 129)" bash -c "[ $maxp -le 129 ] && [ $maxp -ge 100 ]"
check "fork bomb gets EAGAIN on fork" grep -qE 'eagain [1-9]' "$R/out"
em=$(cat "$R/empty_ms")
check "after SIGKILL of nsjail (launcher = subreaper) every cgroup.procs is empty and pids.current is 0 (${em} ms after the kill)" bash -c "[ '$em' != never ] && [ -n '$em' ]"
info "nsjail exit after SIGKILL: rc=$(rc) (the launcher sees nsjail itself killed)"
for mode in subreaper plain; do
  flag=""; [ $mode = subreaper ] && flag=--subreaper
  run_job killidle-$mode --cgroups "$CGS" --kill-after 2 $flag <<'EOF'
import multiprocessing, time
def nap(x):
    time.sleep(30)
with multiprocessing.Pool(2) as p:
    print("pool up", flush=True)
    p.map(nap, range(2))
EOF
  em=$(cat "$R/empty_ms")
  check "SIGKILL of nsjail running an idle Pool(2) job, launcher $mode: cgroup empty, pids.current 0 (${em} ms after the kill)" bash -c "[ '$em' != never ] && [ -n '$em' ]"
done
info "(without a subreaper the orphaned jail init is reaped by the host's PID 1, which may be slow: pids.current stays charged until then)"
# SIGTERM to nsjail: the job is PID 1 of its namespace, so a forwarded/ignored
# SIGTERM does not end it; measure how long nsjail takes to exit
run_job term --kill-after 1 --signal 15 <<'EOF'
import time
print("up", flush=True)
time.sleep(4)
print("finished normally")
EOF
info "SIGTERM to nsjail after 1 s, job sleeping 4 s: nsjail exited after $(cat "$R/total_ms") ms, rc=$(rc), job output: $(tr '\n' ' ' < "$R/out")"

# --- 6d. CPU quota
run_job cpu --cgroups "$CGS" <<'EOF'
import multiprocessing, resource, time
def burn(sec):
    t = time.time()
    while time.time() - t < sec: pass
t = time.time()
ps = [multiprocessing.Process(target=burn, args=(3,)) for _ in range(2)]
[p.start() for p in ps]; [p.join() for p in ps]
wall = time.time() - t
cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
used = cpu.ru_utime + cpu.ru_stime
print("CPU wall=%.2f cpu=%.2f ratio=%.2f" % (wall, used, used / wall))
EOF
ratio=$(grep -oE 'ratio=[0-9.]+' "$R/out" | cut -d= -f2)
info "2 burners for 3 s: $(grep ^CPU "$R/out"); cpu.stat: $(tr '\n' ' ' < "$CPU/cpu.stat")"
check "2 CPU burners get <= ~1 CPU (ratio ${ratio:-?})" awk -v r="${ratio:-9}" 'BEGIN { exit !(r <= 1.15) }'

# --- 6e. clean-up of the cgroups
left=0
for d in "${cg_dirs[@]}"; do [ -z "$(cat "$d/cgroup.procs")" ] || left=1; done
check "all probe cgroups are empty at the end" [ $left = 0 ]
rm_ok=1
for d in "${cg_dirs[@]}"; do rmdir "$d" || rm_ok=0; done
check "rmdir of the probe cgroups succeeds" [ $rm_ok = 1 ]

echo "== $fails failure(s)"
[ "$fails" = 0 ]
