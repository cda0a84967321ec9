"""Tests for pyexec_runner/fds.py: what the script's stdout and stderr capture,
and which descriptors a script can reach (the job socket only on a private
fd, never the server's log).

Through the real runner (runner_harness.py). Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import unittest

from runner_harness import TIMEOUT, dedent, run_script, start_worker


class OutputCaptureTest(unittest.TestCase):

    def test_python_fd_and_c_level_output_is_captured(self):
        finished = run_script(self, dedent("""
            import ctypes, os, sys
            import numpy
            print("print to stdout")
            os.write(1, b"os.write to fd 1\\n")
            libc = ctypes.CDLL(None)
            # -u leaves C stdio unbuffered; buffer it like a C extension might
            # see it, so only the runner's fflush at the end can deliver this.
            buffer = ctypes.create_string_buffer(4096)
            libc.setvbuf(ctypes.c_void_p.in_dll(libc, "stdout"), buffer, 0, 4096)
            libc.printf(b"printf from C\\n")
            print(numpy.arange(3))
            print("print to stderr", file=sys.stderr)
            os.write(2, b"os.write to fd 2\\n")
            def main():
                print("inside main")
                return {}
        """))
        self.assertEqual(finished.frame, {"type": "result", "result": {}})
        self.assertEqual(finished.stdout.decode(),
                         "print to stdout\nos.write to fd 1\n[0 1 2]\ninside main\n"
                         "printf from C\n")
        self.assertEqual(finished.stderr.decode(), "print to stderr\nos.write to fd 2\n")
        self.assertEqual(finished.log, b"")

    def test_pipes_reach_eof_when_the_frame_arrives(self):
        worker = start_worker(self)
        worker.send_job("import time\ndef main():\n    print('hi')\n    return {}\n")
        worker.read_frame()
        # The runner dropped the pipes before sending: EOF must follow at once.
        for thread, _ in (worker.out, worker.err):
            thread.join(5)
            self.assertFalse(thread.is_alive())
        self.assertEqual(worker.out[1]["data"], b"hi\n")
        worker.proc.wait(TIMEOUT)
        worker.sock.close()

    def test_output_survives_the_script_sabotaging_stdio(self):
        finished = run_script(self, dedent("""
            import io, os, sys
            print("before")
            sys.stdout = io.StringIO()
            sys.stderr = None
            def main():
                os.close(1)
                os.close(2)
                return {"ok": True}
        """))
        self.assertEqual(finished.frame["result"], {"ok": True})
        self.assertEqual(finished.stdout, b"before\n")


class ReachTest(unittest.TestCase):

    def test_script_writing_junk_to_fd_3_cannot_confuse_the_runner(self):
        finished = run_script(self, dedent("""
            import os
            try:
                os.write(3, b"junk")
            except OSError as exc:
                wrote = str(exc)
            def main():
                return {"wrote": wrote}
        """))
        self.assertEqual(finished.frame["result"], {"wrote": "[Errno 9] Bad file descriptor"})

    def test_script_cannot_reach_the_log_pipe(self):
        # Every pipe the script can find gets a marker: only stdout and stderr
        # may carry it, never the server's log (issue 9: 300 MiB went there).
        finished = run_script(self, dedent("""
            import os, stat
            def main():
                for fd in range(256):
                    try:
                        if stat.S_ISFIFO(os.fstat(fd).st_mode):
                            os.write(fd, b"leak %d\\n" % fd)
                    except OSError:
                        pass
                return {}
        """))
        self.assertEqual(finished.frame, {"type": "result", "result": {}})
        self.assertEqual(finished.log, b"")
        self.assertEqual((finished.stdout, finished.stderr), (b"leak 1\n", b"leak 2\n"))
