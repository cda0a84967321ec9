"""Tests for pyexec_runner/tracebacks.py: a script's exception shows the
script's frames only (never the runner's or a library's), with its lines,
collapsed and capped.

Through the real runner (runner_harness.py). Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import unittest

from runner_harness import dedent, run_script, run_scripts


class TracebackTest(unittest.TestCase):

    def test_exception_in_main_shows_only_user_frames(self):
        finished = run_script(self, dedent("""
            import pandas as pd
            def lookup(df):
                return df["missing"]
            def main():
                df = pd.DataFrame({"a": [1]})
                return lookup(df)
        """))
        frame = finished.frame
        self.assertEqual(frame["kind"], "script_exception")
        self.assertEqual(frame["message"], "KeyError: 'missing'")
        self.assertEqual(frame["line"], 3)
        self.assertEqual(frame["traceback"], (
            "Traceback (most recent call last):\n"
            '  File "<script>", line 6, in main\n'
            "    return lookup(df)\n"
            '  File "<script>", line 3, in lookup\n'
            '    return df["missing"]\n'
            "KeyError: 'missing'\n"))

    def test_exception_at_import_time(self):
        finished = run_script(self, "x = 1\nraise ValueError('bad config')\n")
        frame = finished.frame
        self.assertEqual(frame["kind"], "script_exception")
        self.assertEqual(frame["message"], "ValueError: bad config")
        self.assertEqual(frame["line"], 2)
        self.assertIn('File "<script>", line 2, in <module>', frame["traceback"])
        self.assertNotIn("runner.py", frame["traceback"])

    def test_chained_exception_and_custom_class(self):
        finished = run_script(self, dedent("""
            class AppError(Exception):
                pass
            def main():
                try:
                    {}["k"]
                except KeyError as exc:
                    raise AppError("wrapped") from exc
        """))
        frame = finished.frame
        self.assertEqual(frame["message"], "AppError: wrapped")
        self.assertEqual(frame["line"], 7)
        tb = frame["traceback"]
        self.assertIn("KeyError: 'k'\n\nThe above exception was the direct cause", tb)
        self.assertTrue(tb.endswith("AppError: wrapped\n"), tb)

    def test_exception_whose_str_raises(self):
        finished = run_script(self, dedent("""
            class Nasty(Exception):
                def __str__(self):
                    raise RuntimeError("no str for you")
            def main():
                raise Nasty()
        """))
        self.assertEqual(finished.frame["kind"], "script_exception")
        self.assertEqual(finished.frame["message"], "Nasty: <exception str() failed>")

    def test_unencodable_exception_text_is_escaped_not_fatal(self):
        finished = run_script(self, "def main():\n    raise ValueError('bad \\ud800 text')\n")
        self.assertEqual(finished.frame["message"], "ValueError: bad \\ud800 text")
        self.assertTrue(finished.frame["traceback"].endswith("ValueError: bad \\ud800 text\n"))

    def test_keyboard_interrupt_is_a_script_exception(self):
        finished = run_script(self, "def main():\n    raise KeyboardInterrupt\n")
        self.assertEqual(finished.frame["kind"], "script_exception")
        self.assertEqual(finished.frame["message"], "KeyboardInterrupt")

    def test_deep_recursion_traceback_is_collapsed_and_capped(self):
        finished = run_script(self, "def f(n):\n    return f(n + 1)\ndef main():\n    f(0)\n")
        frame = finished.frame
        self.assertTrue(frame["message"].startswith("RecursionError: maximum recursion depth"))
        self.assertIn("[Previous line repeated", frame["traceback"])
        self.assertLessEqual(len(frame["traceback"].encode()), 64 * 1024)

    def test_huge_messages_are_capped(self):
        finished = run_script(self, "def main():\n    raise ValueError('x' * 100000)\n")
        self.assertLessEqual(len(finished.frame["message"].encode()), 8192)
        self.assertTrue(finished.frame["message"].endswith("(truncated)"))
        self.assertLessEqual(len(finished.frame["traceback"].encode()), 64 * 1024)

    def test_no_frame_of_the_runner_shows(self):
        cases = run_scripts(self, [
            "def main(data):\n    return 1 / 0\n",
            "raise ValueError('at load')\n",
            "class Main:\n    def __call__(self, data):\n        raise ValueError(data)\n"
            "main = Main()\n",
            "def main(data):\n    return {}[data]\n",
        ], job_input="k")
        for finished in cases:
            frame = finished.frame
            with self.subTest(message=frame.get("message")):
                self.assertEqual(frame["kind"], "script_exception", frame)
                files = [line for line in frame["traceback"].splitlines()
                         if line.startswith("  File ")]
                self.assertTrue(files, frame["traceback"])
                for line in files:
                    self.assertRegex(
                        line, r'^  File "<script>", line [1-5], in (main|__call__|<module>)$')
                self.assertNotIn("pyexec_runner", frame["traceback"])
                self.assertNotIn("runner.py", frame["traceback"])
