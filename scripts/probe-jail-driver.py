#!/usr/bin/python3
"""A jail driver: starts job processes as the pyexec server does, in either
isolation mode, runs one script in each over the real job protocol, and
records what happened, inside and out.

scripts/trace-syscalls.sh and scripts/bench-syscall-filter.sh start it as a
coprocess and own what they measure; this file only drives and records. The
jail policy itself is tested in Rust, through the server's own launcher
(worker/tests/jail_policy/, `make test-jail`: cargo test -p pyexec-worker
--features test-support --test jail_policy). Host Python, stdlib only.
Unlike the server, it writes no id map for a fork-mode child's own user
namespace (userns=1): the child's ids read 65534.

    spawn  one nsjail per job running python/runner.py, fds 3/4/5 = job
           socket, stdout pipe, stderr pipe; fd 2 = nsjail's log pipe; the
           jail joins the job's cgroups before exec (Nsjail::launch).
    fork   one nsjail per zygote configuration running python/zygote.py
           (--rlimit_cpu inf, --cap CAP_SYS_ADMIN, --pass_fd 3: a
           SOCK_SEQPACKET control socket); each job child is asked for with
           a fork message + SCM_RIGHTS, its host pid read from the
           credentials on its ready frame, and it is moved into the job's
           cgroups before the job is sent (ForkSandbox::spawn).

Commands, one line each on stdin (shell words, key=value options); one reply
line each on stdout, "done" or "error <why>":

    run mode=spawn|fork name=NAME [cfg=PATH] [runner=DIR] [cpu=SECONDS]
        [extra=FLAG,FLAG...] [timeout=S] [kill_on_output=1] [kill_after=S]
        [userns=1]   (fork: the zygote's children make user namespaces of their own)
    pair a=NAME b=NAME [mode=fork|spawn] [runner=DIR]   two job processes at once (pair())
    quit

A job's files live in $WORK/run.<mode>.<name>/: job.py (written by the
probe) and, afterwards, out, err, log (nsjail's, spawn mode), answer (the
answer frame) and facts ("key value" lines).

Cgroups (the server's layout, under a parent of the probe's own):
    v1  /sys/fs/cgroup/{memory,pids,cpu}/pyexec-probe/<probe pid>/<job>
    v2  /sys/fs/cgroup/pyexec-probe/<probe pid>/<job>
Every directory is listed in $WORK/cgroups before it is made, so that the
probe's clean-up finds it even if this process is killed.
"""

import array
import ctypes
import errno
import fcntl
import json
import os
import select
import shlex
import signal
import socket
import struct
import sys
import time
import traceback

NSJAIL = os.environ["NSJAIL"]
VENV = os.environ["VENV"]
CFG = os.environ["CFG"]
RUNNER_DIR = os.environ["RUNNER_DIR"]
WORK = os.environ["WORK"]
PROBE_PID = os.environ["PROBE_PID"]
# How many times slower than a development machine this one runs (the cgroup
# v2 VM's emulated CPU): every wait below is an upper bound, stretched by it.
TIME_SCALE = float(os.environ.get("PYEXEC_TEST_TIME_SCALE") or 1)
PYTHON = VENV + "/bin/python3"
CGROUP_MOUNT = "/sys/fs/cgroup"
CGROUP_PARENT = "pyexec-probe"
CONTROLLERS = ("memory", "pids", "cpu")
CGROUP_V2 = os.path.exists(f"{CGROUP_MOUNT}/cgroup.controllers")

# The server's defaults (server/src/config.rs, worker/src/nsjail.rs).
MEMORY_BYTES = 256 << 20
MAX_PROCESSES = 128
CPUS = 1.0
MAX_FILE_MB = 10
MAX_OPEN_FILES = 128
CPU_SECONDS = 11
TMP_BYTES = 64 << 20
SHM_BYTES = 16 << 20
MAX_RESULT_BYTES = 10 << 20
CFS_PERIOD_US = 100_000
# The zygote's own cgroup (ForkSandbox::start).
ZYGOTE_MEMORY_BYTES = max(MEMORY_BYTES * 2, 1 << 30)
ZYGOTE_TASKS = 256

PR_SET_PDEATHSIG = 1
OUTPUT_CAP = 8 << 20
CREDENTIALS_SPACE = socket.CMSG_SPACE(struct.calcsize("3i"))

libc = ctypes.CDLL(None, use_errno=True)


