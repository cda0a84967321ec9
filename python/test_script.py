"""Tests for pyexec_runner/script.py: the script compiled, loaded as the
module `script` and its main() called (with the job's input when it has
one); what each way of failing reports.

Through the real runner (runner_harness.py). Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import unittest

from runner_harness import dedent, run_script, run_scripts


class ScriptTest(unittest.TestCase):

    def test_script_runs_as_a_module_not_main(self):
        finished = run_script(self, dedent("""
            import dataclasses, inspect, sys
            @dataclasses.dataclass
            class Point:
                x: int
                y: "int"
            ran_guard = False
            if __name__ == "__main__":
                ran_guard = True
            def main():
                return {"name": __name__, "file": __file__, "guard": ran_guard,
                        "registered": sys.modules[__name__].main is main,
                        "source": inspect.getsource(main).splitlines()[0],
                        "dataclass": repr(Point(1, 2))}
        """))
        self.assertEqual(finished.frame["result"], {
            "name": "script", "file": "<script>", "guard": False, "registered": True,
            "source": "def main():", "dataclass": "Point(x=1, y=2)"})

    def test_syntax_error_names_the_line(self):
        finished = run_script(self, "x = 1\n\ndef main()\n    return {}\n")
        frame = finished.frame
        self.assertEqual(frame["kind"], "syntax_error")
        self.assertEqual(frame["line"], 3)
        self.assertEqual(frame["message"], "expected ':' at line 3: def main()")
        self.assertIn('File "<script>", line 3', frame["traceback"])

    def test_null_byte_is_a_syntax_error_with_a_line(self):
        finished = run_script(self, "x = 1\ny = '\0'\n")
        self.assertEqual(finished.frame["kind"], "syntax_error")
        self.assertEqual(finished.frame["line"], 2)
        self.assertIn("null bytes at line 2", finished.frame["message"])

    def test_missing_and_uncallable_main(self):
        missing, uncallable = run_scripts(self, ["x = 1\n", "main = 3\n"])
        self.assertEqual(missing.frame, {
            "type": "error", "kind": "missing_main",
            "message": "the script defines no callable main()", "line": None, "traceback": None})
        self.assertEqual(uncallable.frame["kind"], "missing_main")
        self.assertIn("main is a int, not a function", uncallable.frame["message"])

    def test_sys_exit_reports_worker_exited(self):
        in_main, at_import, builtin_exit = run_scripts(self, [
            "import sys\ndef main():\n    sys.exit(3)\n",
            "import sys\nsys.exit()\n",
            "def main():\n    exit('bye')\n",
        ])
        self.assertEqual(in_main.frame, {
            "type": "error", "kind": "worker_exited",
            "message": "the script called sys.exit(3) before main() returned",
            "line": None, "traceback": None})
        self.assertEqual(at_import.frame["kind"], "worker_exited")
        self.assertIn("sys.exit() while the script was loading", at_import.frame["message"])
        self.assertEqual(builtin_exit.frame["message"],
                         "the script called sys.exit('bye') before main() returned")


class InputTest(unittest.TestCase):
    """`input` is main's one argument; a mismatch is the request's fault."""

    def test_the_input_is_mains_argument_as_json_gives_it(self):
        data = {"rows": [1, 2.5, None, "x"], "nested": {"é": [True]}}
        with_input, null_input, optional = run_scripts(self, [
            "def main(data):\n    return {'got': data, 'type': type(data).__name__}\n",
            "def main(data):\n    return {'got': data}\n",
            "def main(data=7):\n    return {'got': data}\n",
        ], job_input=data)
        self.assertEqual(with_input.frame["result"], {"got": data, "type": "dict"})
        self.assertEqual(optional.frame["result"], {"got": data})
        null = run_script(self, "def main(x):\n    return {'got': x}\n", job_input=None)
        self.assertEqual(null.frame["result"], {"got": None})
        del null_input

    def test_without_input_main_is_called_with_none(self):
        plain, defaulted, star = run_scripts(self, [
            "def main():\n    return {'n': 0}\n",
            "def main(data=7):\n    return {'got': data}\n",
            "def main(*args):\n    return {'n': len(args)}\n",
        ])
        self.assertEqual(plain.frame["result"], {"n": 0})
        self.assertEqual(defaulted.frame["result"], {"got": 7})
        self.assertEqual(star.frame["result"], {"n": 0})

    def test_a_mismatch_is_invalid_request_before_main_runs(self):
        marker = "print('main ran')\n"
        sent_none_taken, two_taken = run_scripts(self, [
            "print('loaded')\n\ndef main():\n    " + marker + "    return {}\n",
            "def main(a, b):\n    " + marker + "    return {}\n",
        ], job_input=[1])
        frame = sent_none_taken.frame
        self.assertEqual(frame["kind"], "invalid_request")
        self.assertEqual(frame["message"], "the request sent an input, but main() takes no "
                         "parameter: define def main(input): to receive it")
        self.assertEqual(frame["line"], 3)
        self.assertEqual(sent_none_taken.stdout, b"loaded\n")
        self.assertEqual(two_taken.frame["kind"], "invalid_request")
        self.assertIn("main(a, b) cannot take the request's input", two_taken.frame["message"])
        self.assertEqual(two_taken.stdout, b"")
        needed = run_script(self, "def main(rows, *, scale):\n    " + marker + "    return {}\n")
        self.assertEqual(needed.frame["kind"], "invalid_request")
        self.assertEqual(needed.frame["message"],
                         "main() requires the parameters rows, scale, but the request sent no "
                         "input: send one in \"input\", or give them a default")
        self.assertEqual(needed.frame["line"], 1)
        self.assertEqual(needed.stdout, b"")

    def test_a_callable_inspect_cannot_read_is_called_as_asked(self):
        finished = run_script(self, "main = dict\n")
        self.assertEqual(finished.frame, {"type": "result", "result": {}})
