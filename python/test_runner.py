"""Tests for python/runner.py, the entry point of every job process: it keeps
the names zygote.py uses, and it needs nothing but itself, confine.py and the
pyexec_runner package (what the jail mounts, and what the server's own tests
copy when they make a variant of the runner).

The runner's parts have their own test files, one per module of
pyexec_runner/, all through runner_harness.py. Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import ast
import os
import shutil
import tempfile
import unittest
from unittest import mock

import runner
import runner_harness
from pyexec_runner import fds, protocol, serve, tracebacks, warmup
from runner_harness import HERE, run_script


class EntryPointTest(unittest.TestCase):

    def test_every_name_zygote_uses_is_the_packages_own(self):
        with open(os.path.join(HERE, "zygote.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        used = {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "runner"}
        self.assertTrue(used)
        self.assertLessEqual(used, set(runner.__all__))
        for name in used:
            self.assertTrue(hasattr(runner, name), name)
        self.assertIs(runner.serve, serve.serve)
        self.assertIs(runner.warm_up, warmup.warm_up)
        self.assertIs(runner.exception_line, tracebacks.exception_line)
        self.assertIs(runner.error_frame, protocol.error_frame)
        self.assertEqual((runner.JOB_FD, runner.STDOUT_PIPE_FD, runner.STDERR_PIPE_FD),
                         (fds.JOB_FD, fds.STDOUT_PIPE_FD, fds.STDERR_PIPE_FD))

    def test_a_copy_of_the_three_parts_runs_a_job(self):
        copy = tempfile.mkdtemp(prefix="pyexec-runner-copy-")
        self.addCleanup(shutil.rmtree, copy, ignore_errors=True)
        for name in ("runner.py", "confine.py"):
            shutil.copy(os.path.join(HERE, name), copy)
        shutil.copytree(os.path.join(HERE, "pyexec_runner"), os.path.join(copy, "pyexec_runner"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        script = ("import sys\n"
                  "def main():\n"
                  "    return {'runner': sys.modules['pyexec_runner'].__file__}\n")
        with mock.patch.object(runner_harness, "RUNNER", os.path.join(copy, "runner.py")):
            finished = run_script(self, script)
        self.assertEqual(finished.frame["result"],
                         {"runner": os.path.join(copy, "pyexec_runner", "__init__.py")})


if __name__ == "__main__":
    unittest.main()
