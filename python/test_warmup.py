"""Tests for pyexec_runner/warmup.py: the ready frame a warm runner sends, and
a warm-up that fails.

Through the real runner (runner_harness.py). Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import os
import platform
import subprocess
import unittest
from importlib import metadata

from runner_harness import PYTHON, RUNNER, TIMEOUT, Worker


class WarmUpTest(unittest.TestCase):

    def test_ready_frame_reports_versions(self):
        worker = Worker()
        _, ready = worker.read_frame()
        worker.sock.close()
        self.assertEqual(worker.proc.wait(TIMEOUT), 0)
        self.assertEqual(ready, {
            "type": "ready",
            "python": platform.python_version(),
            "numpy": metadata.version("numpy"),
            "pandas": metadata.version("pandas"),
        })

    def test_warm_up_failure_goes_to_the_log(self):
        log_r, log_w = os.pipe()
        proc = subprocess.Popen(
            [PYTHON, "-I", "-X", "utf8", "-B", "-c",
             f"import sys; sys.modules['pandas'] = None; sys.argv = ['runner'];"
             f"exec(compile(open({RUNNER!r}).read(), {RUNNER!r}, 'exec'),"
             f" {{'__name__': '__main__', '__file__': {RUNNER!r}}})"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_w)
        os.close(log_w)
        with os.fdopen(log_r, "rb") as log:
            text = log.read().decode()
        self.assertNotEqual(proc.wait(TIMEOUT), 0)
        self.assertIn("warm-up failed", text)