class ProbeError(Exception):
    """Something the driver could not do; the reply line carries it."""


def now():
    return time.monotonic()


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


# ------------------------------------------------------------------ cgroups


class CgroupTree:
    """The probe's cgroup root (one directory per controller on v1)."""

    def __init__(self):
        self.v2 = CGROUP_V2
        self.mode = "v2" if self.v2 else "v1"
        if self.v2:
            self._prepare_v2()
        else:
            self._prepare_v1()

    def _prepare_v1(self):
        self.mounts = [f"{CGROUP_MOUNT}/{c}" for c in CONTROLLERS]
        for mount in self.mounts:
            if not os.path.exists(f"{mount}/cgroup.procs"):
                raise ProbeError(
                    f"no cgroup v1 hierarchy at {mount} (and no cgroup v2 at {CGROUP_MOUNT}): "
                    "the probe needs the memory, pids and cpu controllers")
        self.roots = []
        for mount in self.mounts:
            make_dir(f"{mount}/{CGROUP_PARENT}")
            self.roots.append(make_dir(f"{mount}/{CGROUP_PARENT}/{PROBE_PID}"))

    def _prepare_v2(self):
        self.mounts = [CGROUP_MOUNT]
        offered = read_text(f"{CGROUP_MOUNT}/cgroup.controllers").split()
        missing = [c for c in CONTROLLERS if c not in offered]
        if missing:
            raise ProbeError(
                f"the cgroup v2 hierarchy at {CGROUP_MOUNT} does not offer {' '.join(missing)} "
                f"(it offers: {' '.join(offered) or 'nothing'})")
        enable_controllers(CGROUP_MOUNT)
        parent = make_dir(f"{CGROUP_MOUNT}/{CGROUP_PARENT}")
        enable_controllers(parent)
        root = make_dir(f"{parent}/{PROBE_PID}")
        enable_controllers(root)
        self.roots = [root]

    def remove(self):
        """Remove the probe's root and, if no other probe uses it, the parent."""
        for root in self.roots:
            for path in (root, os.path.dirname(root)):
                try:
                    os.rmdir(path)
                except OSError:
                    pass

    def relative(self, path):
        """A cgroup directory as /proc/<pid>/cgroup names it."""
        for mount in self.mounts:
            if path.startswith(mount + "/"):
                return path[len(mount):]
        return path


def make_dir(path):
    with open(f"{WORK}/cgroups", "a") as f:
        f.write(path + "\n")
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ProbeError(f"cannot create the cgroup {path}: {exc.strerror}") from None
    return path


def enable_controllers(directory):
    """cgroup v2: let the children of `directory` use memory, pids and cpu."""
    wanted = [c for c in CONTROLLERS
              if c not in read_text(f"{directory}/cgroup.subtree_control").split()]
    if not wanted:
        return
    try:
        write_text(f"{directory}/cgroup.subtree_control", " ".join("+" + c for c in wanted))
    except OSError as exc:
        procs = read_text(f"{directory}/cgroup.procs").split()
        own = next((line[3:] for line in read_text("/proc/self/cgroup").splitlines()
                    if line.startswith("0::")), "?")
        among = " (this probe among them)" if {PROBE_PID, str(os.getpid())} & set(procs) else ""
        if procs and exc.errno == errno.EBUSY:
            raise ProbeError(
                f"cannot enable {' '.join(wanted)} in {directory}/cgroup.subtree_control: "
                f"EBUSY, because that cgroup holds {len(procs)} process(es){among} "
                f"({' '.join(procs[:8])}{' ...' if len(procs) > 8 else ''}; this probe's "
                f"cgroup is {own}). cgroup v2 lets a cgroup other than the root hand "
                "controllers to its children only while it holds no process itself (the "
                "no-internal-processes rule); this is the case in a container or under a "
                "cgroup namespace. Move those processes into a leaf cgroup first (the server "
                "does this with <mount>/pyexec-server), or run the probe on the host. The "
                "probe does not move them itself.") from None
        raise ProbeError(
            f"cannot enable {' '.join(wanted)} in {directory}/cgroup.subtree_control: "
            f"{exc.strerror} (the cgroup holds {len(procs)} process(es){among}; "
            f"this probe's cgroup is {own})") from None


