"""The fork-mode zygote: one warm interpreter per jail that forks job processes.

nsjail runs this file (with CAP_SYS_ADMIN kept inside the jail's own user
namespace) instead of runner.py. It imports numpy and pandas once, through
the runner's own warm-up, and then only ever forks: it never runs a script.

Each job child is a sandbox of its own before the server sees it: PID 1 of a
new pid namespace, its own mount/IPC/network namespaces, session and fresh
tmpfs mounts, and with --own-user-namespace 1 a user namespace of its own
(confine.enter_fresh_sandbox), every descriptor closed but its
job socket and output pipes, numpy's global RNG reseeded, then sealed
(confine.seal: no capabilities, no_new_privs, the job's seccomp filter, its
own RLIMIT_CPU). Then it runs runner.serve, exactly as a spawn-mode worker
does: the server learns its host pid from the credentials on its "ready"
frame, moves it into the job's own cgroup, and sends the one job.

Control protocol on fd 3, a SOCK_SEQPACKET socket to the server: one JSON
object per message, descriptors in SCM_RIGHTS.

    zygote -> server  {"type":"ready","python":..,"numpy":..,"pandas":..}
    server -> zygote  {"type":"fork","id":N}  + SCM_RIGHTS [job socket, stdout, stderr]
    zygote -> server  {"type":"forked","id":N,"pid":P}   P: the child's pid in the jail
                      {"type":"fork_failed","id":N,"message":"..."}
    zygote -> server  {"type":"exited","pid":P,"exit_code":C,"signal":S}  when reaped

The zygote exits when the server closes the control socket; as PID 1 of the
jail's pid namespace its end takes every job child with it.

A forked child leaves the zygote's call stack before it becomes a job: it
raises JobChild, which unwinds every frame of the zygote's loop (and with
them the request, the Zygote, its sockets and the server's fork counter) up
to the module's top level, which then builds the sandbox and serves the job.
So a script walking sys._getframe() or gc.get_objects() finds nothing of
the zygote's state.
"""

import array
import fcntl
import gc
import json
import os
import select
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import confine  # noqa: E402
import runner  # noqa: E402

CONTROL_FD = 3
MAX_CONTROL_MESSAGE = 64 * 1024
JOB_FDS_PER_FORK = 3
EXIT_SANDBOX_FAILED = 4


def parse_settings(argv):
    """`--name value` pairs: cpu-seconds, tmp-bytes, shm-bytes, and
    own-user-namespace (1: each child makes a user namespace of its own, for
    per-job kernel budgets; its ids read 65534 unless the server writes its
    id map, see confine.enter_fresh_sandbox)."""
    settings = {"cpu-seconds": 11, "tmp-bytes": 64 << 20, "shm-bytes": 16 << 20,
                "own-user-namespace": 0}
    args = list(argv)
    while args:
        name = args.pop(0)
        if not name.startswith("--") or name[2:] not in settings or not args:
            raise SystemExit(f"zygote: bad argument {name!r}")
        settings[name[2:]] = int(args.pop(0))
    return settings


def send(control, message):
    control.send(json.dumps(message, separators=(",", ":")).encode())


# ------------------------------------------------------------- a job child


class JobChild(BaseException):
    """Raised in a just-forked child to leave the zygote's frames; carries
    only what the job needs. A BaseException: no handler of the zygote's
    loop catches it on its way up."""

    def __init__(self, job_fds, settings, ready_frame):
        super().__init__()
        self.job = (job_fds, settings, ready_frame)


def become_job(job_fds, settings):
    """Runs in the forked child, from the module's top level once the
    zygote's frames are gone: build its sandbox and seal it. Exits if that
    fails."""
    job_socket = job_fds[0]
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # The zygote's objects are unreachable now; collect them before the
        # script can look (their descriptors are closed by arrange_job_fds).
        gc.collect()
        confine.enter_fresh_sandbox(settings["tmp-bytes"], settings["shm-bytes"],
                                    own_user_namespace=bool(settings["own-user-namespace"]))
        arrange_job_fds(job_fds)
        job_socket = runner.JOB_FD
        reseed_numpy()
        confine.seal(settings["cpu-seconds"])
    except BaseException as exc:
        message = f"the job sandbox could not be built: {runner.exception_line(exc)}"
        try:
            runner.send_frame(job_socket, runner.error_frame("internal", message))
        finally:
            os._exit(EXIT_SANDBOX_FAILED)


