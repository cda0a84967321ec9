"""Tests of zygote.py's fork path: the real zygote process, its control loop
on a SOCK_SEQPACKET socket on fd 3 as the server drives it, forking job
children that serve real jobs through the runner. No nsjail.

- `UnprivilegedForkTest` needs no privilege: the calls that need
  CAP_SYS_ADMIN (confine.unshare/setns, enter_fresh_sandbox) and the seal
  are no-ops there, so a child is an ordinary process of this pid namespace.
- `NamespacedForkTest` changes nothing: the zygote runs as PID 1 of a new
  user and pid namespace (util-linux `unshare`, as nsjail would start it),
  and each child builds its own namespaces and seals itself. Skipped where
  user namespaces are not allowed.

Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import array
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = sys.executable
TIMEOUT = 60  # the zygote's warm-up imports numpy and pandas
FLAGS = ["-I", "-X", "utf8", "-B", "-u"]

# Started with `python -c`: zygote.py run as __main__ (a forked child
# continues at its top level) with the sandbox calls replaced.
WITHOUT_PRIVILEGE = f"""
import runpy, sys
sys.path.insert(0, {HERE!r})
import confine
confine.unshare = confine.setns = lambda *args, **kwargs: None
confine.enter_fresh_sandbox = confine.seal = lambda *args, **kwargs: None
sys.argv = ["zygote.py"]
runpy.run_path({os.path.join(HERE, "zygote.py")!r}, run_name="__main__")
"""


class Zygote:
    """One zygote process, with the server's end of its control socket."""

    def __init__(self, command, env):
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control.settimeout(TIMEOUT)
        log_r, log_w = os.pipe()

        def control_on_fd_3():  # in the child, between fork and exec
            os.dup2(fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD_CLOEXEC, 100), 3)

        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_w,
            close_fds=False, preexec_fn=control_on_fd_3, cwd="/", env=env)
        theirs.close()
        os.close(log_w)
        self.log = b""
        self.log_reader = threading.Thread(target=self._read_log, args=(log_r,), daemon=True)
        self.log_reader.start()

    def _read_log(self, fd):
        with os.fdopen(fd, "rb") as pipe:
            self.log = pipe.read()

    def receive(self):
        data = self.control.recv(65536)
        if not data:
            raise AssertionError(f"the zygote closed its control socket; its log: {self.log!r}")
        return json.loads(data)

    def fork(self, job_id, fd_count=3, data=None):
        """Ask for one job child; returns the server's ends (job socket,
        stdout pipe, stderr pipe) of the descriptors it was sent."""
        job, job_theirs = socket.socketpair()
        job.settimeout(TIMEOUT)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        theirs = [job_theirs.fileno(), out_w, err_w][:fd_count]
        if data is None:
            data = json.dumps({"type": "fork", "id": job_id}).encode()
        self.control.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", theirs))])
        job_theirs.close()
        os.close(out_w)
        os.close(err_w)
        return Child(job, out_r, err_r)

    def close(self):
        """Close the control socket (the zygote then ends); its exit code."""
        self.control.close()
        try:
            return self.proc.wait(TIMEOUT)
        finally:
            self.log_reader.join(TIMEOUT)


