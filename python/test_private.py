"""Tests for pyexec_runner/private.py: a script that monkeypatches builtins and
modules, or closes the well-known descriptors, cannot break the runner's
answer, and the runner's modules hand a script nothing of the job's channel.

Through the real runner (runner_harness.py). Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import os
import unittest

from runner_harness import dedent, run_script


# Every builtin the runner calls after the script starts, in every module of
# pyexec_runner, patched away (the folder's file takes the outputs walk),
# and the tools a runner could have borrowed from shared modules.
SABOTAGE = dedent("""
    import builtins, io, json, os, struct, sys, traceback, linecache
    # Buffered: only the runner's flush at the end delivers what main prints.
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)))
    with open(os.path.join(os.environ["PYEXEC_OUTPUTS_DIR"], "a.txt"), "w") as f:
        f.write("kept")
    d = {"v": 1.5}
    for _ in range(40):
        d = {"d": d}
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
    for name in ("isinstance", "type", "len", "repr", "enumerate", "min", "memoryview",
                 "bool", "bytes", "getattr", "id", "int", "issubclass", "range", "set",
                 "sorted", "str", "zip"):
        setattr(builtins, name, None)
""")


class HostileScriptTest(unittest.TestCase):

    def test_runner_survives_monkeypatching_and_fd_games(self):
        finished = run_script(self, SABOTAGE + dedent("""
            def main():
                print("buffered")
                sys.setrecursionlimit(60)
                sys.settrace(lambda *args: 1 / 0)  # would fire on the runner's next call
                return d
        """))
        self.assertEqual(finished.frame["type"], "result", finished.frame)
        self.assertIn(b'{"v":1.5}', finished.raw)
        self.assertEqual([(f["name"], f["size"]) for f in finished.frame["files"]],
                         [("a.txt", 4)])
        self.assertEqual(finished.stdout, b"buffered\n")

    def test_an_error_is_still_reported_after_the_same_games(self):
        script = SABOTAGE + dedent("""
            import decimal
            def main():
                sys.settrace(lambda *args: 1 / 0)
                raise decimal.InvalidOperation("boom")
        """)
        line = script.splitlines().index('    raise decimal.InvalidOperation("boom")') + 1
        finished = run_script(self, script)
        self.assertEqual(finished.frame, {
            "type": "error", "kind": "script_exception",
            "message": "decimal.InvalidOperation: boom",
            "line": line, "traceback": (
                "Traceback (most recent call last):\n"
                f'  File "<script>", line {line}, in main\n'
                '    raise decimal.InvalidOperation("boom")\n'
                "decimal.InvalidOperation: boom\n")})

    def test_the_runners_modules_hold_nothing_of_the_jobs_channel(self):
        # The script can reach every module in sys.modules, the runner's among
        # them: none may hold the job socket, a file or the job.
        finished = run_script(self, dedent("""
            import io, os, socket, sys
            HERE = os.path.dirname(os.path.abspath(sys.modules["__main__"].__file__))
            def main():
                modules = {name: module for name, module in list(sys.modules.items())
                           if (getattr(module, "__file__", None) or "").startswith(HERE + os.sep)}
                job = sys.modules["pyexec_runner.protocol"].Job
                held = [f"{name}.{key}" for name, module in modules.items()
                        for key, value in vars(module).items()
                        if isinstance(value, (socket.socket, io.IOBase, job))]
                return {"modules": sorted(modules), "held": held}
        """))
        result = finished.frame["result"]
        self.assertEqual(result["held"], [])
        package = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyexec_runner")
        expected = {"pyexec_runner"} | {f"pyexec_runner.{name[:-3]}"
                                        for name in os.listdir(package)
                                        if name.endswith(".py") and name != "__init__.py"}
        self.assertEqual({m for m in result["modules"] if m.startswith("pyexec_runner")},
                         expected)
