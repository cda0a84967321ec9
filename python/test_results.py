"""Tests for pyexec_runner/results.py: what main() may return, how it is
encoded, and the messages that say why a value can't be sent and how to fix it.

Through the real runner (runner_harness.py). Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import json
import unittest

from runner_harness import dedent, run_script, run_scripts


class ResultFrameTest(unittest.TestCase):

    def test_result_is_compact_json_with_unicode_kept(self):
        result = {"ok": True, "n": [1, 2.5, None, "x"], "t": [1, (2, 3)],
                  "nested": {"é": "ünïcode ☃", "big": 2 ** 70, "f": 1e-300}}
        script = f"def main():\n    return {result!r}\n"
        finished = run_script(self, script)
        expected = dict(result, t=[1, [2, 3]])
        self.assertEqual(finished.frame, {"type": "result", "result": expected})
        body = json.dumps(expected, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self.assertEqual(finished.raw, b'{"type":"result","result":' + body.encode() + b"}")

    def test_float_and_str_subclasses_are_accepted_as_their_base_type(self):
        finished = run_script(self, dedent("""
            import collections, enum, numpy
            class Color(enum.IntEnum):
                RED = 1
            class Loud(str):
                def __str__(self):
                    return "LOUD"
            def main():
                arr = numpy.array(["a", "b"])
                return collections.OrderedDict(
                    mean=numpy.float64(1.5), s=arr[0], color=Color.RED, loud=Loud("quiet"))
        """))
        self.assertEqual(finished.frame["result"],
                         {"mean": 1.5, "s": "a", "color": 1, "loud": "quiet"})
        self.assertIn(b'"mean":1.5,', finished.raw)

    def test_result_at_exactly_the_limit_is_allowed(self):
        finished = run_script(self, "def main():\n    return {'a': 'xy'}\n",
                              max_result_bytes=len(b'{"a":"xy"}'))
        self.assertEqual(finished.frame["type"], "result")

    def test_result_over_the_limit_reports_both_sizes(self):
        finished = run_script(self, "def main():\n    return {'a': 'xyz'}\n",
                              max_result_bytes=10)
        self.assertEqual(finished.frame["kind"], "result_too_large")
        self.assertEqual(finished.frame["message"],
                         "the result is 11 bytes of JSON, over the 10-byte limit")


class InvalidResultTest(unittest.TestCase):
    """Each case: (expression main() returns, substrings the message must contain)."""

    CASES = [
        ("{'df': pd.DataFrame({'a': [1]})}",
         ["pandas.DataFrame at result['df']", 'df.to_dict(orient="records")', "df.to_dict()"]),
        ("{'s': pd.Series([1])}", ["pandas.Series at result['s']", "series.to_dict()"]),
        ("{'i': pd.Index([1])}", ["pandas.Index at result['i']", "index.tolist()"]),
        ("{'t': pd.Timestamp('2024-01-01')}", ["pandas.Timestamp at result['t']",
                                               "ts.isoformat()"]),
        ("{'t': [pd.NaT]}", ["pandas.NaT at result['t'][0]", "use None for a missing time"]),
        ("{'n': {'x': pd.NA}}", ["pandas.NA at result['n']['x']",
                                 "use None for a missing value"]),
        ("{'d': pd.Timedelta('1s')}", ["pandas.Timedelta at result['d']", "td.total_seconds()"]),
        ("{'c': pd.Categorical(['a'])}", ["pandas.Categorical at result['c']", "x.tolist()"]),
        ("{'a': numpy.datetime64('2024-01-01')}", ["numpy.datetime64 at result['a']", "str(x)"]),
        ("{'a': numpy.array(['2024-01-01'], dtype='datetime64[ns]')}",
         ["numpy.ndarray at result['a']", "numpy.datetime_as_string(arr).tolist()"]),
        ("{'a': numpy.longdouble(1.5)}", ["numpy.longdouble at result['a']", "float(x)"]),
        ("{'a': numpy.complex128(1j)}", ["numpy.complex128 at result['a']", "[x.real, x.imag]"]),
        ("{'a': numpy.array([1j])}", ["a complex at result['a'][0]", "[x.real, x.imag]"]),
        ("{'a': numpy.ma.masked_array([1, 2], mask=[0, 1])}",
         ["numpy.ma.MaskedArray at result['a']", "arr.tolist()"]),
        ("{'s': {1, 2}}", ["a set at result['s']", "sorted(x)"]),
        ("{'b': b'raw'}", ["a bytes at result['b']", "x.decode()"]),
        ("{'d': datetime.datetime(2024, 1, 1)}", ["datetime.datetime at result['d']",
                                                  "isoformat()"]),
        ("{'d': decimal.Decimal('1.5')}", ["decimal.Decimal at result['d']", "float(x)"]),
        ("{'o': [Thing()]}", ["a Thing at result['o'][0]", "which JSON cannot encode"]),
        ("{'m': {pd.Timestamp('2024-01-01'): 'one'}}",
         ["a dict key of type pandas.Timestamp", "at result['m']",
          "keys must be strings, numbers, booleans or None", "str(key)"]),
        ("{('a', 'b'): 1}", ["a dict key of type tuple", "at result,"]),
        ("{'x': [float('nan')]}", ["the float nan at result['x'][0]", "use None"]),
        ("{'x': float('inf')}", ["the float inf at result['x']"]),
        ("{'x': {'y': -float('inf')}}", ["the float -inf at result['x']['y']"]),
        ("circular()", ["a circular reference", "at result['self']"]),
        ("deep(150)", ["nested more than 100 levels deep"]),
        ("{'s': 'ok \\ud800'}", ["lone surrogate at result['s']"]),
        ("{'ok \\udc80': 1}", ["a dict key containing a lone surrogate"]),
        ("[1, 2]", ["main() must return a dict (a JSON object), it returned list"]),
        ("None", ["it returned NoneType", "`return` statement missing"]),
        ("pd.DataFrame({'a': [1]})", ["it returned pandas.DataFrame"]),
    ]

    PRELUDE = dedent("""
        import datetime, decimal, numpy
        import pandas as pd
        class Thing:
            pass
        def circular():
            d = {}
            d["self"] = d
            return d
        def deep(n):
            d = {}
            for _ in range(n):
                d = {"d": d}
            return d
    """)

    def test_unencodable_values_name_the_type_path_and_fix(self):
        scripts = [f"{self.PRELUDE}def main():\n    return {expr}\n" for expr, _ in self.CASES]
        for (expr, needles), finished in zip(self.CASES, run_scripts(self, scripts)):
            with self.subTest(expr=expr):
                frame = finished.frame
                self.assertEqual(frame["kind"], "invalid_result", frame)
                self.assertIsNone(frame["line"])
                for needle in needles:
                    self.assertIn(needle, frame["message"])

    def test_ints_too_long_to_write_are_refused_not_a_crash(self):
        value, key = run_scripts(self, [
            "def main():\n    return {'n': [1, {'big': 10 ** 5000}]}\n",
            "def main():\n    return {'m': {10 ** 5000: 1}}\n",
        ])
        self.assertEqual(value.frame["kind"], "invalid_result", value.frame)
        self.assertIn("an int too long to write in decimal at result['n'][1]['big']",
                      value.frame["message"])
        self.assertEqual(key.frame["kind"], "invalid_result", key.frame)
        self.assertIn("a dict key that is an int too long to write in decimal at result['m']",
                      key.frame["message"])

    def test_async_main_gets_a_hint(self):
        finished = run_script(self, "async def main():\n    return {}\n")
        self.assertEqual(finished.frame["kind"], "invalid_result")
        self.assertIn("not async def", finished.frame["message"])


class ResultConversionTest(unittest.TestCase):
    """Keys as json.dumps writes them; numpy values as their Python values."""

    def result_of(self, body, prelude="import numpy as np\n"):
        finished = run_script(self, f"{prelude}def main():\n    return {body}\n")
        self.assertEqual(finished.frame["type"], "result", finished.frame)
        return finished

    def test_keys_are_written_as_json_dumps_writes_them(self):
        finished = run_script(self, dedent("""
            import enum
            import numpy as np
            class Color(enum.IntEnum):
                RED = 7
            class Name(str):
                def __str__(self):
                    return "overridden"
            def main():
                # True == 1 and False == 0 as dict keys: they get a dict of their own.
                return {"s": 0, 1: 1, -2: 2, 2 ** 70: 3, 1.5: 4, 1e20: 5, -0.0: 6,
                        Color.RED: 10, Name("n"): 11, np.int64(12): 12, np.uint8(13): 13,
                        np.float32(0.5): 14, np.float64(2.25): 15,
                        "other": {True: 7, False: 8, None: 9}}
        """))
        expected = {"s": 0, "1": 1, "-2": 2, "1180591620717411303424": 3, "1.5": 4,
                    "1e+20": 5, "-0.0": 6, "7": 10, "n": 11, "12": 12, "13": 13,
                    "0.5": 14, "2.25": 15, "other": {"true": 7, "false": 8, "null": 9}}
        self.assertEqual(finished.frame["result"], expected)
        # The same keys, in the same order, as Python's own json.dumps.
        self.assertIn(json.dumps(expected, separators=(",", ":")).encode(), finished.raw)

    def test_numpy_bool_key(self):
        finished = self.result_of("{np.bool_(True): 1, np.bool_(False): 0}")
        self.assertEqual(finished.frame["result"], {"true": 1, "false": 0})

    def test_keys_that_collide_after_conversion_are_refused(self):
        cases = [
            ("{1: 'a', '1': 'b'}", "result", "\"1\"", "the int 1 and the str '1'"),
            ("{'x': {'true': 1, True: 2}}", "result['x']", "\"true\"",
             "the str 'true' and the bool True"),
            ("{None: 1, 'null': 2}", "result", "\"null\"", "None and the str 'null'"),
            ("{'l': [{1.5: 1, '1.5': 2}]}", "result['l'][0]", "\"1.5\"",
             "the float 1.5 and the str '1.5'"),
            ("{np.int64(3): 1, '3': 2}", "result", "\"3\"",
             "the numpy.int64 3 and the str '3'"),
        ]
        results = run_scripts(self, [f"import numpy as np\ndef main():\n    return {body}\n"
                                     for body, *_ in cases])
        for (body, path, key, both), finished in zip(cases, results):
            with self.subTest(body=body):
                self.assertEqual(finished.frame["kind"], "invalid_result", finished.frame)
                self.assertEqual(
                    finished.frame["message"],
                    f"main() returned two keys that both become {key} in JSON ({both}) "
                    f"at {path}, but a JSON object cannot hold a key twice: "
                    "keep one of them or rename the other")

    def test_key_that_is_nan_or_infinity_is_refused(self):
        nan, inf = run_scripts(self, [
            "def main():\n    return {'m': {float('nan'): 1}}\n",
            "import numpy as np\ndef main():\n    return {np.float32('inf'): 1}\n",
        ])
        self.assertEqual(nan.frame["kind"], "invalid_result")
        self.assertIn("a dict key that is the float nan at result['m']", nan.frame["message"])
        self.assertIn("a dict key that is the float inf at result,", inf.frame["message"])

    def test_numpy_scalars_become_python_values(self):
        finished = self.result_of(
            "{'i': np.int64(-3), 'u': np.uint64(2 ** 64 - 1), 'i8': np.int8(5),"
            " 'f': np.float64(0.1), 'f32': np.float32(0.5), 'f16': np.float16(1.5),"
            " 'b': np.bool_(True), 'nested': [(np.int32(1), {'x': np.bool_(False)})]}")
        self.assertEqual(finished.frame["result"], {
            "i": -3, "u": 2 ** 64 - 1, "i8": 5, "f": 0.1, "f32": 0.5, "f16": 1.5, "b": True,
            "nested": [[1, {"x": False}]]})
        self.assertIn(b'"u":18446744073709551615,', finished.raw)
        self.assertIn(b'"b":true,', finished.raw)

    def test_numpy_arrays_become_nested_lists(self):
        finished = self.result_of(
            "{'int': np.arange(3), 'float': np.array([0.5, -1.25]),"
            " 'f32': np.array([0.5], dtype=np.float32), 'bool': np.array([True, False]),"
            " '2d': np.arange(6).reshape(2, 3), 'empty': np.array([]),"
            " 'empty2d': np.zeros((2, 0)), 'zero_d': np.array(7), 'str': np.array(['a', 'é']),"
            " 'object': np.array([1, 'two', None, np.int64(4), 2.5, {'k': np.float32(0.25)},"
            "                     [np.bool_(True)]], dtype=object),"
            " 'not_contiguous': np.arange(10)[::3]}")
        self.assertEqual(finished.frame["result"], {
            "int": [0, 1, 2], "float": [0.5, -1.25], "f32": [0.5], "bool": [True, False],
            "2d": [[0, 1, 2], [3, 4, 5]], "empty": [], "empty2d": [[], []], "zero_d": 7,
            "str": ["a", "é"], "object": [1, "two", None, 4, 2.5, {"k": 0.25}, [True]],
            "not_contiguous": [0, 3, 6, 9]})

    def test_nan_and_infinity_are_refused_wherever_they_are(self):
        cases = [
            ("{'a': np.array([1.0, 2.0, 3.0, np.nan])}", "the float nan at result['a'][3]"),
            ("{'a': np.array([[1.0, 2.0], [np.inf, 0.0]])}",
             "the float inf at result['a'][1][0]"),
            ("{'a': {'b': [np.float32('-inf')]}}", "the float -inf at result['a']['b'][0]"),
            ("{'a': np.float64('nan')}", "the float nan at result['a']"),
            ("{'a': np.array([None, float('nan')], dtype=object)}",
             "the float nan at result['a'][1]"),
            ("{'a': np.array(np.nan)}", "the float nan at result['a']"),
        ]
        results = run_scripts(self, [f"import numpy as np\ndef main():\n    return {body}\n"
                                     for body, _ in cases])
        for (body, needle), finished in zip(cases, results):
            with self.subTest(body=body):
                self.assertEqual(finished.frame["kind"], "invalid_result", finished.frame)
                self.assertEqual(finished.frame["message"],
                                 f"main() returned {needle}, which JSON cannot encode: "
                                 "use None for missing values")

    def test_arrays_that_hold_themselves_or_nest_too_deep_are_refused(self):
        circular, deep = run_scripts(self, [
            "import numpy as np\ndef main():\n    a = np.empty(2, dtype=object)\n"
            "    a[0], a[1] = 1, a\n    return {'a': a}\n",
            "import numpy as np\ndef main():\n    d = np.zeros([1] * 32)\n"
            "    for _ in range(70):\n        d = [d]\n    return {'d': d}\n",
        ])
        self.assertIn("a circular reference", circular.frame["message"])
        self.assertIn("at result['a'][1]", circular.frame["message"])
        self.assertIn("nested more than 100 levels deep", deep.frame["message"])

    def test_the_original_services_library_example(self):
        finished = run_script(self, dedent("""
            import numpy as np
            import pandas as pd

            def main():
                data = np.array([1, 2, 3, 4, 5])
                df = pd.DataFrame(data, columns=['values'])
                return {
                    "mean": float(np.mean(data)),
                    "dataframe": df.to_dict()
                }
        """))
        self.assertEqual(finished.frame["result"], {
            "mean": 3.0,
            "dataframe": {"values": {"0": 1, "1": 2, "2": 3, "3": 4, "4": 5}}})

    def test_pandas_dicts_with_non_string_keys(self):
        finished = self.result_of(
            "{'counts': pd.Series(['a', 'b', 'a']).value_counts().to_dict(),"
            " 'by_year': pd.DataFrame({'y': [2023, 2024, 2023], 'v': [1, 2, 3]})"
            ".groupby('y')['v'].sum().to_dict(),"
            " 'records': pd.DataFrame({'x': [np.int64(1)], 'f': [0.5]}).to_dict(orient='index')}",
            prelude="import numpy as np\nimport pandas as pd\n")
        self.assertEqual(finished.frame["result"], {
            "counts": {"a": 2, "b": 1}, "by_year": {"2023": 4, "2024": 2},
            "records": {"0": {"x": 1, "f": 0.5}}})

    def test_conversion_never_runs_the_scripts_code_or_its_patches(self):
        finished = run_script(self, dedent("""
            import sys
            import numpy as np
            class Sly(np.int64):
                def item(self):
                    raise RuntimeError("item() override ran")
                def __int__(self):
                    raise RuntimeError("__int__ override ran")
                def __repr__(self):
                    raise RuntimeError("__repr__ override ran")
            class SlyArray(np.ndarray):
                def tolist(self):
                    raise RuntimeError("tolist() override ran")
            def main():
                values = {"sly": Sly(5), Sly(6): "key", "arr": np.array([1.5, 2.5])}
                np.isfinite = lambda a: np.array(True)  # would let NaN through
                np.ndarray = SlyArray
                sys.modules["numpy"] = None
                sys.modules["pandas"] = None
                return values
        """))
        self.assertEqual(finished.frame["result"], {"sly": 5, "6": "key", "arr": [1.5, 2.5]})
        nan = run_script(self, dedent("""
            import numpy as np
            def main():
                np.isfinite = lambda a: np.array(True)
                return {"a": np.array([np.nan])}
        """))
        self.assertEqual(nan.frame["kind"], "invalid_result")
        self.assertIn("the float nan at result['a'][0]", nan.frame["message"])