def arrange_job_fds(job_fds):
    """0-2 on /dev/null, the job socket and pipes on 3-5, everything else
    closed (the zygote's control socket, its pidfd and wakeup pipe among them).

    The received descriptors may sit anywhere, 3-5 included: lift them above
    that range first so that no dup2 clobbers one still to be moved.
    """
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in job_fds]
    devnull = os.open("/dev/null", os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    for source, target in zip(high, (runner.JOB_FD, runner.STDOUT_PIPE_FD,
                                     runner.STDERR_PIPE_FD)):
        os.dup2(source, target)
    os.closerange(runner.STDERR_PIPE_FD + 1, runner.MAX_FD)


def reseed_numpy():
    """numpy's global RNG would otherwise repeat the zygote's sequence in every
    job (Python's own `random` reseeds itself after a fork; numpy doesn't)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(numpy.frombuffer(os.urandom(32), dtype=numpy.uint32))


# ------------------------------------------------------------- the zygote


class Zygote:
    def __init__(self, control, settings, ready):
        self.control = control
        self.settings = settings
        self.ready = ready
        self.ready_frame = runner.encode_frame(ready)
        self.in_child = False
        self.self_pidfd = os.pidfd_open(os.getpid())
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        # A handler (not SIG_DFL) so SIGCHLD reaches the wakeup fd.
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def run(self):
        send(self.control, {"type": "ready", **{k: self.ready[k] for k in
                                                ("python", "numpy", "pandas")}})
        poller = select.poll()
        poller.register(self.control.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self.wake_r:
                    self.drain_wakeups()
                elif not self.handle_control_message():
                    return
            self.reap()

    def drain_wakeups(self):
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def handle_control_message(self):
        """False once the server has closed the control socket."""
        fds = array.array("i")
        try:
            data, ancillary, _, _ = self.control.recvmsg(
                MAX_CONTROL_MESSAGE, socket.CMSG_SPACE(JOB_FDS_PER_FORK * fds.itemsize))
        except InterruptedError:
            return True
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        if not data:
            return False
        try:
            request = json.loads(data)
            if request.get("type") != "fork" or len(fds) != JOB_FDS_PER_FORK:
                raise ValueError(f"unexpected control message {data[:200]!r}")
            job_id = request["id"]
        except (ValueError, KeyError, AttributeError) as exc:
            for fd in fds:
                os.close(fd)
            send(self.control, {"type": "fork_failed", "id": None, "message": str(exc)})
            return True
        try:
            pid = self.fork_job(list(fds))
        except OSError as exc:
            send(self.control, {"type": "fork_failed", "id": job_id,
                                "message": runner.exception_line(exc)})
        else:
            send(self.control, {"type": "forked", "id": job_id, "pid": pid})
        finally:
            if not self.in_child:  # the child keeps them: they are its job's
                for fd in fds:
                    os.close(fd)
        return True

    def fork_job(self, job_fds):
        """Fork one job child as PID 1 of a new pid namespace; return its pid.

        unshare(CLONE_NEWPID) only changes where this process's *next* child
        goes, so the zygote forks once and at once returns its children's
        namespace to its own (setns on its own pidfd) for the next fork.
        """
        confine.unshare(confine.CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            confine.setns(self.self_pidfd, confine.CLONE_NEWPID)
            raise
        if pid == 0:
            self.in_child = True
            raise JobChild(job_fds, self.settings, self.ready_frame)
        confine.setns(self.self_pidfd, confine.CLONE_NEWPID)
        return pid

    def reap(self):
        for pid, exit_code, signal_number in reap_children():
            send(self.control, {"type": "exited", "pid": pid, "exit_code": exit_code,
                                "signal": signal_number})


def reap_children():
    """(pid, exit code or None, signal or None) of every child that has ended.

    waitid with WEXITED only: a child that was stopped or continued is not
    reported (and is not an end), so no status can surprise the zygote.
    """
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return
        if info is None or info.si_pid == 0:
            return
        if info.si_code == os.CLD_EXITED:
            yield info.si_pid, info.si_status, None
        else:  # CLD_KILLED or CLD_DUMPED
            yield info.si_pid, None, info.si_status


def main():
    """The zygote's life. Returns only in a forked child, with the zygote's
    frames gone: (job descriptors, settings, ready frame)."""
    settings = parse_settings(sys.argv[1:])
    control = socket.socket(fileno=CONTROL_FD)
    ready = runner.warm_up()
    try:
        Zygote(control, settings, ready).run()
    except JobChild as child:
        # Forget the zygote's socket object without closing its fd: closing
        # is left to arrange_job_fds, so no later garbage collection can
        # close a descriptor number the job has reused by then.
        control.detach()
        return child.job
    return None


if __name__ == "__main__":
    _job = main()
    if _job is not None:
        _job_fds, _settings, _ready_frame = _job
        del _job
        become_job(_job_fds, _settings)
        runner.serve(_ready_frame)  # the job's only frames: this module's, then serve's