class Child:
    """The server's end of one job child: its job socket and output pipes."""

    def __init__(self, job, out_r, err_r):
        self.job, self.out_r, self.err_r = job, out_r, err_r

    def read_frame(self):
        header = self._recv_exactly(4)
        if not header:
            return None
        return json.loads(self._recv_exactly(struct.unpack(">I", header)[0]))

    def _recv_exactly(self, count):
        data = b""
        while len(data) < count:
            chunk = self.job.recv(count - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def send_job(self, script):
        body = json.dumps({"type": "job", "script": script, "max_result_bytes": 1 << 20,
                           "max_files": 0, "max_files_bytes": 0}).encode()
        self.job.sendall(struct.pack(">I", len(body)) + body)

    def stdout(self):
        with os.fdopen(self.out_r, "rb") as pipe:
            self.out_r = None
            return pipe.read()

    def close(self):
        self.job.close()
        for fd in (self.out_r, self.err_r):
            if fd is not None:
                os.close(fd)


class ForkPathTest:
    """What both variants check; each starts its own zygote in setUpClass."""

    zygote = None

    @classmethod
    def start(cls, command, env):
        cls.command = command
        cls.env = dict(env, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        cls.zygote = Zygote(cls.command, cls.env)
        cls.ready = cls.zygote.receive()

    @classmethod
    def tearDownClass(cls):
        if cls.zygote is not None:
            cls.zygote.close()

    def started(self, job_id):
        """Fork a child and see its "forked" answer and its "ready" frame."""
        child = self.zygote.fork(job_id)
        self.addCleanup(child.close)
        forked = self.zygote.receive()
        self.assertEqual(set(forked), {"type", "id", "pid"}, forked)
        self.assertEqual((forked["type"], forked["id"]), ("forked", job_id))
        self.assertEqual(child.read_frame(), self.ready)
        return child, forked["pid"]

    def exited(self, pid):
        message = self.zygote.receive()
        self.assertEqual((message["type"], message["pid"]), ("exited", pid), message)
        return message

    def test_ready_reports_the_versions(self):
        self.assertEqual(set(self.ready), {"type", "python", "numpy", "pandas"})
        self.assertEqual(self.ready["type"], "ready")

    def test_a_child_serves_one_job_then_is_reported_exited(self):
        child, pid = self.started(1)
        child.send_job(self.JOB)
        answer = child.read_frame()
        self.assertEqual(answer["type"], "result", answer)
        self.check_answer(answer["result"], pid)
        self.assertEqual(child.stdout(), b"hello from the child\n")
        self.assertEqual(self.exited(pid), {"type": "exited", "pid": pid, "exit_code": 0,
                                            "signal": None})


class UnprivilegedForkTest(ForkPathTest, unittest.TestCase):

    JOB = ("import os\n"
           "print('hello from the child')\n"
           "def main():\n"
           "    return {'pid': os.getpid(), 'ppid': os.getppid(), 'sid': os.getsid(0)}\n")

    @classmethod
    def setUpClass(cls):
        cls.outputs = tempfile.mkdtemp(prefix="pyexec-zygote-outputs-")
        os.rmdir(cls.outputs)  # each job creates it; the jobs here leave nothing in it
        cls.start([PYTHON, *FLAGS, "-c", WITHOUT_PRIVILEGE], {"PYEXEC_OUTPUTS_DIR": cls.outputs})

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.outputs, ignore_errors=True)

    def check_answer(self, result, pid):
        self.assertEqual(result["pid"], pid)
        self.assertEqual(result["ppid"], self.zygote.proc.pid)

    def test_a_killed_child_is_reported_with_its_signal(self):
        child, pid = self.started(2)
        os.kill(pid, signal.SIGKILL)
        self.assertEqual(self.exited(pid), {"type": "exited", "pid": pid, "exit_code": None,
                                            "signal": 9})

    def test_a_child_whose_server_hangs_up_exits_quietly(self):
        child, pid = self.started(3)
        child.job.close()
        self.assertEqual(self.exited(pid)["exit_code"], 0)

    def test_a_malformed_request_fails_and_the_zygote_lives_on(self):
        for data, fd_count in [(b"not json", 3), (b'{"type":"fork"}', 3),
                               (b'{"type":"fork","id":4}', 2)]:
            with self.subTest(data=data, fds=fd_count):
                child = self.zygote.fork(4, fd_count, data)
                self.addCleanup(child.close)
                failed = self.zygote.receive()
                self.assertEqual(failed["type"], "fork_failed", failed)
                self.assertIsNone(failed["id"])
                self.assertIsInstance(failed["message"], str)
                # Nobody holds the other end of the job socket any more.
                self.assertEqual(child.job.recv(1), b"")
        child, pid = self.started(5)
        child.job.close()
        self.assertEqual(self.exited(pid)["exit_code"], 0)

    def test_closing_the_control_socket_ends_the_zygote(self):
        zygote = Zygote(self.command, self.env)
        self.assertEqual(zygote.receive()["type"], "ready")
        self.assertEqual(zygote.close(), 0, zygote.log)


UNSHARE = [shutil.which("unshare") or "unshare", "--user", "--map-root-user", "--pid", "--fork"]


def user_namespaces_work():
    try:
        return subprocess.run([*UNSHARE, "true"], timeout=TIMEOUT,
                              capture_output=True).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@unittest.skipUnless(user_namespaces_work(), "no user namespaces here (unshare --user failed)")
class NamespacedForkTest(ForkPathTest, unittest.TestCase):

    JOB = ("import os\n"
           "print('hello from the child')\n"
           "def main():\n"
           "    with open('/proc/self/status') as f:\n"
           "        status = dict(line.split(':\\t', 1) for line in f.read().splitlines())\n"
           "    return {'pid': os.getpid(), 'tmp': sorted(os.listdir('/tmp')),\n"
           "            'cwd': os.getcwd(), 'sid': os.getsid(0),\n"
           "            'sealed': [status[k].strip() for k in ('NoNewPrivs', 'Seccomp', 'CapEff')]}\n")

    @classmethod
    def setUpClass(cls):
        cls.start([*UNSHARE, PYTHON, *FLAGS, os.path.join(HERE, "zygote.py")], {})

    def check_answer(self, result, pid):
        # PID 1 of a pid namespace of its own, in a session of its own, on a
        # fresh /tmp holding only the runner's outputs folder, sealed: no_new_privs,
        # a seccomp filter, no capability.
        self.assertEqual(result, {"pid": 1, "tmp": ["outputs"], "cwd": "/tmp", "sid": 1,
                                  "sealed": ["1", "2", "0000000000000000"]})
        self.assertGreater(pid, 1)  # the zygote, PID 1 of its own namespace, forked it


if __name__ == "__main__":
    unittest.main()
