#!/usr/bin/env bash
# probe-jail.sh: prove, property by property and for real, what a script run
# by pyexec gets, in both isolation modes. One PASS/FAIL line per check,
# labelled with its mode; INFO lines are measurements, not checks. Exits
# non-zero if any check FAILs (2 if the probe itself could not run).
#
# Nothing here is a stand-in: scripts/probe-jail-driver.py starts the real
# python/runner.py (spawn) and the real python/zygote.py (fork) exactly as
# the server does (Nsjail::args, Nsjail::launch, ForkSandbox::spawn), in
# per-job cgroups the probe makes, and sends each probe script over the real
# job protocol. A probe script runs at the script's top level (`def main():
# return {}` is appended); its prints arrive on the job's stdout pipe.
#
#   spawn  one nsjail per job, runner.py; fds 3/4/5 = job socket, stdout and
#          stderr pipes; the jail joins the job's cgroups before exec.
#   fork   one zygote per jail configuration (--cap CAP_SYS_ADMIN
#          --rlimit_cpu inf --pass_fd 3); each job is a child it forks into
#          a sandbox of its own, moved into the job's cgroups before the job.
#
# Sections, in each mode: basics, network, filesystem, seccomp, rlimits,
# cgroups, exits (nsjail's log lines in spawn mode, the zygote's reports in
# fork mode); then what only fork mode has to prove (two children of one
# zygote). Nothing a probe script does sends a packet off this machine, even
# in a broken jail: UDP connect() only looks up a route, TCP goes to
# 127.0.0.1, and name resolution is tried only when it can't send.
#
# cgroups: v1 /sys/fs/cgroup/{memory,pids,cpu}/pyexec-probe/<pid>/<job>,
# v2 /sys/fs/cgroup/pyexec-probe/<pid>/<job>. Everything the probe starts or
# makes is removed on exit, Ctrl-C included.
#
# Run as root. Environment: NSJAIL, VENV, CFG (the jail policy), RUNNER_DIR
# (the directory holding runner.py, zygote.py, confine.py), MODES ("spawn
# fork" by default), PROBE_KEEP=1 (keep the job outputs in the work directory),
# PYEXEC_TEST_TIME_SCALE (default 1: how many times slower than a development
# machine this one runs, as the cgroup v2 VM's emulated CPU is).
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
NSJAIL=${NSJAIL:-/opt/pyexec/bin/nsjail}
VENV=${VENV:-/opt/pyexec/sandbox-venv}
CFG=${CFG:-$here/nsjail.cfg}
RUNNER_DIR=${RUNNER_DIR:-$here/python}
MODES=${MODES:-spawn fork}
TIME_SCALE=${PYEXEC_TEST_TIME_SCALE:-1}
HOSTPY=/usr/bin/python3   # the driver runs on the host side, stdlib only

if [ "$(id -u)" -ne 0 ]; then echo "probe-jail: run as root" >&2; exit 2; fi
for m in $MODES; do
  case $m in spawn|fork) ;; *) echo "probe-jail: MODES: unknown mode '$m' (spawn, fork)" >&2; exit 2 ;; esac
done
for f in "$NSJAIL" "$VENV/bin/python3" "$CFG" "$HOSTPY" "$RUNNER_DIR/runner.py" \
         "$RUNNER_DIR/zygote.py" "$RUNNER_DIR/confine.py"; do
  [ -e "$f" ] || { echo "probe-jail: missing $f" >&2; exit 2; }
done
CFG=$(realpath "$CFG"); RUNNER_DIR=$(realpath "$RUNNER_DIR")
started=$(date +%s.%N)