class JobCgroup:
    """The cgroup(s) of one job or one zygote, with the server's limits."""

    def __init__(self, tree, name, memory_bytes, tasks, cpus):
        self.tree = tree
        self.name = name
        self.dirs = [make_dir(f"{root}/{name}") for root in tree.roots]
        quota = max(round(cpus * CFS_PERIOD_US), 1000)
        if tree.v2:
            d = self.dirs[0]
            write_text(f"{d}/memory.max", str(memory_bytes))
            if os.path.exists(f"{d}/memory.swap.max"):
                write_text(f"{d}/memory.swap.max", "0")
            write_text(f"{d}/pids.max", str(tasks))
            write_text(f"{d}/cpu.max", f"{quota} {CFS_PERIOD_US}")
        else:
            memory = self.dir("memory")
            write_text(f"{memory}/memory.limit_in_bytes", str(memory_bytes))
            if os.path.exists(f"{memory}/memory.memsw.limit_in_bytes"):
                write_text(f"{memory}/memory.memsw.limit_in_bytes", str(memory_bytes))
            write_text(f"{self.dir('pids')}/pids.max", str(tasks))
            write_text(f"{self.dir('cpu')}/cpu.cfs_period_us", str(CFS_PERIOD_US))
            write_text(f"{self.dir('cpu')}/cpu.cfs_quota_us", str(quota))

    def dir(self, controller):
        return self.dirs[0] if self.tree.v2 else self.dirs[CONTROLLERS.index(controller)]

    def path(self, controller):
        return self.tree.relative(self.dir(controller))

    def join_fds(self):
        return [os.open(f"{d}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in self.dirs]

    def adopt(self, pid):
        for d in self.dirs:
            write_text(f"{d}/cgroup.procs", str(pid))

    def procs(self):
        pids = set()
        for d in self.dirs:
            pids.update(int(p) for p in read_text(f"{d}/cgroup.procs").split())
        return pids

    def pids_current(self):
        try:
            return int(read_text(f"{self.dir('pids')}/pids.current", "-1"))
        except ValueError:
            return -1

    def is_empty(self):
        return not self.procs() and self.pids_current() == 0

    def counters(self):
        memory, pids, cpu = self.dir("memory"), self.dir("pids"), self.dir("cpu")
        facts = {"cg_name": self.name}
        if self.tree.v2:
            facts["cg_oom_kill"] = counter(read_text(f"{memory}/memory.events"), "oom_kill")
            facts["cg_memory_peak"] = read_text(f"{memory}/memory.peak", "n/a").strip()
            facts["cg_memory_limit"] = read_text(f"{memory}/memory.max").strip()
            facts["cg_cpu_max"] = read_text(f"{cpu}/cpu.max").strip()
        else:
            facts["cg_oom_kill"] = counter(read_text(f"{memory}/memory.oom_control"), "oom_kill")
            facts["cg_memory_peak"] = read_text(f"{memory}/memory.max_usage_in_bytes").strip()
            facts["cg_memory_failcnt"] = read_text(f"{memory}/memory.failcnt").strip()
            facts["cg_memory_limit"] = read_text(f"{memory}/memory.limit_in_bytes").strip()
            facts["cg_cpu_max"] = (read_text(f"{cpu}/cpu.cfs_quota_us").strip() + " "
                                   + read_text(f"{cpu}/cpu.cfs_period_us").strip())
        facts["cg_pids_max"] = read_text(f"{pids}/pids.max").strip()
        facts["cg_pids_peak"] = read_text(f"{pids}/pids.peak", "n/a").strip()
        facts["cg_pids_events_max"] = counter(read_text(f"{pids}/pids.events"), "max")
        stat = read_text(f"{cpu}/cpu.stat")
        facts["cg_cpu_nr_throttled"] = counter(stat, "nr_throttled")
        facts["cg_cpu_nr_periods"] = counter(stat, "nr_periods")
        return facts

    def destroy(self):
        """Kill whatever is left, then remove the directories (retrying while
        the kernel lets the last process go)."""
        deadline = now() + 5
        while True:
            if self.tree.v2:
                try:
                    write_text(f"{self.dirs[0]}/cgroup.kill", "1")
                except OSError:
                    pass
            for pid in self.procs():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            left = []
            for d in self.dirs:
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(d)
            if not left or now() > deadline:
                return
            time.sleep(0.01)


def counter(text, key):
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return parts[1]
    return "n/a"


# ------------------------------------------------------------------ processes


def outside_view(pid, prefix):
    """What the host sees of a process: ids, namespaces' pids, privileges, cgroups."""
    facts = {}
    status = read_text(f"/proc/{pid}/status")
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "NSpid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                   "NoNewPrivs", "Seccomp", "Seccomp_filters"):
            facts[prefix + key] = " ".join(value.split())
    for line in read_text(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        # v2 has the one line "0::<path>"; on v1 that line is systemd's, not ours.
        names = list(CONTROLLERS) if CGROUP_V2 else controllers.split(",")
        for name in names:
            if name in CONTROLLERS:
                facts[f"{prefix}cgroup_{name}"] = path
    return facts


def is_alive(pidfd):
    if pidfd is None:
        return False
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def start_nsjail(args, passed, cgroup):
    """fork/exec nsjail as Nsjail::launch does: join the cgroup, fds 0/1 on
    /dev/null, 2 on a log pipe, `passed` on 3, 4, ...; PDEATHSIG = SIGKILL.
    Returns (nsjail's pid, the log pipe's read end)."""
    lifted = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in passed]
    join = cgroup.join_fds()
    log_read, log_write = os.pipe()
    devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            for fd in join:
                os.write(fd, b"0")
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.dup2(log_write, 2)
            for target, fd in enumerate(lifted, start=3):
                os.dup2(fd, target)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            os.execv(NSJAIL, [NSJAIL] + args)
        finally:
            os._exit(127)
    for fd in lifted + join + [log_write, devnull]:
        os.close(fd)
    os.set_blocking(log_read, False)
    return pid, log_read


def common_args(cfg, runner):
    return ["--config", cfg, "--bindmount_ro", VENV,
            "--bindmount_ro", f"{os.path.realpath(runner)}:/pyexec"]


def python_args(program):
    return ["--", PYTHON, "-I", "-X", "utf8", "-B", "-u", program]


def job_args(cfg, runner, extra):
    """Nsjail::args(Role::Job, 3), with `extra` flags after the rlimits."""
    return (common_args(cfg, runner)
            + ["--rlimit_fsize", str(MAX_FILE_MB), "--rlimit_nofile", str(MAX_OPEN_FILES),
               "--rlimit_cpu", str(CPU_SECONDS)]
            + extra
            + ["--pass_fd", "3", "--pass_fd", "4", "--pass_fd", "5"]
            + python_args("/pyexec/runner.py"))


def zygote_args(cfg, runner, cpu_seconds, own_userns):
    """Nsjail::args(Role::Zygote, 1); own_userns adds --own-user-namespace 1,
    which the server does not pass yet."""
    return (common_args(cfg, runner)
            + ["--rlimit_fsize", str(MAX_FILE_MB), "--rlimit_nofile", str(MAX_OPEN_FILES),
               "--rlimit_cpu", "inf", "--cap", "CAP_SYS_ADMIN", "--pass_fd", "3"]
            + python_args("/pyexec/zygote.py")
            + ["--cpu-seconds", str(cpu_seconds), "--tmp-bytes", str(TMP_BYTES),
               "--shm-bytes", str(SHM_BYTES)]
            + (["--own-user-namespace", "1"] if own_userns else []))


def wait_nsjail(pid, grace):
    """nsjail's exit code (waitstatus_to_exitcode), killing it after `grace`."""
    deadline = now() + grace
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if now() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        time.sleep(0.005)


# ------------------------------------------------------------------ the event loop

JOBS = []      # jobs whose descriptors are serviced
ZYGOTES = {}   # configuration key -> Zygote


def pump(until, timeout):
    """Service every job's and zygote's descriptors until until() or timeout."""
    deadline = now() + timeout * TIME_SCALE
    while not until():
        if now() > deadline:
            return False
        watched = {}
        for job in JOBS:
            for fd, what in job.fds.items():
                watched[fd] = (job, what)
        for zygote in ZYGOTES.values():
            for fd, what in zygote.fds.items():
                watched[fd] = (zygote, what)
        try:
            readable, _, _ = select.select(list(watched), [], [], 0.02)
        except InterruptedError:
            readable = []
        for fd in readable:
            if fd in watched:
                owner, what = watched[fd]
                owner.readable(fd, what)
        for job in JOBS:
            job.tick()
    return True


def read_pipe(fd, buffer):
    """Append what fd holds; False at end of file."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return True
    if not data:
        return False
    if len(buffer) < OUTPUT_CAP:
        buffer += data[:OUTPUT_CAP - len(buffer)]
    return True


class Zygote:
    """One zygote.py in a jail of its own, as fork::zygote::Zygote::start."""

    count = 0

    def __init__(self, tree, cfg, runner, cpu_seconds, own_userns):
        Zygote.count += 1
        self.name = f"zygote-{Zygote.count}"
        self.cgroup = JobCgroup(tree, self.name, ZYGOTE_MEMORY_BYTES, ZYGOTE_TASKS,
                                float(os.cpu_count() or 1))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        started = now()
        self.nsjail_pid, log_fd = start_nsjail(zygote_args(cfg, runner, cpu_seconds, own_userns),
                                               [theirs.fileno()], self.cgroup)
        theirs.close()
        self.control = ours
        self.fds = {ours.fileno(): "control", log_fd: "log"}
        self.log = bytearray()
        self.ready = None
        self.host_pid = None
        self.pidfd = None
        self.closed = False
        self.next_id = 0
        self.forked = {}      # fork id -> jail pid, or the failure message
        self.children = {}    # jail pid -> Job
        self.nsjail_rc = None
        ZYGOTES[(cfg, runner, cpu_seconds, own_userns)] = self
        pump(lambda: self.ready is not None or self.closed, 60)
        if self.ready is None:
            self.end()
            raise ProbeError(f"the zygote did not get ready; nsjail said: {self.log_tail()}")
        self.start_ms = (now() - started) * 1000
        self.pidfd = os.pidfd_open(self.host_pid)
        self.facts = outside_view(self.host_pid, "zygote_")
        self.facts["zygote_host_pid"] = self.host_pid
        self.facts["zygote_start_ms"] = f"{self.start_ms:.0f}"
        self.facts["zygote_cgroup_path"] = self.cgroup.path("memory")

    def log_tail(self):
        lines = self.log.decode(errors="replace").splitlines()
        return " | ".join(line for line in lines[-8:])

    def readable(self, fd, what):
        if what == "log":
            if not read_pipe(fd, self.log):
                del self.fds[fd]
                os.close(fd)
            return
        try:
            data, ancillary, _, _ = self.control.recvmsg(65536, CREDENTIALS_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        if not data:
            self.closed = True
            self.fds.pop(fd, None)
            for job in self.children.values():
                if job.exit is None:
                    job.exit = "zygote gone"
            return
        message = json.loads(data)
        kind = message.get("type")
        if kind == "ready":
            self.ready = message
            for level, ctype, payload in ancillary:
                if level == socket.SOL_SOCKET and ctype == socket.SCM_CREDENTIALS:
                    self.host_pid = struct.unpack("3i", payload[:12])[0]
        elif kind == "forked":
            self.forked[message["id"]] = message["pid"]
        elif kind == "fork_failed":
            self.forked[message.get("id")] = "fork failed: " + str(message.get("message"))
        elif kind == "exited":
            job = self.children.get(message["pid"])
            if job is not None and job.exit is None:
                if message.get("signal") is not None:
                    job.exit = f"signal {message['signal']}"
                else:
                    job.exit = f"exit {message.get('exit_code')}"

    def is_alive(self):
        return not self.closed and is_alive(self.pidfd)

    def fork(self, job, ends):
        """Ask for one child holding `ends`; returns its pid in the jail."""
        self.next_id += 1
        fork_id = self.next_id
        message = json.dumps({"type": "fork", "id": fork_id}).encode()
        self.control.setblocking(True)
        try:
            self.control.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                              array.array("i", ends))])
        finally:
            self.control.setblocking(False)
        for fd in ends:
            os.close(fd)
        pump(lambda: fork_id in self.forked or self.closed, 10)
        pid = self.forked.get(fork_id)
        if not isinstance(pid, int):
            raise ProbeError(f"the zygote did not fork: {pid or 'no answer'}")
        self.children[pid] = job
        return pid

    def end(self):
        """Close the control socket (the zygote exits), wait for nsjail, remove its cgroup."""
        try:
            self.control.close()
        except OSError:
            pass
        self.closed = True
        deadline = now() + 2
        while self.nsjail_rc is None:
            done, status = os.waitpid(self.nsjail_pid, os.WNOHANG)
            if done:
                self.nsjail_rc = os.waitstatus_to_exitcode(status)
            elif now() > deadline:
                if self.pidfd is not None:
                    try:
                        signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                    except OSError:
                        pass
                self.nsjail_rc = wait_nsjail(self.nsjail_pid, 2)
            else:
                time.sleep(0.01)
        for fd, what in list(self.fds.items()):
            if what == "log":
                while read_pipe(fd, self.log):
                    pass
                os.close(fd)
        self.fds = {}
        write_text(f"{WORK}/{self.name}.log", self.log.decode(errors="replace"))
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.cgroup.destroy()
        for key, zygote in list(ZYGOTES.items()):
            if zygote is self:
                del ZYGOTES[key]


class Job:
    """One job process and the server's end of its channel (JobChannel)."""

    def __init__(self, tree, mode, name, options):
        self.tree = tree
        self.mode = mode
        self.name = name
        self.options = options
        self.dir = f"{WORK}/run.{mode}.{name}"
        with open(f"{self.dir}/job.py") as f:
            self.script = f.read() + "\n\ndef main():\n    return {}\n"
        self.facts = {"mode": mode, "name": name, "cgroup_mode": tree.mode}
        self.buffer = b""
        self.frames = []
        self.sender_pid = None
        self.out, self.err, self.log = bytearray(), bytearray(), bytearray()
        self.fds = {}
        self.socket = None
        self.host_pid = None
        self.pidfd = None
        self.jail_pid = None
        self.nsjail_pid = None
        self.rc = None          # spawn: nsjail's exit code
        self.exit = None        # fork: the child's end as the zygote reported it
        self.zygote = None
        self.cgroup = None
        self.socket_closed = False
        self.sent_at = None
        self.killed_at = None
        self.kill_reason = None
        self.max_pids = 0
        self.finished = False
        self.closed = False

    # --- the channel -----------------------------------------------------

    def make_channel(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Before the other end leaves: the ready frame then names its sender.
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        for fd in (out_read, err_read):
            os.set_blocking(fd, False)
        self.socket = ours
        self.fds = {ours.fileno(): "socket", out_read: "out", err_read: "err"}
        return [theirs.detach(), out_write, err_write]

    def readable(self, fd, what):
        if what == "socket":
            try:
                data, ancillary, _, _ = self.socket.recvmsg(65536, CREDENTIALS_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, ancillary = b"", []
            if not data:
                self.socket_closed = True
                del self.fds[fd]
                return
            for level, ctype, payload in ancillary:
                if level == socket.SOL_SOCKET and ctype == socket.SCM_CREDENTIALS:
                    if self.sender_pid is None:
                        self.sender_pid = struct.unpack("3i", payload[:12])[0]
            self.buffer += data
            while len(self.buffer) >= 4:
                length = int.from_bytes(self.buffer[:4], "big")
                if len(self.buffer) < 4 + length:
                    break
                body, self.buffer = self.buffer[4:4 + length], self.buffer[4 + length:]
                self.frames.append(body)
            return
        buffer = {"out": self.out, "err": self.err, "log": self.log}[what]
        if not read_pipe(fd, buffer):
            del self.fds[fd]
            os.close(fd)

    def tick(self):
        """Each turn of the loop: notice nsjail's exit, sample pids.current, kill on cue."""
        if self.nsjail_pid is not None and self.rc is None:
            done, status = os.waitpid(self.nsjail_pid, os.WNOHANG)
            if done:
                self.rc = os.waitstatus_to_exitcode(status)
        if self.cgroup is not None and not self.finished:
            self.max_pids = max(self.max_pids, self.cgroup.pids_current())
        if self.sent_at is not None and self.killed_at is None and not self.answered():
            if self.options.get("kill_on_output") and self.out:
                self.kill("on its first output")
            elif "kill_after" in self.options and \
                    now() - self.sent_at > float(self.options["kill_after"]):
                self.kill(f"{self.options['kill_after']} s after the job was sent")

    def kill(self, reason):
        """Stop the job as the server does: SIGKILL its PID 1 (never nsjail)."""
        if self.killed_at is not None:
            return
        self.killed_at = now()
        self.kill_reason = reason
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except OSError:
                pass
        elif self.nsjail_pid is not None and self.rc is None:
            os.kill(self.nsjail_pid, signal.SIGKILL)

    def ended(self):
        return self.rc is not None if self.mode == "spawn" else self.exit is not None

    def ready_frame(self):
        return json.loads(self.frames[0]) if self.frames else None

    def answered(self):
        return len(self.frames) >= 2

    # --- the life of a job -----------------------------------------------

    def start(self):
        """Launch the job process and wait for its ready frame."""
        JOBS.append(self)
        self.launched_at = now()
        if self.mode == "spawn":
            self.cgroup = JobCgroup(self.tree, f"{self.mode}.{self.name}", MEMORY_BYTES,
                                    MAX_PROCESSES + 1, CPUS)  # + nsjail itself
            extra = [f for f in self.options.get("extra", "").split(",") if f]
            ends = self.make_channel()
            self.nsjail_pid, log_fd = start_nsjail(
                job_args(self.options.get("cfg", CFG), self.options.get("runner", RUNNER_DIR),
                         extra), ends, self.cgroup)
            for fd in ends:
                os.close(fd)
            self.fds[log_fd] = "log"
        else:
            self.zygote = zygote_for(self.tree, self.options)
            self.facts.update(self.zygote.facts)
            self.cgroup = JobCgroup(self.tree, f"{self.mode}.{self.name}", MEMORY_BYTES,
                                    MAX_PROCESSES, CPUS)
            ends = self.make_channel()
            self.jail_pid = self.zygote.fork(self, ends)
            self.facts["jail_pid"] = self.jail_pid
        pump(lambda: self.frames or self.socket_closed or self.ended(), 60)
        ready = self.ready_frame()
        if not ready or ready.get("type") != "ready":
            self.facts["start_failed"] = (f"first frame {self.frames[0][:300]!r}" if self.frames
                                          else "no ready frame")
            return False
        self.facts["ready_ms"] = f"{(now() - self.launched_at) * 1000:.0f}"
        self.host_pid = self.sender_pid
        self.facts["host_pid"] = self.host_pid
        self.pidfd = os.pidfd_open(self.host_pid)
        if self.mode == "fork":
            nspid = read_text(f"/proc/{self.host_pid}/status")
            nspid = next((line.split()[1:] for line in nspid.splitlines()
                          if line.startswith("NSpid:")), [])
            # As the server checks it: the pid one level below the host's is
            # the one the zygote reported.
            if len(nspid) < 2 or nspid[1] != str(self.jail_pid):
                raise ProbeError(f"the ready frame came from host pid {self.host_pid} "
                                 f"(NSpid {nspid}), not the zygote's child {self.jail_pid}")
            self.facts["before_move_cgroup_memory"] = outside_view(
                self.host_pid, "x_").get("x_cgroup_memory", "?")
            self.cgroup.adopt(self.host_pid)
        self.facts.update(outside_view(self.host_pid, "job_"))
        for controller in CONTROLLERS:
            self.facts[f"cg_path_{controller}"] = self.cgroup.path(controller)
        return True

    def send(self):
        frame = json.dumps({"type": "job", "script": self.script,
                            "max_result_bytes": MAX_RESULT_BYTES}).encode()
        self.socket.setblocking(True)
        try:
            self.socket.sendall(len(frame).to_bytes(4, "big") + frame)
        except OSError as exc:
            self.facts["send_failed"] = f"the job could not be sent: {exc}"
            return
        finally:
            self.socket.setblocking(False)
        self.sent_at = now()

    def finish(self):
        """Wait for the answer (or the end, or the timeout), then for the
        process's end, then for the pipes' end of file; record everything."""
        timeout = float(self.options.get("timeout", 30))
        if self.sent_at is not None:
            if not pump(lambda: self.answered() or self.socket_closed or self.ended(), timeout):
                self.facts["timed_out"] = f"no answer within {timeout} s"
                self.kill("timeout")
        if self.killed_at is not None:
            empty = pump(self.cgroup.is_empty, 10)
            self.facts["empty_ms"] = (f"{(now() - self.killed_at) * 1000:.0f}" if empty
                                      else "never")
            self.facts["kill_reason"] = self.kill_reason
        if not pump(self.ended, 5):
            self.facts["end"] = "not ended 5 s after its answer: killed"
            self.kill("it did not end")
            if self.mode == "spawn":
                self.rc = wait_nsjail(self.nsjail_pid, 2)
            pump(self.ended, 3)
        pump(lambda: not self.fds or list(self.fds.values()) == ["socket"], 3)
        self.finished = True
        self.facts["rc"] = self.rc
        self.facts["exit"] = self.exit
        self.facts["max_pids"] = self.max_pids
        if self.sent_at is not None:
            self.facts["run_ms"] = f"{(now() - self.sent_at) * 1000:.0f}"
        if self.zygote is not None:
            self.facts["zygote_alive_after"] = int(self.zygote.is_alive())
        self.facts.update(self.cgroup.counters())
        self.close()

    def close(self):
        """Release everything and record; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        if self in JOBS:
            JOBS.remove(self)
        if self.pidfd is not None and is_alive(self.pidfd):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        if self.nsjail_pid is not None and self.rc is None:
            self.rc = wait_nsjail(self.nsjail_pid, 2)
        for fd, what in list(self.fds.items()):
            if what != "socket":
                os.close(fd)
        self.fds = {}
        if self.socket is not None:
            self.socket.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.cgroup is not None:
            self.cgroup.destroy()
        self.record()

    def record(self):
        for name, data in (("out", self.out), ("err", self.err), ("log", self.log)):
            with open(f"{self.dir}/{name}", "wb") as f:
                f.write(data)
        answer = self.frames[1] if len(self.frames) > 1 else b""
        with open(f"{self.dir}/answer", "wb") as f:
            f.write(answer)
        with open(f"{self.dir}/facts", "w") as f:
            for key, value in self.facts.items():
                f.write(f"{key} {' | '.join(str(value).splitlines())}\n")


def zygote_for(tree, options):
    key = (options.get("cfg", CFG), options.get("runner", RUNNER_DIR),
           int(options.get("cpu", CPU_SECONDS)), options.get("userns") == "1")
    # Only the main configuration's zygote lives on; a control's is ended
    # before another starts (each holds about 100 MiB).
    for other_key, zygote in list(ZYGOTES.items()):
        if other_key != key and other_key != (CFG, RUNNER_DIR, CPU_SECONDS, False):
            zygote.end()
    zygote = ZYGOTES.get(key)
    if zygote is None or not zygote.is_alive():
        if zygote is not None:
            zygote.end()
        zygote = Zygote(tree, *key)
    return zygote


# ------------------------------------------------------------------ commands


def run(tree, options):
    job = Job(tree, options["mode"], options["name"], options)
    try:
        if job.start():
            job.send()
        job.finish()
    finally:
        job.close()


def pair(tree, options):
    """Two job processes, both ready before either job runs: in fork mode (the
    default) two children of one zygote, in spawn mode two jails. A's job runs
    first, until it prints a line HOLD (or ends); then B, which was waiting
    all along, gets its job and runs to its end; then A is stopped if it
    still runs. Records whether B and the zygote were still alive when B's
    turn came."""
    mode = options.get("mode", "fork")
    a = Job(tree, mode, options["a"], options)
    b = Job(tree, mode, options["b"], options)
    try:
        if not (a.start() and b.start()):
            raise ProbeError("a child of the pair did not get ready")
        a.send()
        pump(lambda: b"HOLD\n" in a.out or a.answered() or a.ended(), 20)
        b.facts["alive_before_job"] = int(is_alive(b.pidfd) and not b.ended())
        if b.zygote is not None:
            b.facts["zygote_alive_before_job"] = int(b.zygote.is_alive())
        b.send()
        b.finish()
        if not a.answered():
            a.kill("after the other child's job")
        a.finish()
    finally:
        a.close()
        b.close()


def end_all():
    for job in list(JOBS):
        try:
            job.close()
        except Exception:
            pass
    for zygote in list(ZYGOTES.values()):
        try:
            zygote.end()
        except Exception:
            pass


def main():
    # A process group of its own: a terminal's Ctrl-C reaches the probe's
    # shell only, which then stops this process with SIGTERM, and this one
    # stops its jobs as the server does (never nsjail before its child).
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log = open(f"{WORK}/driver.log", "a")
    reply = sys.stdout
    tree = None
    try:
        try:
            tree = CgroupTree()
        except ProbeError as exc:
            print(f"error {exc}", file=reply, flush=True)
            return
        print(f"ready {tree.mode}", file=reply, flush=True)
        for line in sys.stdin:
            words = shlex.split(line)
            if not words:
                continue
            if words[0] == "quit":
                break
            options = dict(w.split("=", 1) for w in words[1:])
            try:
                {"run": run, "pair": pair}[words[0]](tree, options)
                answer = "done"
            except Exception as exc:
                traceback.print_exc(file=log)
                log.flush()
                answer = f"error {type(exc).__name__}: {exc}"
            print(" ".join(answer.splitlines()), file=reply, flush=True)
    finally:
        # Also when the probe's shell is gone (end of input): nothing is left.
        end_all()
        if tree is not None:
            tree.remove()


if __name__ == "__main__":
    main()
