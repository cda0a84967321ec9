"""Tests of zygote.py against python/zygote_protocol_examples.json, the
control messages the Rust side (worker/src/modes/fork/protocol.rs) round-trips.

zygote.py's own code writes every message here: a real Zygote on one end of
a SOCK_SEQPACKET socketpair, the test on the other, as the server would be.
Only the fork itself is replaced (a fork needs a new pid namespace, which
test_zygote_fork.py covers); the exit reports come from real children.

Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import array
import errno
import json
import os
import signal
import socket
import unittest

import zygote

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "zygote_protocol_examples.json")
TIMEOUT = 20


def load_examples():
    with open(EXAMPLES, encoding="utf-8") as f:
        return json.load(f)


def example(kind, **fields):
    """The first example message of this type whose fields match."""
    for message in load_examples()["from_zygote"]:
        if message["type"] == kind and all(message[k] == v for k, v in fields.items()):
            return message
    raise LookupError(f"no {kind} example with {fields}")


def shape(message):
    """Each key and its value's JSON type: what two messages of one shape share."""
    return {key: type(value).__name__ for key, value in message.items()}


class ZygoteMessagesTest(unittest.TestCase):

    def setUp(self):
        self.server, control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.server.settimeout(TIMEOUT)
        self.addCleanup(self.server.close)
        self.addCleanup(control.close)
        ready = dict(example("ready"))
        # The Zygote takes over the process's wakeup fd and SIGCHLD handler.
        previous = signal.getsignal(signal.SIGCHLD)
        self.zygote = zygote.Zygote(control, {"cpu-seconds": 1, "tmp-bytes": 1, "shm-bytes": 1},
                                    ready)
        self.addCleanup(signal.signal, signal.SIGCHLD, previous)
        self.addCleanup(signal.set_wakeup_fd, -1)
        for fd in (self.zygote.self_pidfd, self.zygote.wake_r, self.zygote.wake_w):
            self.addCleanup(os.close, fd)

    def received(self):
        data = self.server.recv(zygote.MAX_CONTROL_MESSAGE)
        # Compact JSON, as the examples are written on the wire.
        message = json.loads(data)
        self.assertEqual(data, json.dumps(message, separators=(",", ":")).encode())
        return message

    def send_request(self, data, fd_count=zygote.JOB_FDS_PER_FORK):
        """Send a control message with fd_count descriptors: our ends of
        pipes, so the test can tell when the zygote has closed its copies."""
        ours, theirs = [], []
        for _ in range(fd_count):
            read_end, write_end = os.pipe2(os.O_NONBLOCK)
            ours.append(read_end)
            theirs.append(write_end)
        fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", theirs))] if theirs else []
        self.server.sendmsg([data], fds)
        for fd in theirs:
            os.close(fd)
        for fd in ours:
            self.addCleanup(os.close, fd)
        return ours

    def assert_all_closed(self, read_ends):
        """The zygote holds none of the descriptors it was sent: each pipe has
        no writer left (a pipe with one would have nothing to read yet)."""
        for fd in read_ends:
            try:
                self.assertEqual(os.read(fd, 1), b"")
            except BlockingIOError:
                self.fail("the zygote still holds a descriptor it was sent")

    def test_ready_is_the_first_message(self):
        self.server.shutdown(socket.SHUT_WR)  # run() then ends at once
        self.zygote.run()
        self.assertEqual(self.received(), example("ready"))

    def test_the_fork_request_example_is_decoded_and_answered_forked(self):
        request = load_examples()["to_zygote"][0]
        handed = []

        def fork_job(job_fds):
            handed.append(len(job_fds))
            return example("forked")["pid"]

        self.zygote.fork_job = fork_job
        pipes = self.send_request(json.dumps(request).encode())
        self.assertTrue(self.zygote.handle_control_message())
        self.assertEqual(handed, [zygote.JOB_FDS_PER_FORK])
        self.assertEqual(self.received(), example("forked", id=request["id"]))
        self.assert_all_closed(pipes)

    def test_a_failed_fork_answers_fork_failed_with_the_id(self):
        def fork_job(job_fds):
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

        self.zygote.fork_job = fork_job
        pipes = self.send_request(b'{"type":"fork","id":7}')
        self.assertTrue(self.zygote.handle_control_message())
        message = self.received()
        expected = example("fork_failed", id=7)
        self.assertEqual(shape(message), shape(expected))
        self.assertEqual(message["id"], 7)
        self.assertTrue(message["message"].endswith(expected["message"]), message)
        self.assert_all_closed(pipes)

    def test_a_malformed_request_answers_fork_failed_without_an_id(self):
        self.zygote.fork_job = lambda job_fds: self.fail("a malformed request forked")
        expected = example("fork_failed", id=None)
        for data, fd_count in [(b"not json", 3), (b'{"type":"fork"}', 3),
                               (b'{"type":"fork","id":8}', 2), (b'{"type":"exec","id":8}', 3),
                               (b"[1]", 0)]:
            with self.subTest(data=data, fds=fd_count):
                pipes = self.send_request(data, fd_count)
                self.assertTrue(self.zygote.handle_control_message())
                message = self.received()
                self.assertEqual(shape(message), shape(expected))
                self.assertIsNone(message["id"])
                self.assert_all_closed(pipes)

    def test_each_reaped_child_is_reported_exited(self):
        exits = os.fork()
        if exits == 0:
            os._exit(0)
        killed = os.fork()
        if killed == 0:
            signal.pause()
            os._exit(1)
        os.kill(killed, signal.SIGKILL)
        for pid in (exits, killed):  # both dead, neither reaped yet
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        self.zygote.reap()
        reported = {}
        while len(reported) < 2:
            message = self.received()
            reported[message["pid"]] = message
        self.assertEqual(reported[exits], dict(example("exited", signal=None), pid=exits))
        self.assertEqual(reported[killed], dict(example("exited", signal=9), pid=killed))


if __name__ == "__main__":
    unittest.main()