# ---------------------------------------------------------------- clean-up
WORK=$(mktemp -d /tmp/probe-jail.XXXXXX)
chmod 755 "$WORK"   # bind sources must be readable by the jail's uid (outside 65534)
driver_pid=""
cleanup() {
  local d p
  if [ -n "$driver_pid" ]; then
    # The driver ends its jobs and zygotes; its jails also die with it (PDEATHSIG).
    kill -TERM "$driver_pid" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$driver_pid" 2>/dev/null
  fi
  # Every cgroup the driver made is listed before it is made: children first.
  if [ -f "$WORK/cgroups" ]; then
    sort -ru "$WORK/cgroups" | while read -r d; do
      [ -d "$d" ] || continue
      if [ "${d##*/}" = pyexec-probe ]; then rmdir "$d" 2>/dev/null; continue; fi  # shared
      for _ in $(seq 100); do
        [ -e "$d/cgroup.kill" ] && echo 1 > "$d/cgroup.kill" 2>/dev/null
        for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        rmdir "$d" 2>/dev/null && break
        sleep 0.1
      done
      [ -d "$d" ] && echo "probe-jail: could not remove the cgroup $d" >&2
    done
  fi
  if [ -n "${PROBE_KEEP:-}" ]; then echo "probe-jail: outputs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- controls
# The seccomp section runs each call four times: with both walls, with each
# alone, and with neither. A command-line --seccomp_string is APPENDED to the
# cfg's policy, so "without the jail policy" is a copy of the cfg without its
# seccomp_string lines; "without the job filter" is a copy of the runner
# directory whose confine.install_job_filter does nothing.
grep -v '^seccomp_string:' "$CFG" > "$WORK/noseccomp.cfg"
mkdir "$WORK/runner-nofilter"
cp -R "$RUNNER_DIR"/*.py "$RUNNER_DIR"/pyexec_runner "$WORK/runner-nofilter/"
cat >> "$WORK/runner-nofilter/confine.py" <<'EOF'


def install_job_filter():
    """The probe's control: this copy installs no job filter."""
EOF
# The runtime section's jobs run a copy whose filter has the kernel log each
# refusal (audit type 1326, with the call's number): a failure names the call.
mkdir "$WORK/runner-logged"
cp "$RUNNER_DIR"/*.py "$WORK/runner-logged/"
printf '\n\nLOG_REFUSALS = True\n' >> "$WORK/runner-logged/confine.py"
# The budgets section's control: a copy without the per-job budgets (no
# rlimits of the job's own, no user namespace of the fork-mode child's own).
mkdir "$WORK/runner-shared-budgets"
cp "$RUNNER_DIR"/*.py "$WORK/runner-shared-budgets/"
cat >> "$WORK/runner-shared-budgets/confine.py" <<'EOF'


JOB_RLIMITS = {}
_unshare_for_real = unshare


def unshare(flags):
    """The probe's control: no user namespace of the child's own."""
    if flags != CLONE_NEWUSER:
        _unshare_for_real(flags)
EOF
chmod -R a+rX "$WORK/runner-nofilter" "$WORK/noseccomp.cfg" "$WORK/runner-logged" \
  "$WORK/runner-shared-budgets"

# ---------------------------------------------------------------- the driver
export NSJAIL VENV CFG RUNNER_DIR WORK PROBE_PID=$$
coproc DRV { exec "$HOSTPY" "$here/scripts/probe-jail-driver.py" 2>>"$WORK/driver.log"; }
driver_pid=$DRV_PID   # bash unsets DRV_PID once the coprocess has ended
exec {drv_in}<&"${DRV[0]}" {drv_out}>&"${DRV[1]}"
IFS= read -r hello <&"$drv_in" || hello="error the driver did not start: $(tail -5 "$WORK/driver.log")"
case $hello in
  "ready "*) CGMODE=${hello#ready } ;;
  *) echo "probe-jail: cannot set up the probe's cgroups: ${hello#error }" >&2; exit 2 ;;
esac

drive() { # drive COMMAND key=value...: one request, one reply
  local reply
  printf '%s\n' "$(printf '%q ' "$@")" >&"$drv_out"
  if ! IFS= read -r reply <&"$drv_in"; then
    echo "probe-jail: the driver died; its log:" >&2; tail -20 "$WORK/driver.log" >&2; exit 2
  fi
  [ "$reply" = done ] && return 0
  echo "      driver: $reply"
  return 1
}

# ---------------------------------------------------------------- reporting
M=""                        # the mode the current lines are about
declare -A passes failures
fails=0
pass() { printf 'PASS  [%s] %s\n' "$M" "$*"; passes[$M]=$(( ${passes[$M]:-0} + 1 )); }
fail() { printf 'FAIL  [%s] %s\n' "$M" "$*"; failures[$M]=$(( ${failures[$M]:-0} + 1 )); fails=$((fails + 1)); }
info() { printf 'INFO  [%s] %s\n' "$M" "$*"; }
check() { # check "description" cmd...: PASS if cmd succeeds
  local d=$1; shift
  if "$@"; then pass "$d"; else fail "$d"; return 1; fi
}

R=""                        # the result directory of the last job
job() { # job NAME [driver options...] < probe script: one job in mode $M
  local name=$1; shift
  R=$WORK/run.$M.$name; mkdir -p "$R"; cat > "$R/job.py"
  drive run "mode=$M" "name=$name" "$@"
}
dir_of() { echo "$WORK/run.$M.$1"; }
has() { grep -qE -- "$1" "$R/out"; }                 # the job's stdout matches
fact() { awk -v k="$1" '$1 == k { sub(/^[^ ]+ ?/, ""); print; exit }' "${2:-$R}/facts" 2>/dev/null; }
is() { [ "$(fact "$1")" = "$2" ]; }                  # a fact equals a value
answered() { grep -q '^{"type":"result"' "$R/answer" 2>/dev/null; }
line() { grep -E -- "$1" "$R/out" | head -1 | cut -d' ' -f2-; }
ending() { if [ "$M" = spawn ]; then echo "rc $(fact rc)"; else echo "$(fact exit)"; fi; }
killed() { # the job's process died of SIGKILL (spawn: nsjail's 137; fork: the zygote's report)
  if [ "$M" = spawn ]; then is rc 137; else is exit "signal 9"; fi
}
show() { # context for a failure
  sed 's/^/      out| /' "$R/out" 2>/dev/null | head -15
  sed 's/^/      err| /' "$R/err" 2>/dev/null | tail -8
  grep -vE 'Mount: |Symlink: |map: |Jail parameters' "$R/log" 2>/dev/null | sed 's/^/      log| /' | tail -6
  grep -E '^(rc|exit|start_failed|send_failed|timed_out|end|kill_reason) ' "$R/facts" 2>/dev/null | sed 's/^/      fact| /'
  return 0
}
mib() { awk -v b="$1" 'BEGIN { if (b ~ /^[0-9]+$/) printf "%d MiB", b / 1048576; else print b }'; }
scaled() { awk -v s="$TIME_SCALE" -v t="$1" 'BEGIN { printf "%g", s * t }'; }   # a wait, stretched on a slow machine
median() { sort -n | awk '{a[NR] = $1} END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2); else print "?" }'; }

echo "== probe-jail: $CFG, $RUNNER_DIR, $NSJAIL; cgroup $CGMODE; modes: $MODES"

# ================================================================ basics
basics() {
  job basic <<'EOF'
import ctypes, fcntl, os, socket, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
# Every descriptor the script can reach (no /proc: fstat each number).
null = os.stat("/dev/null").st_rdev
fds = []
for fd in range(4096):
    try:
        st = os.fstat(fd)
    except OSError:
        continue
    if stat.S_ISSOCK(st.st_mode):
        s = socket.socket(fileno=fd)
        kind = "unix-stream" if (s.family, s.type) == (socket.AF_UNIX, socket.SOCK_STREAM) \
            else f"socket-{int(s.family)}-{int(s.type)}"
        s.detach()
    elif stat.S_ISFIFO(st.st_mode):
        access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        kind = {os.O_WRONLY: "pipe-w", os.O_RDONLY: "pipe-r"}.get(access, "pipe-rw") + f":{st.st_ino}"
    elif stat.S_ISCHR(st.st_mode) and st.st_rdev == null:
        kind = "null"
    else:
        kind = f"other-{st.st_mode:o}"
    fds.append(f"{fd}={kind}")
print("FDS", " ".join(fds))
os.write(1, b"MARK fd1\n")
os.write(2, b"MARK fd2\n")
print("PYTHON", sys.version.split()[0], sys.executable)
print("IDS", os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups()))
print("PID", os.getpid())
print("HOST", os.uname().nodename)
print("CWD", os.getcwd())
print("ENV", sorted(os.environ))
header = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)()
libc.syscall(125, header, data)          # capget
print("CAPS", data[0] | data[3] << 32, data[1] | data[4] << 32, data[2] | data[5] << 32)
print("NO_NEW_PRIVS", libc.prctl(39, 0, 0, 0, 0))
print("SECCOMP_MODE", libc.prctl(21, 0, 0, 0, 0))
import resource
print("RLIMITS", {n: resource.getrlimit(getattr(resource, "RLIMIT_" + n))
                  for n in ("FSIZE", "NOFILE", "CPU", "AS", "CORE", "STACK")})
for p in ("/proc", "/sys", "/etc", "/root", "/home", "/bin", "/usr/bin/sh", "/usr/bin/env"):
    print("EXISTS", p, os.path.exists(p))
print("DEV", sorted(os.listdir("/dev")))
import numpy as np, pandas as pd
a = np.arange(90000, dtype=float).reshape(300, 300)
print("MATMUL", float((a @ a.T).trace()) > 0)
df = pd.DataFrame({"k": ["a", "b", "a", "c"] * 250, "v": range(1000)})
print("GROUPBY", df.groupby("k")["v"].sum().to_dict() == {
    "a": sum(range(0, 1000, 4)) + sum(range(2, 1000, 4)), "b": sum(range(1, 1000, 4)),
    "c": sum(range(3, 1000, 4))})
print("TZ", pd.Timestamp("2024-06-01 12:00", tz="Europe/Paris").tz_convert("UTC").hour == 10)
import math, multiprocessing
with multiprocessing.Pool(2) as p:
    print("POOL", p.map(math.factorial, range(6)) == [1, 1, 2, 6, 24, 120])
def square(x):
    return x * x
with multiprocessing.Pool(2) as p:
    print("POOLFN", p.map(square, range(5)) == [0, 1, 4, 9, 16])
import threading
t = threading.Thread(target=lambda: None); t.start(); t.join()
print("THREAD", True)
print("CPUS", os.cpu_count())
EOF
  if answered && has '^PYTHON 3\.'; then pass "python runs the job and answers ($(line '^PYTHON'))"
  else fail "python runs the job and answers"; show; fi
  check "numpy matmul works" has '^MATMUL True'
  check "pandas groupby works" has '^GROUPBY True'
  check "pandas tz_convert works (zoneinfo)" has '^TZ True'
  check "multiprocessing.Pool(2).map works (a builtin)" has '^POOL True'
  check "multiprocessing.Pool(2).map works (a function the script defines)" has '^POOLFN True'
  check "threads work (clone3 gets ENOSYS, glibc falls back to clone)" has '^THREAD True'
  check "uid/gid inside are 1000/1000, no supplementary groups" has '^IDS 1000 1000 1000 1000 \[(1000)?\]$'
  check "the job process is uid/gid 65534 on the host ($(fact job_Uid) / $(fact job_Gid))" \
    eval 'is job_Uid "65534 65534 65534 65534" && is job_Gid "65534 65534 65534 65534"'
  check "the job process is PID 1 of its own pid namespace (inside: $(line '^PID'); NSpid $(fact job_NSpid))" \
    eval 'has "^PID 1$" && [[ "$(fact job_NSpid)" =~ \ 1$ ]]'
  check "hostname is pyexec" has '^HOST pyexec$'
  check "cwd is /tmp" has '^CWD /tmp$'
  check "the environment holds only the cfg's variables" \
    has "^ENV \['HOME', 'LANG', 'MKL_NUM_THREADS', 'MPLCONFIGDIR', 'NUMEXPR_NUM_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'PATH', 'TZ'\]$"
  check_fds
  check "fd 1 and fd 2 are the job's stdout and stderr capture pipes" \
    eval 'grep -q "^MARK fd1$" "$R/out" && grep -q "^MARK fd2$" "$R/err"'
  check "rlimits: fsize 10 MiB, nofile 128, cpu 11 s (the server's, over the cfg's)" \
    has "'FSIZE': \(10485760, 10485760\), 'NOFILE': \(128, 128\), 'CPU': \(11, 11\)"
  check "rlimits: address space 1 GiB, no core, stack 8 MiB" \
    has "'AS': \(1073741824, 1073741824\), 'CORE': \(0, 0\), 'STACK': \(8388608, 8388608\)"
  check "/proc is absent" has '^EXISTS /proc False'
  check "/sys, /etc, /root, /home are absent" \
    eval 'has "^EXISTS /sys False" && has "^EXISTS /etc False" && has "^EXISTS /root False" && has "^EXISTS /home False"'
  check "no shell or tools (/bin, /usr/bin/sh, /usr/bin/env absent)" \
    eval 'has "^EXISTS /bin False" && has "^EXISTS /usr/bin/sh False" && has "^EXISTS /usr/bin/env False"'
  check "/dev holds only null, random, shm, urandom, zero" has "^DEV \['null', 'random', 'shm', 'urandom', 'zero'\]$"
  check "no capabilities, inside (capget: $(line '^CAPS'))" has '^CAPS 0 0 0$'
  check "no capabilities, from the host (eff $(fact job_CapEff), prm $(fact job_CapPrm), inh $(fact job_CapInh), amb $(fact job_CapAmb))" \
    eval '(for k in CapEff CapPrm CapInh CapAmb; do is job_$k 0000000000000000 || exit 1; done)'
  check "no_new_privs is set (inside and from the host)" eval 'has "^NO_NEW_PRIVS 1$" && is job_NoNewPrivs 1'
  check "seccomp filter mode before the job is sent (host: Seccomp $(fact job_Seccomp), $(fact job_Seccomp_filters) filters; inside: mode $(line '^SECCOMP_MODE'))" \
    eval 'is job_Seccomp 2 && has "^SECCOMP_MODE 2$"'
  check "the job process is in the job's cgroups before the job is sent ($(fact job_cgroup_memory))" \
    eval '(for c in memory pids cpu; do [ -n "$(fact job_cgroup_$c)" ] && [ "$(fact job_cgroup_$c)" = "$(fact cg_path_$c)" ] || exit 1; done)'
  local tasks=128; [ "$M" = spawn ] && tasks=129   # spawn: nsjail is in the cgroup too
  check "the job's cgroup limits: memory 256 MiB, $tasks tasks, 1 CPU ($(fact cg_memory_limit), $(fact cg_pids_max), $(fact cg_cpu_max))" \
    eval 'is cg_memory_limit 268435456 && is cg_pids_max '$tasks' && is cg_cpu_max "100000 100000"'
  info "os.cpu_count() $(line '^CPUS'); bounding set $(fact job_CapBnd); peak memory of this job's cgroup $(mib "$(fact cg_memory_peak)"); ready $(fact ready_ms) ms after launch"
}

check_fds() { # exactly: 0 /dev/null, 1 and 2 two different write-only pipes, one unix stream
  # socket and one /dev/null on private fds >= 10 (the job channel and the runner's copy)
  local fds; fds=$(line '^FDS')
  local re='^0=null 1=pipe-w:([0-9]+) 2=pipe-w:([0-9]+) ([0-9]+)=(unix-stream|null) ([0-9]+)=(unix-stream|null)$'
  if [[ $fds =~ $re ]] && [ "${BASH_REMATCH[1]}" != "${BASH_REMATCH[2]}" ] \
     && [ "${BASH_REMATCH[4]}" != "${BASH_REMATCH[6]}" ] \
     && [ "${BASH_REMATCH[3]}" -ge 10 ] && [ "${BASH_REMATCH[5]}" -ge 10 ]; then
    pass "the script reaches exactly fd 0 /dev/null, 1+2 the capture pipes, a unix socket and a /dev/null on private fds ($fds)"
  else
    fail "the script reaches exactly fd 0 /dev/null, 1+2 the capture pipes, a unix socket and a /dev/null on private fds, and nothing else (got: ${fds:-nothing})"
  fi
}

# ================================================================ network
network() {
  job net <<'EOF'
import errno, fcntl, os, socket, struct
def name(exc):
    return "timeout" if isinstance(exc, socket.timeout) else errno.errorcode.get(exc.errno, str(exc.errno))
def udp(family, address):
    # connect() on a UDP socket sends nothing: it only looks up a route.
    try:
        s = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        return name(exc)
    try:
        s.connect(address)
        return "OK"
    except OSError as exc:
        return name(exc)
    finally:
        s.close()
udp4 = udp(socket.AF_INET, ("192.0.2.1", 9))        # TEST-NET-1
print("UDP4", udp4)
print("UDP6", udp(socket.AF_INET6, ("2001:db8::1", 9)))  # the IPv6 documentation prefix
udp_lo = udp(socket.AF_INET, ("127.0.0.1", 53))
print("UDPLO", udp_lo)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # loopback only, never off the machine
s.settimeout(2)
try:
    s.connect(("127.0.0.1", 9)); print("TCPLO OK")
except OSError as exc:
    print("TCPLO", name(exc))
# Interfaces by index through ioctl SIOCGIFNAME: glibc's if_nameindex() asks
# netlink, which the job filter refuses; a sealed job's socket.if_nameindex
# answers from ioctl (python/confine.py).
try:
    print("NAMEINDEX", socket.if_nameindex())
except OSError as exc:
    print("NAMEINDEX", name(exc))
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ifaces = []
for index in range(1, 256):
    try:
        reply = fcntl.ioctl(probe, 0x8910, struct.pack("16si20x", b"", index))   # SIOCGIFNAME
    except OSError:
        continue
    ifaces.append((index, reply[:16].split(b"\0", 1)[0].decode()))
print("IFACES", ifaces)
up = []
for _, ifname in ifaces:
    request = struct.pack("16sH22x", ifname.encode(), 0)
    flags = struct.unpack("16sH22x", fcntl.ioctl(probe, 0x8913, request))[1]   # SIOCGIFFLAGS
    if flags & 1:                                                               # IFF_UP
        up.append(ifname)
print("UP", up)
# With no /etc, glibc asks only 127.0.0.1:53: the lookup can send nothing while
# loopback and the world have no route. Otherwise it is not tried at all.
if not os.path.exists("/etc") and udp_lo == "ENETUNREACH" and udp4 == "ENETUNREACH":
    try:
        socket.getaddrinfo("pyexec-probe.example", 80); print("DNS OK")
    except socket.gaierror as exc:
        print("DNS FAIL", exc.errno)
else:
    print("DNS NOT-TRIED")
EOF
  answered || show
  check "no route to the world: UDP connect to 192.0.2.1 gives ENETUNREACH (got $(line '^UDP4'))" has '^UDP4 ENETUNREACH$'
  check "no IPv6 route: UDP connect to 2001:db8::1 fails (got $(line '^UDP6'))" has '^UDP6 (ENETUNREACH|EAFNOSUPPORT|EADDRNOTAVAIL)$'
  check "no route to loopback: TCP to 127.0.0.1 gives ENETUNREACH (got $(line '^TCPLO'))" has '^TCPLO ENETUNREACH$'
  check "the only interface is lo ($(line '^IFACES'))" has "^IFACES \[\(1, 'lo'\)\]$"
  check "socket.if_nameindex() answers without netlink, as ioctl does ($(line '^NAMEINDEX'))" \
    eval '[ "$(line "^NAMEINDEX")" = "$(line "^IFACES")" ]'
  check "no interface is up (up: $(line '^UP'))" has '^UP \[\]$'
  check "name resolution fails, without sending ($(line '^DNS'))" has '^DNS FAIL'
}

# ================================================================ filesystem
filesystem() {
  job fs <<'EOF'
import errno, os
def try_write(path, size=10):
    try:
        with open(path, "wb") as f:
            f.write(b"x" * size)
        return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
for p in ("/x", "/usr/x", "/usr/lib/python3.11/x", "/opt/x", "/opt/pyexec/sandbox-venv/x",
          "/opt/pyexec/sandbox-venv/lib/python3.11/site-packages/x", "/pyexec/x", "/dev/x",
          "/tmp/x", "/dev/shm/x"):
    print("WRITE", p, try_write(p))
print("WRITE devnull", try_write("/dev/null"))
try:
    os.mkdir("/newdir"); print("MKDIR / OK")
except OSError as e:
    print("MKDIR /", errno.errorcode[e.errno])
for p in ("/tmp", "/dev/shm"):
    st = os.statvfs(p)
    print("SIZE", p, st.f_blocks * st.f_frsize)
print("BIG", try_write("/tmp/big", 11 * 1024 * 1024), os.path.getsize("/tmp/big"))
os.unlink("/tmp/big")
result = "OK"
for i in range(8):                       # 8 x 9 MiB files, each under the 10 MiB fsize limit
    r = try_write("/tmp/fill%d" % i, 9 * 1024 * 1024)
    if r != "OK":
        result = "%s at file %d" % (r, i); break
print("FILLTMP", result)
for i in range(8):
    try: os.unlink("/tmp/fill%d" % i)
    except OSError: pass
with open("/tmp/t.sh", "w") as f:
    f.write("#!/usr/bin/python3.11\n")
os.chmod("/tmp/t.sh", 0o755)
try:
    os.execv("/tmp/t.sh", ["/tmp/t.sh"])
except OSError as e:
    print("EXECTMP", errno.errorcode[e.errno])
EOF
  answered || show
  local p q r
  for p in / /usr /usr/lib/python3.11 /opt /opt/pyexec/sandbox-venv \
           /opt/pyexec/sandbox-venv/lib/python3.11/site-packages /pyexec /dev; do
    q=$p; [ "$p" = / ] && q=""
    r=$(grep -E "^WRITE $q/x " "$R/out" | awk '{print $3}')
    if [ -n "$r" ] && [ "$r" != OK ]; then pass "write to $p fails ($r)"; else fail "write to $p fails (got '${r:-nothing}')"; fi
  done
  check "mkdir in / fails" has '^MKDIR / E'
  check "write to /tmp works" has '^WRITE /tmp/x OK'
  check "write to /dev/shm works" has '^WRITE /dev/shm/x OK'
  check "write to /dev/null works" has '^WRITE devnull OK'
  check "/tmp is a 64 MiB tmpfs, /dev/shm 16 MiB" eval 'has "^SIZE /tmp 67108864$" && has "^SIZE /dev/shm 16777216$"'
  check "an 11 MiB write fails with EFBIG, the file stops at 10 MiB" has '^BIG EFBIG 10485760$'
  check "/tmp fills up (ENOSPC before 64 MiB)" has '^FILLTMP ENOSPC'
  check "exec from /tmp is refused (noexec)" has '^EXECTMP EACCES'
}

# ================================================================ seccomp
# Each call with arguments that do no harm if it were allowed; the tag says
# which wall must refuse it: P = nsjail.cfg's policy, J = the job's own filter
# (python/confine.py). Without the walls the first call (unshare of a user and
# a mount namespace) is the escape itself, and gives the calls after it the
# capabilities that make the kernel answer something other than EPERM.
cat > "$WORK/seccomp.py" <<'EOF'
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
me = os.getpid()
X32 = 0x40000000
NEW = {"NEWNS": 0x20000, "NEWCGROUP": 0x2000000, "NEWUTS": 0x4000000, "NEWIPC": 0x8000000,
       "NEWUSER": 0x10000000, "NEWPID": 0x20000000, "NEWNET": 0x40000000}
CALLS = [
    # Before the unshare: once in a user namespace of its own with no uid map,
    # the kernel would refuse a nested one anyway.
    ("clone(NEWUSER)", "PJ", 56, NEW["NEWUSER"] | 17, 0, 0, 0, 0),
    ("unshare(NEWUSER|NEWNS)", "J", 272, NEW["NEWUSER"] | NEW["NEWNS"]),
    ("setns", "J", 308, -1, 0),
    ("mount", "J", 165, 0, 0, 0, 0, 0),
    ("umount2", "PJ", 166, 0, 0),
    ("open_tree", "PJ", 428, -100, 0, 0),
    ("move_mount", "PJ", 429, -1, 0, -1, 0, 0),
    ("fsopen", "PJ", 430, 0, 0),
    ("fsconfig", "PJ", 431, -1, 0, 0, 0, 0),
    ("fsmount", "PJ", 432, -1, 0, 0),
    ("fspick", "PJ", 433, -100, 0, 0),
    ("mount_setattr", "PJ", 442, -1, 0, 0, 0, 0),
    ("open_tree_attr", "J", 467, -100, 0, 0, 0, 0),
    ("pivot_root", "PJ", 155, 0, 0),
    ("chroot", "PJ", 161, 0),
] + [("clone(%s)" % flag, "PJ", 56, value | 17, 0, 0, 0, 0) for flag, value in NEW.items()
      if flag != "NEWUSER"] + [
    ("clone3", "PJ", 435, 0, 0),
    ("x32:getpid", "J", X32 | 39),
    ("x32:unshare(NEWUSER)", "J", X32 | 272, NEW["NEWUSER"]),
    ("x32:mount", "J", X32 | 165, 0, 0, 0, 0, 0),
    ("ptrace(GETREGS,self)", "P", 101, 12, me, 0, 0),
    ("process_vm_readv", "P", 310, me, 0, 0, 0, 0, 0),
    ("process_vm_writev", "P", 311, me, 0, 0, 0, 0, 0),
    ("process_madvise", "P", 440, -1, 0, 0, 0, 0),
    ("pidfd_getfd", "P", 438, -1, 0, 0),
    ("kcmp", "P", 312, me, me, 0, 0, 0),
    ("perf_event_open", "P", 298, 0, 0, -1, -1, 0),
    ("bpf", "P", 321, 0, 0, 0),
    ("userfaultfd(USER_MODE_ONLY)", "P", 323, 1),
    ("keyctl", "P", 250, 0, 0),
    ("add_key", "P", 248, 0, 0, 0, 0, 0),
    ("request_key", "P", 249, 0, 0, 0, 0),
    ("init_module", "P", 175, 0, 0, 0),
    ("finit_module", "P", 313, -1, 0, 0),
    ("delete_module", "P", 176, 0, 0),
    ("kexec_load", "P", 246, 0, 0, 0, 0),
    ("kexec_file_load", "P", 320, -1, -1, 0, 0, 0),
    ("open_by_handle_at", "P", 304, -1, 0, 0),
    ("name_to_handle_at", "P", 303, -100, 0, 0, 0, 0),
    ("io_uring_setup", "P", 425, 1, 0),
    ("io_uring_enter", "P", 426, -1, 0, 0, 0, 0, 0),
    ("io_uring_register", "P", 427, -1, 0, 0, 0),
    ("reboot", "P", 169, 0, 0, 0, 0),
    ("swapon", "P", 167, 0, 0),
    ("swapoff", "P", 168, 0),
    ("acct", "P", 163, 0),
    ("quotactl", "P", 179, 0, 0, 0, 0),
    ("quotactl_fd", "P", 443, -1, 0, 0, 0),
    ("iopl(0)", "P", 172, 0),
    ("ioperm(off)", "P", 173, 0, 0, 0),
    ("lookup_dcookie", "P", 212, 0, 0, 0),
    ("vhangup", "P", 153),
    ("syslog(SIZE_BUFFER)", "P", 103, 10, 0, 0),
    ("personality(ADDR_NO_RANDOMIZE)", "P", 135, 0x0040000),
    # The job filter is an allow-list: socket families, narrowed calls, calls
    # refused for the budgets they would spend, and numbers newer than its list.
    ("socket(AF_NETLINK)", "J", 41, 16, 2, 0),
    ("socket(AF_PACKET)", "J", 41, 17, 2, 0),
    ("socket(AF_VSOCK)", "J", 41, 40, 1, 0),
    ("socket(AF_ALG)", "J", 41, 38, 5, 0),
    ("socket(AF_KEY)", "J", 41, 15, 3, 2),
    ("socket(AF_XDP)", "J", 41, 44, 3, 0),
    ("socketpair(AF_NETLINK)", "J", 53, 16, 2, 0, 0),
    ("ioctl(TIOCSTI)", "J", 16, -1, 0x5412, 0),
    ("ioctl(FIONREAD)", "J", 16, -1, 0x541B, 0),
    ("prctl(PR_GET_DUMPABLE)", "J", 157, 3, 0, 0, 0, 0),
    ("fcntl(F_SETPIPE_SZ)", "J", 72, -1, 1031, 1 << 20),
    ("fcntl(F_NOTIFY)", "J", 72, -1, 1026, 0),
    ("inotify_init1", "J", 294, 0),
    ("mq_open", "J", 240, 0, 0, 0, 0),
    ("io_setup", "J", 206, 0, 0),
    ("cachestat", "J", 451, -1, 0, 0, 0),
    ("fchmodat2", "J", 452, -1, 0, 0, 0),
    ("futex_wake", "J", 454, 0, 0, 0, 0),
    ("mseal", "J", 462, 0, 0, 0),
    ("file_getattr", "J", 468, -1, 0, 0, 0, 0),
    ("listns", "J", 470, 0, 0, 0, 0),
    ("nr471", "J", 471, -1, -1, -1),
    ("nr500", "J", 500),
    ("nr1000", "J", 1000),
    ("nr0x3fffffff", "J", 0x3FFFFFFF),
]
WANT = {"clone3": "ENOSYS", "ioctl(TIOCSTI)": "ENOTTY", "ioctl(FIONREAD)": "ENOTTY",
        "prctl(PR_GET_DUMPABLE)": "EINVAL", "fcntl(F_SETPIPE_SZ)": "EINVAL",
        "fcntl(F_NOTIFY)": "EINVAL", "listns": "EPERM"}
WANT.update({name: "EAFNOSUPPORT" for name, *_ in CALLS if name.startswith("socket")})
WANT.update({name: "ENOSYS" for name in (
    "inotify_init1", "mq_open", "io_setup", "cachestat", "fchmodat2", "futex_wake", "mseal",
    "file_getattr", "nr471", "nr500", "nr1000", "nr0x3fffffff")})
RETURNS_FD = {"open_tree", "fsopen", "fsmount", "fspick", "open_tree_attr", "pidfd_getfd",
              "perf_event_open", "bpf", "userfaultfd(USER_MODE_ONLY)", "io_uring_setup",
              "inotify_init1"} | {name for name, *_ in CALLS if name.startswith("socket(")}
print("CALLS", len(CALLS))
for name, walls, number, *args in CALLS:
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    if r == 0 and name.startswith("clone"):
        os._exit(0)                   # the child of an allowed clone leaves at once
    code = ctypes.get_errno()
    if r > 0 and name.startswith("clone"):
        os.waitpid(r, 0); result = "forked"
    elif r >= 0 and name in RETURNS_FD:
        os.close(r); result = "fd"
    elif r == -1:
        result = errno.errorcode.get(code, str(code))
    else:
        result = "ret=%d" % r
    print("SYSCALL", name, walls, result, WANT.get(name, "EPERM"))
print("PERSONA_QUERY", libc.syscall(ctypes.c_long(135), ctypes.c_long(0xffffffff)))
EOF
seccomp() {
  local run cfg runner
  for run in both:$CFG:$RUNNER_DIR policy:$CFG:$WORK/runner-nofilter \
             filter:$WORK/noseccomp.cfg:$RUNNER_DIR none:$WORK/noseccomp.cfg:$WORK/runner-nofilter; do
    IFS=: read -r run cfg runner <<< "$run"
    job "seccomp-$run" "cfg=$cfg" "runner=$runner" < "$WORK/seccomp.py"
    local n; n=$(grep -c '^SYSCALL' "$R/out")
    if [ "$n" != "$(line '^CALLS')" ] || ! answered; then
      fail "seccomp: the $run run made all $(line '^CALLS') calls and answered (made $n)"; show
    fi
  done
  declare -A by_policy by_filter by_none
  local name walls r want
  while read -r _ name walls r _; do by_policy[$name]=$r; done < <(grep '^SYSCALL' "$(dir_of seccomp-policy)/out")
  while read -r _ name walls r _; do by_filter[$name]=$r; done < <(grep '^SYSCALL' "$(dir_of seccomp-filter)/out")
  while read -r _ name walls r _; do by_none[$name]=$r; done < <(grep '^SYSCALL' "$(dir_of seccomp-none)/out")
  local np=0 nj=0 policy_leaks="" filter_leaks="" kernel_too="" policy_passes=""
  R=$(dir_of seccomp-both)
  while read -r _ name walls r want; do
    local ctx="jail policy alone: ${by_policy[$name]:-?}; job filter alone: ${by_filter[$name]:-?}; neither: ${by_none[$name]:-?}"
    if [ "$r" = "$want" ]; then pass "seccomp: $name -> $r ($ctx)"; else fail "seccomp: $name -> $r, want $want ($ctx)"; fi
    if [[ $walls == *P* ]]; then
      np=$((np + 1)); [ "${by_policy[$name]:-}" = "$want" ] || policy_leaks+=" $name=${by_policy[$name]:-?}"
    elif [ "${by_policy[$name]:-}" != "$want" ]; then
      policy_passes+=" $name"
    fi
    if [[ $walls == *J* ]]; then
      nj=$((nj + 1)); [ "${by_filter[$name]:-}" = "$want" ] || filter_leaks+=" $name=${by_filter[$name]:-?}"
    fi
    [ "${by_none[$name]:-}" = "$want" ] && kernel_too+=" $name"
  done < <(grep '^SYSCALL' "$R/out")
  check "seccomp: nsjail.cfg's policy alone refuses all $np calls of its list${policy_leaks:+ (let through:$policy_leaks)}" [ -z "$policy_leaks" ]
  check "seccomp: the job's own filter alone refuses all $nj calls of its list, installed before the script${filter_leaks:+ (let through:$filter_leaks)}" [ -z "$filter_leaks" ]
  check "personality(0xffffffff), the query, is still allowed" has '^PERSONA_QUERY 0$'
  info "seccomp: the jail policy lets through, for the zygote, and only the job filter refuses:${policy_passes:- nothing}"
  info "seccomp: with neither wall the kernel itself refuses (no capability for it):${kernel_too:- nothing}; every other refusal above comes from a wall"
}

# ================================================================ rlimits
rlimits() {
  job limits <<'EOF'
import errno, os
opened = []
try:
    while True:
        opened.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print("NOFILE", max(opened), errno.errorcode[e.errno])
for fd in opened:
    os.close(fd)
try:
    b = bytearray(2 << 30); print("ALLOC OK")
except MemoryError:
    print("ALLOC MemoryError")
EOF
  answered || show
  check "open() fails with EMFILE once fd 127 is taken (nofile 128; $(line '^NOFILE'))" has '^NOFILE 127 EMFILE$'
  check "a 2 GiB allocation fails with MemoryError (address space 1 GiB), no OOM kill" \
    eval 'has "^ALLOC MemoryError$" && is cg_oom_kill 0'
  # The CPU-time backstop: spawn mode passes nsjail --rlimit_cpu; fork mode's
  # zygote has none (inf) and each child sets its own (zygote --cpu-seconds).
  # A spawned interpreter's limit also pays for its start and imports, which
  # take more than a second on a slow (emulated) machine: give it the scale.
  local cpu_limit=1
  if [ "$M" = spawn ]; then
    cpu_limit=$(awk -v s="$TIME_SCALE" 'BEGIN { c = int(s); if (c < s) c++; print c }')
    set -- extra=--rlimit_cpu,"$cpu_limit"
  else
    set -- cpu=1
  fi
  job cpukill timeout=$(( 20 * cpu_limit )) "$@" <<'EOF'
print("burning", flush=True)
while True:
    pass
EOF
  check "a CPU-time limit of $cpu_limit s kills the job with SIGKILL (soft = hard; $(ending) after $(fact run_ms) ms)" \
    eval 'killed && [ "$(fact run_ms)" -lt $(( 10000 * cpu_limit )) ] 2>/dev/null' || show
  if [ "$M" = fork ]; then
    check "the zygote outlives its child's CPU-time kill (its own limit is inf)" is zygote_alive_after 1
  fi
}

# ================================================================ cgroups
cgroups() {
  job membomb <<'EOF'
chunks = []
for i in range(100):              # 100 x 10 MiB = 1 GiB, touched
    chunks.append(b"x" * (10 << 20))
    if i % 5 == 0:
        print("allocated", (i + 1) * 10, "MiB", flush=True)
print("survived")
EOF
  info "memory bomb: $(tail -1 "$R/out"); cgroup: oom_kill $(fact cg_oom_kill), peak $(fact cg_memory_peak), failcnt $(fact cg_memory_failcnt)"
  check "a memory bomb is SIGKILLed ($(ending))" eval 'killed && ! has survived' || show
  check "the OOM kill is counted in the job's own cgroup (oom_kill $(fact cg_oom_kill))" is cg_oom_kill 1
  [ "$M" = fork ] && check "the zygote outlives its child's OOM kill" is zygote_alive_after 1

  # Each process reports its first refused fork, with the errno it got, as
  # it happens: under a slow (emulated) CPU a process may be killed long
  # before it could reach any later report.
  job forkbomb kill_after=$(scaled 3) <<'EOF'
import errno, os, time
forks = 0
refused = False
t = time.time()
while time.time() - t < 10:
    try:
        if os.fork() == 0:
            forks = 0; refused = False; t = time.time()      # every child forks too
            continue
        forks += 1
    except OSError as e:
        if not refused:
            refused = True
            print("pid", os.getpid(), "forks", forks, "refused", errno.errorcode.get(e.errno, e.errno), flush=True)
        time.sleep(0.01)
EOF
  local max; max=$(fact cg_pids_max)
  local errnos; errnos=$(grep -oE 'refused [A-Z0-9]+$' "$R/out" | sort | uniq -c | awk '{printf "%s%s x%s", sep, $3, $1; sep=", "}')
  info "fork bomb: most tasks seen $(fact max_pids), pids.peak $(fact cg_pids_peak), pids.max $max, refused forks (pids.events max) $(fact cg_pids_events_max); errnos the processes saw: ${errnos:-none}"
  check "a fork bomb is held at pids.max (most seen $(fact max_pids) of $max)" \
    eval '[ "$(fact max_pids)" -le "$max" ] && [ "$(fact max_pids)" -ge $((max - 2)) ]'
  check "the fork bomb's forks fail, and only with EAGAIN (seen: ${errnos:-none}; pids.events max $(fact cg_pids_events_max))" \
    eval 'grep -qE "refused EAGAIN$" "$R/out" && ! grep -E "refused [A-Z0-9]+$" "$R/out" | grep -qv "refused EAGAIN$" && [ "$(fact cg_pids_events_max)" -ge 1 ] 2>/dev/null'
  check "SIGKILL to the job's PID 1 empties its cgroup, pids.current 0 ($(fact empty_ms) ms)" \
    eval '[ -n "$(fact empty_ms)" ] && [ "$(fact empty_ms)" != never ]'

  job cpu <<'EOF'
import multiprocessing, resource, time
def burn(seconds):
    t = time.time()
    while time.time() - t < seconds:
        pass
t = time.time()
ps = [multiprocessing.Process(target=burn, args=(2,)) for _ in range(2)]
[p.start() for p in ps]; [p.join() for p in ps]
wall = time.time() - t
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
used = usage.ru_utime + usage.ru_stime
print("CPU wall=%.2f cpu=%.2f ratio=%.2f" % (wall, used, used / wall))
EOF
  local ratio; ratio=$(grep -oE 'ratio=[0-9.]+' "$R/out" | cut -d= -f2)
  local throttled periods
  throttled=$(fact cg_cpu_nr_throttled); periods=$(fact cg_cpu_nr_periods)
  # Throttling needs the burners to reach the quota, which other load on a
  # shared machine can prevent: a measurement, not a check.
  info "2 burners for 2 s: $(line '^CPU'); throttled in $throttled of $periods periods"
  # The kernel counts bandwidth periods (100 ms) only for a cgroup that has a
  # quota and runnable tasks: 2 s of burning is about 20 of them.
  check "the kernel enforces a CPU quota on the burners' cgroup ($periods bandwidth periods counted, want >= 10)" \
    eval '[ "${periods:-0}" -ge 10 ] 2>/dev/null'
  check "2 CPU burners get at most ~1 CPU (ratio ${ratio:-?})" awk -v r="${ratio:-9}" 'BEGIN { exit !(r <= 1.15) }'
}

# ================================================================ exits
exits() {
  job killed kill_on_output=1 <<'EOF'
import time
print("ready", flush=True)
time.sleep(10)
EOF
  if [ "$M" = spawn ]; then
    R=$(dir_of basic)
    check "nsjail logs a job's normal end: 'exited with status: 0' (rc $(fact rc))" \
      eval 'is rc 0 && grep -qE "^\[I\]\[[^]]+\] pid=[0-9]+ \(\[STANDALONE MODE\]\) exited with status: 0, \(PIDs left: 0\)$" "$R/log"'
    R=$(dir_of killed)
    check "SIGKILL of the job from outside: rc 137 and 'terminated with signal: SIGKILL (9)'" \
      eval 'is rc 137 && grep -qE "pid=[0-9]+ \(\[STANDALONE MODE\]\) terminated with signal: SIGKILL \(9\), \(PIDs left: 0\)" "$R/log"'
    R=$(dir_of cpukill)
    check "the CPU-time kill: rc 137 and 'terminated with signal: SIGKILL (9)'" \
      eval 'is rc 137 && grep -q "terminated with signal: SIGKILL (9)" "$R/log"'
    job setup extra=--bindmount_ro,/nonexistent-probe-path:/nowhere <<'EOF'
print("should not run")
EOF
    info "setup failure: rc $(fact rc), log: $(grep -E '^\[[EF]\]' "$R/log" | sed 's/\[[0-9T:+-]*\]//' | tr '\n' ' ')"
    check "a setup failure: rc 255 and \"Couldn't launch the child process\"" \
      eval 'is rc 255 && grep -q "Couldn'"'"'t launch the child process" "$R/log"'
  else
    check "the zygote reports the job child killed from outside: signal 9 (got $(fact exit))" is exit "signal 9"
    R=$(dir_of basic)
    check "the zygote reports a finished job's child: exit 0 (got $(fact exit))" is exit "exit 0"
  fi
}

# ================================================================ runtime
# The whole runtime under the job filter (python/runtime_exercise.py): every
# public module of numpy, pandas and matplotlib, one job per package, and the
# smoke calls in a job of their own. The host's run is the baseline: a module
# that imports there but not here is a failure, named with its error and the
# calls the kernel logged as refused (the jobs run the runner-logged copy).
kernel_log_mark() { dmesg 2>/dev/null | tail -1; }
refused_since() { # refused_since MARK: "name xN" for each call refused to a jail (uid 65534) since MARK
  dmesg 2>/dev/null | awk -v mark="$1" 'found || mark == "" { print } $0 == mark { found = 1 }' \
    | grep 'type=1326' | grep ' uid=65534 ' | grep -oE 'syscall=[0-9]+' | cut -d= -f2 \
    | RUNNER_DIR="$RUNNER_DIR" "$HOSTPY" -c '
import collections, os, sys
sys.path.insert(0, os.environ["RUNNER_DIR"])
import syscall_table
counts = collections.Counter(int(n) for n in sys.stdin.read().split())
print(" ".join(f"{syscall_table.NAMES.get(n, n)}x{c}" for n, c in sorted(counts.items())))'
}
runtime_baseline() { # the walk on the host, once: $WORK/runtime-host.json
  [ -s "$WORK/runtime-host.json" ] && return 0
  local home; home=$(mktemp -d "$WORK/host-home.XXXXXX")
  (cd "$home" && env -i HOME="$home" MPLCONFIGDIR="$home" PYEXEC_OUTPUTS_DIR="$home/outputs" \
     LANG=C.UTF-8 TZ=UTC OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
     "$VENV/bin/python3" -I "$RUNNER_DIR/runtime_exercise.py" --no-smoke \
     > "$WORK/runtime-host.json" 2> "$WORK/runtime-host.err")
}
runtime_verdict() { # runtime_verdict < the job's REPORT: the lines the checks read
  "$HOSTPY" -c '
import json, sys
inside = json.load(sys.stdin)
host = json.load(open(sys.argv[1]))["imports"]
imports = inside.get("imports", {})
new = {m: e for m, e in imports.items() if e and not host.get(m)}
if "imports" in inside:
    excluded = sorted(m for m in imports if host.get(m))
    print(f"WALKED {len(imports)}")
    print("EXCLUDED " + "; ".join(f"{m} ({host[m][:70]})" for m in excluded))
    print("INSIDE-ONLY " + " ".join(sorted(m for m in imports if m not in host)))
print("NEW " + "; ".join(f"{m}: {e[:160]}" for m, e in sorted(new.items())))
smoke = inside.get("smoke", {})
print(f"SMOKE {len(smoke)} " + "; ".join(f"{k}: {v[:160]}" for k, v in smoke.items() if v))
' "$WORK/runtime-host.json"
}
runtime() {
  runtime_baseline || { fail "runtime: the walk ran on the host (see $WORK/runtime-host.err)"; return; }
  local part args mark refused verdict new
  for part in numpy pandas matplotlib smoke; do
    case $part in
      smoke) args='walk=False' ;;
      matplotlib) args='calls=False, packages=("matplotlib", "mpl_toolkits")' ;;
      *) args="calls=False, packages=(\"$part\",)" ;;
    esac
    { cat "$RUNNER_DIR/runtime_exercise.py"; echo; echo "print(\"REPORT\", json.dumps(exercise($args)))"; } \
      > "$WORK/runtime-$part.py"
    mark=$(kernel_log_mark)
    job "runtime-$part" "runner=$WORK/runner-logged" timeout="$(scaled 120)" < "$WORK/runtime-$part.py"
    refused=$(refused_since "$mark")
    verdict=$(grep '^REPORT ' "$R/out" | cut -d' ' -f2- | runtime_verdict 2>&1)
    if ! answered || ! grep -q '^SMOKE ' <<< "$verdict"; then
      fail "runtime: the $part job answered (refused calls the kernel logged: ${refused:-none})"; show; continue
    fi
    new=$(sed -n 's/^NEW //p' <<< "$verdict")
    if [ "$part" = smoke ]; then
      local smoke; smoke=$(sed -n 's/^SMOKE //p' <<< "$verdict")
      local broken=${smoke#* }
      check "runtime: all ${smoke%% *} smoke calls work under the job filter (numpy, pandas, matplotlib PNG/SVG/PDF, multiprocessing with each start method, threads, fork, subprocess, tempfile, outputs, time, signals, sockets, asyncio, stdlib)${broken:+; failed: $broken}" \
        [ -z "$broken" ]
    else
      check "runtime: every public module of $part that imports on the host imports under the job filter ($(sed -n 's/^WALKED //p' <<< "$verdict") walked)${new:+; failed inside only: $new}" [ -z "$new" ]
      info "runtime: $part: left out, they fail on the host too: $(sed -n 's/^EXCLUDED //p' <<< "$verdict")"
      local only; only=$(sed -n 's/^INSIDE-ONLY //p' <<< "$verdict")
      [ -n "$only" ] && info "runtime: $part: walked inside only: $only"
    fi
    info "runtime: $part: calls the job filter refused (kernel log, which the kernel rate-limits): ${refused:-none}; peak memory $(mib "$(fact cg_memory_peak)")"
  done
}

# ================================================================ budgets
# The kernel's per-user counters (queued signals, processes, message queues)
# are kept per (user namespace, uid). Two jobs at once: the first holds every
# queued signal, process and POSIX message queue it can get, and waits; the
# second must still queue a signal and fork. Both lower their RLIMIT_NPROC to
# 40 first (any process may), so that this budget, not the pids cgroup, is
# the one reached. The control runs the runner-shared-budgets copy: there the
# second job must fail, or these checks could not see a shared budget at all.
budget_hold() {
  sed "s/HOLD_S/$(scaled 20)/" <<'EOF'
import ctypes, errno, os, resource, signal, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
class Value(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
resource.setrlimit(resource.RLIMIT_NPROC, (40, 40))
print("LIMITS", [resource.getrlimit(getattr(resource, "RLIMIT_" + n))[1]
                 for n in ("SIGPENDING", "MSGQUEUE", "NPROC")])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGRTMIN})
queued = 0
while queued < 200000 and libc.sigqueue(os.getpid(), signal.SIGRTMIN, Value(queued)) == 0:
    queued += 1
print("QUEUED", queued, errno.errorcode.get(ctypes.get_errno()))
children = []
while len(children) < 1000:
    try:
        pid = os.fork()
    except OSError as e:
        print("FORKS", len(children), errno.errorcode[e.errno]); break
    if pid == 0:
        time.sleep(120); os._exit(0)
    children.append(pid)
queues = 0
while queues < 100:
    name = b"/pyexec-probe-%d" % queues
    if libc.syscall(240, name, os.O_CREAT | os.O_RDWR, 0o600, None) < 0:   # mq_open
        break
    queues += 1
print("MQ", queues, errno.errorcode.get(ctypes.get_errno()))
print("HOLD", flush=True)
time.sleep(HOLD_S)
EOF
}
budget_probe() {
  cat <<'EOF'
import ctypes, errno, os, resource, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
class Value(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
resource.setrlimit(resource.RLIMIT_NPROC, (40, 40))
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGRTMIN + 1})
# Sixteen: a shared budget at its limit can still have a slot or two free
# now and then (other processes' signals come and go).
queued = 0
while queued < 16 and libc.sigqueue(os.getpid(), signal.SIGRTMIN + 1, Value(queued)) == 0:
    queued += 1
print("SIGQUEUE", "OK" if queued == 16 else "%d %s" % (queued, errno.errorcode.get(ctypes.get_errno())))
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0); print("FORK OK")
except OSError as e:
    print("FORK", errno.errorcode[e.errno])
r = libc.syscall(240, b"/pyexec-probe-b", os.O_CREAT | os.O_RDWR, 0o600, None)
print("MQ", "opened" if r >= 0 else errno.errorcode.get(ctypes.get_errno()))
EOF
}
budgets() {
  local run runner userns A B
  # fork mode: "fix" is the zygote with --own-user-namespace 1, which the
  # server does not pass yet (it must first write the child's id map);
  # "today" is the zygote as the server starts it now.
  local runs="fix:$RUNNER_DIR:1 control:$WORK/runner-shared-budgets:0"
  [ "$M" = fork ] && runs+=" today:$RUNNER_DIR:0"
  for run in $runs; do
    IFS=: read -r run runner userns <<< "$run"
    A=$(dir_of "budget-$run-a"); B=$(dir_of "budget-$run-b")
    mkdir -p "$A" "$B"
    budget_hold > "$A/job.py"
    budget_probe > "$B/job.py"
    drive pair "mode=$M" "a=budget-$run-a" "b=budget-$run-b" "runner=$runner" "userns=$userns"
    R=$A
    grep -q '^HOLD' "$R/out" || { fail "budgets ($run): the first job got to its HOLD line"; show; }
    info "budgets ($run): the first job's hard limits [sigpending, msgqueue, nproc] $(line '^LIMITS'); it queued $(line '^QUEUED') signals, forked $(line '^FORKS') children, opened $(line '^MQ') message queues"
    local queued; queued=$(line '^QUEUED' | cut -d' ' -f1)
    R=$B
    answered || { fail "budgets ($run): the second job answered"; show; }
    if [ "$run" = today ]; then
      info "budgets (today: no user namespace of the child's own): the second job's sigqueue $(line '^SIGQUEUE'), fork $(line '^FORK'): a zygote's jobs share one budget until the server passes --own-user-namespace 1"
    elif [ "$run" = fix ]; then
      local how=""
      [ "$M" = fork ] && how=" (the zygote run with --own-user-namespace 1)"
      R=$A
      check "budgets: a job queues at most its own 256 signals ($(line '^QUEUED'))" [ "$queued" = 256 ]
      check "budgets: POSIX message queues are refused (ENOSYS; RLIMIT_MSGQUEUE 0 besides): $(line '^MQ')" has '^MQ 0 ENOSYS$'
      R=$B
      check "budgets: while another job holds all it can, a job still queues 16 signals ($(line '^SIGQUEUE')) and forks ($(line '^FORK'))$how" \
        eval 'has "^SIGQUEUE OK$" && has "^FORK OK$"'
      check "budgets: ... and is refused a message queue like every job ($(line '^MQ'))" has '^MQ ENOSYS$'
    else
      check "budgets (control: no per-job budgets): the second job can't queue 16 signals (queued $(line '^SIGQUEUE')), so the check above can see a shared budget" has '^SIGQUEUE [0-9]+ EAGAIN$'
      if [ "$M" = fork ]; then
        check "budgets (control): ... and so does its fork ($(line '^FORK')): without the child's own user namespace RLIMIT_NPROC is one budget" has '^FORK EAGAIN$'
      else
        info "budgets (control): the second jail still forks ($(line '^FORK')): each jail is a user namespace of its own, so RLIMIT_NPROC was never shared between spawn-mode jobs; queued signals were, at the host level (every jail is uid 65534)"
      fi
    fi
  done
  info "budgets: per host uid, which no user namespace splits: inotify instances (fs.inotify.max_user_instances $(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null); refused to jobs), pipe buffers (fs.pipe-user-pages-soft $(cat /proc/sys/fs/pipe-user-pages-soft 2>/dev/null) pages; F_SETPIPE_SZ refused), epoll watches (fs.epoll.max_user_watches $(cat /proc/sys/fs/epoll/max_user_watches 2>/dev/null); each job's memory cgroup bounds its own)"
}

# ================================================================ fork mode only
fork_only() {
  R=$(dir_of basic)
  check "the zygote holds CAP_SYS_ADMIN and nothing else (CapEff $(fact zygote_CapEff))" is zygote_CapEff 0000000000200000
  check "its job child holds no capability (CapEff $(fact job_CapEff), CapPrm $(fact job_CapPrm))" \
    eval 'is job_CapEff 0000000000000000 && is job_CapPrm 0000000000000000'
  check "the child is PID 1 of a pid namespace below the zygote's (NSpid $(fact job_NSpid), forked as $(fact jail_pid))" \
    eval '[ "$(fact job_NSpid)" = "$(fact host_pid) $(fact jail_pid) 1" ]'
  check "the child is moved out of the zygote's cgroup into the job's before the job ($(fact before_move_cgroup_memory) -> $(fact job_cgroup_memory))" \
    eval '[ "$(fact before_move_cgroup_memory)" = "$(fact zygote_cgroup_path)" ] && [ "$(fact job_cgroup_memory)" = "$(fact cg_path_memory)" ] && [ "$(fact job_cgroup_memory)" != "$(fact zygote_cgroup_path)" ]'
  check "the child has one seccomp filter more than the zygote, its own ($(fact zygote_Seccomp_filters) -> $(fact job_Seccomp_filters))" \
    eval '[ "$(fact job_Seccomp_filters)" = $(( $(fact zygote_Seccomp_filters) + 1 )) ]'

  # Nothing of the zygote's loop reaches the job: no frame of it on the
  # stack (its locals held the server's fork counter), and no Zygote, fork
  # request or control socket among the objects the collector tracks.
  job residue <<'EOF'
import gc, json, socket, sys
main = sys.modules.get("__main__")
zygote_file = getattr(main, "__file__", "?")
frames = []
f = sys._getframe()
while f is not None:
    if f.f_code.co_filename == zygote_file:
        frames.append(f.f_code.co_name)
    f = f.f_back
kinds = tuple(t for t in (getattr(main, "Zygote", None), getattr(main, "JobChild", None))
              if isinstance(t, type))
found = set()
for o in gc.get_objects():
    try:
        if kinds and isinstance(o, kinds):
            found.add(type(o).__name__)
        elif isinstance(o, dict) and o.get("type") == "fork":
            found.add("a fork request")
        elif isinstance(o, socket.socket) and o.type == socket.SOCK_SEQPACKET:
            found.add("the control socket")
        elif type(o).__name__ == "frame" and o.f_code.co_filename == zygote_file \
                and o.f_code.co_name != "<module>":
            found.add("frame " + o.f_code.co_name)
    except Exception:
        pass
print("ZYGOTE_FRAMES", json.dumps(frames))
print("ZYGOTE_OBJECTS", json.dumps(sorted(found)))
EOF
  answered || show
  check "the job's stack holds no frame of the zygote's loop (zygote.py frames: $(line '^ZYGOTE_FRAMES'))" \
    has '^ZYGOTE_FRAMES \["<module>"\]$'
  check "gc.get_objects() finds no Zygote, fork request or control socket ($(line '^ZYGOTE_OBJECTS'))" \
    has '^ZYGOTE_OBJECTS \[\]$'

  # Two children, both forked and waiting; A does its part and holds, then B runs.
  local token=$RANDOM$RANDOM
  mkdir -p "$(dir_of iso-a)" "$(dir_of iso-b)"
  sed "s/TOKEN/$token/; s/HOLD_S/$(scaled 20)/" > "$(dir_of iso-a)/job.py" <<'EOF'
import ctypes, os, socket, time, numpy
libc = ctypes.CDLL(None, use_errno=True)
for path in ("/tmp/probe-a", "/dev/shm/probe-a", "probe-cwd-a"):
    with open(path, "w") as f:
        f.write("a")
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(b"\0pyexec-probe-TOKEN")
listener.listen(1)
print("SHM", libc.shmget(0x50524f42, 4096, 0o1000 | 0o600))   # IPC_CREAT
print("RNG", numpy.random.random())
print("HASH", hash("pyexec-probe"))
print("HOLD", flush=True)
time.sleep(HOLD_S)
EOF
  sed "s/TOKEN/$token/" > "$(dir_of iso-b)/job.py" <<'EOF'
import ctypes, errno, os, socket, numpy
libc = ctypes.CDLL(None, use_errno=True)
print("TMP", sorted(os.listdir("/tmp")))
print("OUTPUTS", sorted(os.listdir("/tmp/outputs")))
print("DEVSHM", sorted(os.listdir("/dev/shm")))
print("CWDLIST", sorted(os.listdir(".")))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(b"\0pyexec-probe-TOKEN"); print("ABSTRACT OK")
except OSError as e:
    print("ABSTRACT", errno.errorcode[e.errno])
r = libc.shmget(0x50524f42, 0, 0)
print("SHM", errno.errorcode[ctypes.get_errno()] if r == -1 else "found")
print("RNG", numpy.random.random())
print("HASH", hash("pyexec-probe"))
EOF
  drive pair a=iso-a b=iso-b
  local A B
  A=$(dir_of iso-a); B=$(dir_of iso-b); R=$B
  grep -q '^HOLD' "$A/out" || { fail "the first child of the pair got to its HOLD line"; R=$A; show; R=$B; }
  answered || { fail "the second child of the pair answered"; show; }
  # /tmp holds only the empty folder the runner makes for output files.
  check "two children don't share /tmp (the second sees $(line '^TMP'))" has "^TMP \\['outputs'\\]$"
  check "the second's /tmp/outputs is its own, empty (it sees $(line '^OUTPUTS'))" has '^OUTPUTS \[\]$'
  check "two children don't share /dev/shm (the second sees $(line '^DEVSHM'))" has '^DEVSHM \[\]$'
  check "two children don't share their working directory (the second's holds $(line '^CWDLIST'))" has "^CWDLIST \\['outputs'\\]$"
  check "two children don't share abstract unix sockets (connect: $(line '^ABSTRACT'))" has '^ABSTRACT ECONNREFUSED$'
  check "two children don't share SysV IPC (shmget of the first's key: $(line '^SHM'))" has '^SHM ENOENT$'
  local rng_a rng_b hash_a hash_b
  rng_a=$(grep '^RNG' "$A/out" | cut -d' ' -f2); rng_b=$(grep '^RNG' "$B/out" | cut -d' ' -f2)
  check "numpy's global RNG differs between two children ($rng_a, $rng_b)" \
    eval '[ -n "$rng_a" ] && [ -n "$rng_b" ] && [ "$rng_a" != "$rng_b" ]'
  hash_a=$(grep '^HASH' "$A/out" | cut -d' ' -f2); hash_b=$(grep '^HASH' "$B/out" | cut -d' ' -f2)
  if [ -n "$hash_a" ] && [ "$hash_a" = "$hash_b" ]; then
    info "Python's hash secret is the zygote's, shared by its children (hash alike: $hash_a): the documented trade-off (worker/src/fork/mod.rs), bounded by recycling"
  else
    info "Python's hash secret differs between two children ($hash_a, $hash_b)"
  fi

  # One child kills what it can reach while another waits for its job.
  mkdir -p "$(dir_of kill-a)" "$(dir_of kill-b)"
  cat > "$(dir_of kill-a)/job.py" <<'EOF'
import errno, os
def kill(pid, sig):
    try:
        os.kill(pid, sig); return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
print("SEES", [pid for pid in range(2, 1 << 16) if kill(pid, 0) != "ESRCH"])
print("KILLALL", kill(-1, 9))
print("KILLGROUP", kill(0, 9))
print("SESSION", os.getsid(0), "GROUP", os.getpgid(0))
EOF
  echo 'print("ALIVE")' > "$(dir_of kill-b)/job.py"
  drive pair a=kill-a b=kill-b
  A=$(dir_of kill-a); B=$(dir_of kill-b); R=$A
  info "the first child: kill(-1, 9) -> $(line '^KILLALL'), kill(0, 9) -> $(line '^KILLGROUP'); session and group $(line '^SESSION')"
  check "a child sees no process but itself (kill(pid, 0) for 2..65535: $(line '^SEES'))" has '^SEES \[\]$'
  R=$B
  check "kill(-1, 9) and kill(0, 9) from one child leave a waiting second child alive" \
    eval 'is alive_before_job 1 && answered && has "^ALIVE$"'
  check "... and the zygote (still pid $(fact zygote_host_pid), alive after both)" \
    eval 'is zygote_alive_before_job 1 && is zygote_alive_after 1 && [ "$(fact zygote_host_pid)" = "$(fact zygote_host_pid "$(dir_of basic)")" ]'
}

# ================================================================ main
for M in $MODES; do
  echo "== $M mode"
  basics; network; filesystem; seccomp; rlimits; cgroups; exits; runtime; budgets
  [ "$M" = fork ] && fork_only
done

M=timing
spawn_ready=$(cat "$WORK"/run.spawn.*/facts 2>/dev/null | awk '$1 == "ready_ms" {print $2}' | median)
fork_ready=$(cat "$WORK"/run.fork.*/facts 2>/dev/null | awk '$1 == "ready_ms" {print $2}' | median)
zygote_start=$(cat "$WORK"/run.fork.*/facts 2>/dev/null | awk '$1 == "zygote_start_ms" {print $2}' | sort -u | median)
info "launch to ready, median: spawn $spawn_ready ms, fork $fork_ready ms (zygote start $zygote_start ms)"
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
summary=""
for M in $MODES; do summary+=" $M: ${passes[$M]:-0} passed, ${failures[$M]:-0} failed;"; done
echo "==$summary $fails failure(s) in ${elapsed} s"
[ "$fails" = 0 ]
