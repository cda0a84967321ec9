"""Tests for python/zygote.py: reaping survives every status, and a job child
carries nothing of the zygote's loop.

The reaping tests need nothing special. ZygoteChildTest runs the real
zygote.py outside any jail and plays the server's part over its control
socket; it needs root (the zygote unshares a pid namespace for each child,
which builds its own namespaces) and is skipped otherwise. The jail-policy
tests (`make test-jail`: cargo test -p pyexec-worker --features test-support
--test jail_policy) check the same inside the real jail.
"""

import array
import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

from pyexec_runner import protocol
import zygote

HERE = os.path.dirname(os.path.abspath(__file__))


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def state_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


class ReapTest(unittest.TestCase):
    def fork_sleeper(self):
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        self.addCleanup(self.kill_quietly, pid)
        return pid

    @staticmethod
    def kill_quietly(pid):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def test_a_stopped_or_continued_child_is_not_an_end(self):
        pid = self.fork_sleeper()
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: state_of(pid) == "T")
        self.assertEqual(list(zygote.reap_children()), [])
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda: state_of(pid) != "T")
        self.assertEqual(list(zygote.reap_children()), [])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: state_of(pid) == "Z")
        self.assertEqual(list(zygote.reap_children()), [(pid, None, signal.SIGKILL)])

    def test_an_exit_code_and_no_children_at_all(self):
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        wait_until(lambda: state_of(pid) == "Z")
        self.assertEqual(list(zygote.reap_children()), [(pid, 3, None)])
        self.assertEqual(list(zygote.reap_children()), [])

    def test_the_zygote_reports_each_end_to_the_server(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        stopped = self.fork_sleeper()
        os.kill(stopped, signal.SIGSTOP)
        wait_until(lambda: state_of(stopped) == "T")
        ended = os.fork()
        if ended == 0:
            os._exit(5)
        wait_until(lambda: state_of(ended) == "Z")
        fake = type("Fake", (), {"control": theirs})()
        zygote.Zygote.reap(fake)
        self.assertEqual(json.loads(ours.recv(1024)),
                         {"type": "exited", "pid": ended, "exit_code": 5, "signal": None})
        ours.setblocking(False)
        with self.assertRaises(BlockingIOError):
            ours.recv(1024)


# Run as a job by the real zygote: what it can see of the zygote.
RESIDUE_SCRIPT = r'''
import gc, os, resource, socket, sys
main_module = sys.modules.get("__main__")
zygote_file = getattr(main_module, "__file__", "?")
frames = []
f = sys._getframe()
while f is not None:
    if f.f_code.co_filename == zygote_file:
        frames.append(f.f_code.co_name)
    f = f.f_back
kinds = tuple(t for t in (getattr(main_module, "Zygote", None),
                          getattr(main_module, "JobChild", None)) if isinstance(t, type))
found = set()
for o in gc.get_objects():
    try:
        if kinds and isinstance(o, kinds):
            found.add(type(o).__name__)
        elif isinstance(o, dict) and o.get("type") == "fork":
            found.add("fork request")
        elif isinstance(o, socket.socket) and o.type == socket.SOCK_SEQPACKET:
            found.add("control socket")
    except Exception:
        pass

def main():
    return {"frames": frames, "found": sorted(found), "uid": os.getuid(),
            "sigpending": resource.getrlimit(resource.RLIMIT_SIGPENDING)[0]}
'''


@unittest.skipUnless(os.geteuid() == 0, "the zygote needs root outside a jail")
class ZygoteChildTest(unittest.TestCase):
    settings = ["--cpu-seconds", "60"]

    def setUp(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = ours
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-B", os.path.join(HERE, "zygote.py")] + self.settings,
            pass_fds=[zygote.CONTROL_FD],  # kept open after preexec_fn moved it there
            preexec_fn=lambda: os.dup2(theirs.fileno(), zygote.CONTROL_FD),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        theirs.close()
        self.addCleanup(self.stop)
        ready = json.loads(self.control.recv(65536))
        self.assertEqual(ready["type"], "ready")

    def stop(self):
        self.control.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()

    def run_job(self, script):
        job_ours, job_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        self.control.sendmsg([json.dumps({"type": "fork", "id": 41}).encode()],
                             [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               array.array("i", [job_theirs.fileno(), out_write, err_write]))])
        for fd in (out_write, err_write):
            os.close(fd)
        job_theirs.close()
        forked = json.loads(self.control.recv(65536))
        self.assertEqual(forked["type"], "forked", forked)
        self.assertEqual(json.loads(self.read_frame(job_ours))["type"], "ready")
        frame = json.dumps({"type": "job", "script": script,
                            "max_result_bytes": 1 << 20}).encode()
        job_ours.sendall(len(frame).to_bytes(4, "big") + frame)
        answer = json.loads(self.read_frame(job_ours))
        for fd in (out_read, err_read):
            os.close(fd)
        job_ours.close()
        return answer

    @staticmethod
    def read_frame(sock):
        header = protocol._read_exactly(sock.fileno(), 4)
        return protocol._read_exactly(sock.fileno(), int.from_bytes(header, "big"))

    def test_a_job_finds_no_frame_or_object_of_the_zygotes_loop(self):
        answer = self.run_job(RESIDUE_SCRIPT)
        self.assertEqual(answer["type"], "result", answer)
        self.assertEqual(answer["result"]["frames"], ["<module>"])
        self.assertEqual(answer["result"]["found"], [])
        self.assertEqual(answer["result"]["uid"], 0)  # the zygote's, here root
        self.assertEqual(answer["result"]["sigpending"], 256)

    def test_the_zygote_survives_a_stopped_child_and_reports_its_end(self):
        self.run_job("def main():\n    return {}\n")
        exited = json.loads(self.control.recv(65536))
        self.assertEqual(exited["type"], "exited")
        self.assertEqual(exited["exit_code"], 0)
        hold = "import time\ndef main():\n    time.sleep(60)\n"
        job_ours, job_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_read, out_write = os.pipe()
        self.control.sendmsg([b'{"type":"fork","id":42}'],
                             [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               array.array("i", [job_theirs.fileno(), out_write, out_write]))])
        job_theirs.close()
        os.close(out_write)
        self.addCleanup(os.close, out_read)
        self.addCleanup(job_ours.close)
        self.assertEqual(json.loads(self.control.recv(65536))["type"], "forked")
        self.read_frame(job_ours)
        job_ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        frame = json.dumps({"type": "job", "script": hold, "max_result_bytes": 1024}).encode()
        job_ours.sendall(len(frame).to_bytes(4, "big") + frame)
        child = self.host_pid_of_zygote_child()
        os.kill(child, signal.SIGSTOP)
        wait_until(lambda: state_of(child) == "T")
        os.kill(child, signal.SIGCONT)
        os.kill(child, signal.SIGKILL)
        exited = json.loads(self.control.recv(65536))
        self.assertEqual((exited["type"], exited["signal"]), ("exited", signal.SIGKILL))
        self.assertIsNone(self.process.poll(), "the zygote is still running")

    def host_pid_of_zygote_child(self):
        with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
            children = [int(p) for p in f.read().split()]
        self.assertEqual(len(children), 1)
        return children[0]


class OwnUserNamespaceTest(ZygoteChildTest):
    """The same, with each child in a user namespace of its own."""

    settings = ["--cpu-seconds", "60", "--own-user-namespace", "1"]

    def test_a_job_finds_no_frame_or_object_of_the_zygotes_loop(self):
        answer = self.run_job(RESIDUE_SCRIPT)
        self.assertEqual(answer["type"], "result", answer)
        self.assertEqual(answer["result"]["found"], [])
        # No id map in its own namespace: the overflow uid.
        self.assertEqual(answer["result"]["uid"], 65534)


if __name__ == "__main__":
    unittest.main()
