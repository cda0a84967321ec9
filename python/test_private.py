"""Tests for pyexec_runner/private.py: a script that monkeypatches builtins and
modules, or closes the well-known descriptors, cannot break the runner's
answer.

Through the real runner (runner_harness.py). Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import unittest

from runner_harness import dedent, run_script


class HostileScriptTest(unittest.TestCase):

    def test_runner_survives_monkeypatching_and_fd_games(self):
        finished = run_script(self, dedent("""
            import builtins, json, os, struct, sys, traceback, linecache
            for fd in range(3, 10):  # the well-known fds, not the runner's private copies
                try:
                    os.close(fd)
                except OSError:
                    pass
            json.dumps = json.JSONEncoder = None
            json.encoder.c_make_encoder = None
            struct.pack = None
            os.write = os.dup2 = os.close = None
            linecache.cache.clear()
            for name in ("isinstance", "type", "len", "repr", "enumerate", "min", "memoryview"):
                setattr(builtins, name, None)
            def main():
                d = {"v": 1.5}
                for _ in range(40):
                    d = {"d": d}
                sys.setrecursionlimit(60)
                sys.settrace(lambda *args: 1 / 0)  # would fire on the runner's next call
                return d
        """))
        self.assertEqual(finished.frame["type"], "result", finished.frame)
        self.assertIn(b'{"v":1.5}', finished.raw)
