"""Tests for python/runner.py, the sandboxed worker's job runner.

These run the real runner as a subprocess wired exactly the way the server
wires it (socket on fd 3, capture pipes on fds 4/5, log on fd 2), speak the
framed protocol to it and check the frames and captured output. They also
hold python/protocol_examples.json to the same shape checker as the runner's
real frames, so the examples the Rust side tests against cannot drift.

Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import fcntl
import json
import os
import platform
import socket
import struct
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import unittest
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "runner.py")
EXAMPLES = os.path.join(HERE, "protocol_examples.json")
PYTHON = sys.executable
TIMEOUT = 20
DEFAULT_LIMIT = 10 * 1024 * 1024

ERROR_KINDS = {"invalid_request", "syntax_error", "missing_main", "script_exception",
               "invalid_result", "result_too_large", "worker_exited", "memory_limit",
               "internal"}
NO_INPUT = object()


# ----------------------------------------------------------- shape checker


def shape_problems(frame):
    """Everything wrong with a decoded frame's shape; [] means it is valid."""
    if not isinstance(frame, dict):
        return [f"frame is a {type(frame).__name__}, not an object"]
    kind = frame.get("type")
    any_json = (dict, list, str, int, float, bool, type(None))
    expected, optional = {
        "job": ({"type": str, "script": str, "max_result_bytes": int, "max_files": int,
                 "max_files_bytes": int}, {"input": any_json}),
        "ready": ({"type": str, "python": str, "numpy": str, "pandas": str}, {}),
        # The file members come together, and only when there are files.
        "result": ({"type": str, "result": dict},
                   {"files": list, "files_truncated": bool, "files_omitted": list}),
        "error": ({"type": str, "kind": str, "message": str,
                   "line": (int, type(None)), "traceback": (str, type(None))}, {}),
    }.get(kind, (None, None))
    if expected is None:
        return [f"unknown frame type {kind!r}"]
    problems = []
    present_optional = set(frame) & set(optional)
    if set(frame) - present_optional != set(expected):
        problems.append(f"{kind} frame keys {sorted(frame)} != {sorted(expected)}")
    if kind == "result" and present_optional not in (set(), set(optional)):
        problems.append(f"result frame has only some file members: {sorted(present_optional)}")
    for key, types in list(expected.items()) + [(k, optional[k]) for k in present_optional]:
        value = frame.get(key)
        if types is not any_json and isinstance(value, bool) and types is not bool:
            problems.append(f"{kind}.{key} has type bool")
        elif not isinstance(value, types):
            problems.append(f"{kind}.{key} has type {type(value).__name__}")
    for entry in frame.get("files", []) if kind == "result" else []:
        if (not isinstance(entry, dict)
                or sorted(entry) != ["content_base64", "media_type", "name", "size"]):
            problems.append(f"a file entry has the wrong keys: {entry!r}")
    if kind == "error":
        if frame.get("kind") not in ERROR_KINDS:
            problems.append(f"unknown error kind {frame.get('kind')!r}")
        if len(str(frame.get("message")).encode("utf-8")) > 8192:
            problems.append("error message over 8 KiB")
    return problems


def encode_frame(obj):
    body = json.dumps(obj).encode("utf-8")
    return struct.pack(">I", len(body)) + body


def split_frames(data):
    """Decode a byte string holding whole frames into a list of raw bodies."""
    bodies = []
    while data:
        (length,) = struct.unpack(">I", data[:4])
        bodies.append(data[4:4 + length])
        data = data[4 + length:]
    return bodies


# ------------------------------------------------------------- the harness


def _read_all_in_background(fd):
    """Drain a pipe to EOF on a thread so a chatty script can never block."""
    box = {"data": b""}

    def drain():
        chunks = []
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                chunks.append(chunk)
        box["data"] = b"".join(chunks)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return thread, box


class Finished:
    """What one job produced: the frame, captured output, log and exit code."""

    def __init__(self, raw, frame, stdout, stderr, log, returncode):
        self.raw, self.frame = raw, frame
        self.stdout, self.stderr, self.log = stdout, stderr, log
        self.returncode = returncode


class Worker:
    """One runner process wired like the server wires it."""

    def __init__(self):
        # Outside a jail /tmp is shared: each runner gets its own outputs folder.
        self.scratch = tempfile.mkdtemp(prefix="pyexec-runner-test-")
        self.outputs = os.path.join(self.scratch, "outputs")
        self.sock, child_sock = socket.socketpair()
        self.sock.settimeout(TIMEOUT)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        log_r, log_w = os.pipe()
        targets = {child_sock.fileno(): 3, out_w: 4, err_w: 5}

        def wire_fds():  # runs in the child between fork and exec
            high = {fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, 100): dst
                    for src, dst in targets.items()}
            for src, dst in high.items():
                os.dup2(src, dst)  # dup2 leaves dst inheritable

        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYEXEC_OUTPUTS_DIR": self.outputs}
        self.proc = subprocess.Popen(
            [PYTHON, "-I", "-X", "utf8", "-B", "-u", RUNNER],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_w,
            close_fds=False, preexec_fn=wire_fds, cwd="/tmp", env=env)
        for fd in (out_w, err_w, log_w):
            os.close(fd)
        child_sock.close()
        self.out = _read_all_in_background(out_r)
        self.err = _read_all_in_background(err_r)
        self.log = _read_all_in_background(log_r)

    def read_frame(self):
        """Return (raw bytes, decoded object), or (None, None) at EOF."""
        header = self._recv_exactly(4)
        if not header:
            return None, None
        raw = self._recv_exactly(struct.unpack(">I", header)[0])
        return raw, json.loads(raw.decode("utf-8"))

    def _recv_exactly(self, count):
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def send_job(self, script, max_result_bytes=DEFAULT_LIMIT, job_input=NO_INPUT,
                 max_files=32, max_files_bytes=4 << 20):
        job = {"type": "job", "script": script, "max_result_bytes": max_result_bytes,
               "max_files": max_files, "max_files_bytes": max_files_bytes}
        if job_input is not NO_INPUT:
            job["input"] = job_input
        self.sock.sendall(encode_frame(job))

    def finish(self):
        raw, frame = self.read_frame()
        extra, _ = self.read_frame()
        assert extra is None, f"runner sent a second frame: {extra!r}"
        returncode = self.proc.wait(TIMEOUT)
        outputs = []
        for thread, box in (self.out, self.err, self.log):
            thread.join(TIMEOUT)
            assert not thread.is_alive(), "a capture pipe never reached EOF"
            outputs.append(box["data"])
        self.sock.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        return Finished(raw, frame, *outputs, returncode)


def start_worker(test):
    worker = Worker()
    _, ready = worker.read_frame()
    test.assertIsNotNone(ready, "runner closed the socket without a ready frame")
    test.assertEqual(shape_problems(ready), [])
    test.assertEqual(ready["type"], "ready")
    return worker


def run_scripts(test, scripts, max_result_bytes=DEFAULT_LIMIT, **job):
    """Run several scripts concurrently (warm-up dominates) and check each frame."""
    workers = [start_worker(test) for _ in scripts]
    for worker, script in zip(workers, scripts):
        worker.send_job(script, max_result_bytes, **job)
    results = [worker.finish() for worker in workers]
    for finished in results:
        test.assertEqual(shape_problems(finished.frame), [], finished.frame)
        test.assertEqual(finished.returncode, 0, finished.log)
    return results


def run_script(test, script, max_result_bytes=DEFAULT_LIMIT, **job):
    return run_scripts(test, [script], max_result_bytes, **job)[0]


def dedent(text):
    import textwrap
    return textwrap.dedent(text).lstrip("\n")


# ------------------------------------------------------------------- tests


class ProtocolExamplesTest(unittest.TestCase):
    """protocol_examples.json is the contract shared with the Rust codec."""

    @classmethod
    def setUpClass(cls):
        with open(EXAMPLES, encoding="utf-8") as f:
            cls.examples = json.load(f)

    def test_every_example_has_a_valid_shape_and_survives_framing(self):
        frames = self.examples["to_runner"] + self.examples["from_runner"]
        wire = b"".join(encode_frame(frame) for frame in frames)
        decoded = [json.loads(body.decode("utf-8")) for body in split_frames(wire)]
        self.assertEqual(decoded, frames)
        for frame in decoded:
            self.assertEqual(shape_problems(frame), [], frame)

    def test_shape_checker_rejects_wrong_shapes(self):
        self.assertTrue(shape_problems({"type": "result"}))
        self.assertTrue(shape_problems({"type": "error", "kind": "nope", "message": "",
                                        "line": None, "traceback": None}))
        self.assertTrue(shape_problems({"type": "error", "kind": "internal", "message": "",
                                        "line": True, "traceback": None}))
        self.assertTrue(shape_problems({"type": "ready", "python": "3", "numpy": "2"}))

    def test_runner_produces_every_example_frame_shape(self):
        scripts_by_kind = {
            "syntax_error": "def main(:\n    pass\n",
            "missing_main": "x = 1\n",
            "script_exception": "def main():\n    return 1 / 0\n",
            "invalid_result": "import numpy\ndef main():\n    return {'n': numpy.array([0, 1, 2, numpy.nan])}\n",
            "result_too_large": "def main():\n    return {'s': 'x' * 100}\n",
            "worker_exited": "import sys\ndef main():\n    sys.exit(3)\n",
            "memory_limit": "def main():\n    raise MemoryError()\n",
            "invalid_request": "def main(data):\n    return {}\n",
        }
        examples = [e for e in self.examples["from_runner"] if e["type"] == "error"]
        job = self.examples["to_runner"][0]
        scripts = [job["script"]] + [scripts_by_kind[e["kind"]] for e in examples]
        results = run_scripts(self, scripts, max_result_bytes=50)
        self.assertEqual(results[0].frame, {"type": "result", "result": {"ok": True}})
        for example, finished in zip(examples, results[1:]):
            self.assertEqual(finished.frame["kind"], example["kind"])
            if example["kind"] == "invalid_result":  # a real message, not an invented one
                self.assertEqual(finished.frame["message"], example["message"])
            self.assertEqual(set(finished.frame), set(example))
            self.assertEqual(type(finished.frame["line"]) is int, type(example["line"]) is int,
                             finished.frame)


class ReadyAndResultTest(unittest.TestCase):

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


class ErrorKindsTest(unittest.TestCase):

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


class ProtocolErrorTest(unittest.TestCase):

    def finish_with_bytes(self, data, close=True):
        worker = start_worker(self)
        worker.sock.sendall(data)
        if close:
            worker.sock.shutdown(socket.SHUT_WR)
        raw, _ = worker.read_frame()
        self.assertIsNone(raw)
        returncode = worker.proc.wait(TIMEOUT)
        worker.log[0].join(TIMEOUT)
        worker.sock.close()
        return returncode, worker.log[1]["data"].decode()

    def test_socket_closed_before_job_exits_quietly(self):
        self.assertEqual(self.finish_with_bytes(b""), (0, ""))

    def test_malformed_job_frames_exit_non_zero_with_a_log_message(self):
        cases = [
            (b"\x00\x00\x00\x05{bad}", "not UTF-8 JSON"),
            (struct.pack(">I", 17 * 1024 * 1024), "over the 16777216-byte limit"),
            (encode_frame({"type": "nope"}), 'type "job"'),
            (encode_frame({"type": "job", "script": 1, "max_result_bytes": 5}), "script"),
            (encode_frame({"type": "job", "script": "", "max_result_bytes": True}),
             "max_result_bytes"),
            (b"\x00\x00\x00\x10{}", "closed after 2 of 16"),
            (b"\x00\x00", "frame header"),
        ]
        for data, needle in cases:
            with self.subTest(needle=needle):
                returncode, log = self.finish_with_bytes(data)
                self.assertNotEqual(returncode, 0)
                self.assertIn(needle, log)

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


def files_of(test, finished):
    """{name: (bytes, media type)} of a result frame's files, checking sizes."""
    import base64
    out = {}
    for entry in finished.frame.get("files", []):
        data = base64.b64decode(entry["content_base64"])
        test.assertEqual(entry["size"], len(data), entry["name"])
        out[entry["name"]] = (data, entry["media_type"])
    return out


class OutputFilesTest(unittest.TestCase):
    """What a script leaves in its outputs folder comes back, within caps."""

    def test_a_pandas_csv_round_trips_byte_for_byte_and_oddities_are_skipped(self):
        finished = run_script(self, dedent("""
            import os, stat
            import pandas as pd
            OUT = os.environ["PYEXEC_OUTPUTS_DIR"]
            START = (sorted(os.listdir(OUT)), stat.S_IMODE(os.stat(OUT).st_mode))
            def main():
                df = pd.DataFrame({"city": ["Zürich", "Oslo"], "t": [1.5, -3.0]})
                df.to_csv(os.path.join(OUT, "report.csv"), index=False)
                os.makedirs(os.path.join(OUT, "sub", "deeper"))
                with open(os.path.join(OUT, "sub", "deeper", "raw.bin"), "wb") as f:
                    f.write(bytes(range(256)))
                with open(os.path.join(OUT, "notes.TXT"), "w") as f:
                    f.write("hi")
                os.symlink("/etc", os.path.join(OUT, "etc"))
                os.symlink("/etc/hostname", os.path.join(OUT, "hostname"))
                os.symlink(os.path.join(OUT, "report.csv"), os.path.join(OUT, "again.csv"))
                os.mkfifo(os.path.join(OUT, "fifo"))
                return {"start": START, "csv": df.to_csv(index=False)}
        """))
        result = finished.frame["result"]
        self.assertEqual(result["start"], [[], 0o777])
        files = files_of(self, finished)
        self.assertEqual(list(files), ["notes.TXT", "report.csv", "sub/deeper/raw.bin"])
        self.assertEqual(files["report.csv"], (result["csv"].encode(), "text/csv"))
        self.assertEqual(files["sub/deeper/raw.bin"],
                         (bytes(range(256)), "application/octet-stream"))
        self.assertEqual(files["notes.TXT"], (b"hi", "text/plain"))
        self.assertIs(finished.frame["files_truncated"], False)
        self.assertEqual(finished.frame["files_omitted"], [])

    def test_no_files_no_members_and_an_error_carries_none(self):
        none, failed = run_scripts(self, [
            "def main():\n    return {}\n",
            dedent("""
                import os
                def main():
                    open(os.path.join(os.environ["PYEXEC_OUTPUTS_DIR"], "a.txt"), "w").close()
                    return {"x": float("nan")}
            """),
        ])
        self.assertEqual(none.raw, b'{"type":"result","result":{}}')
        self.assertEqual(failed.frame["kind"], "invalid_result")
        self.assertNotIn("files", failed.frame)

    def test_beyond_the_caps_files_are_omitted_and_named(self):
        script = dedent("""
            import os
            OUT = os.environ["PYEXEC_OUTPUTS_DIR"]
            def main():
                for name, size in [("a", 10), ("b", 300), ("c", 10), ("d", 10), ("e", 1)]:
                    with open(os.path.join(OUT, name), "wb") as f:
                        f.write(b"x" * size)
                return {}
        """)
        by_bytes, by_count = run_scripts(self, [script, script], max_files_bytes=100)
        # 300 bytes don't fit what is left of 100; the smaller ones after it do.
        self.assertEqual(list(files_of(self, by_bytes)), ["a", "c", "d", "e"])
        self.assertIs(by_bytes.frame["files_truncated"], True)
        self.assertEqual(by_bytes.frame["files_omitted"], ["b"])
        counted = run_script(self, script, max_files=2)
        self.assertEqual(list(files_of(self, counted)), ["a", "b"])
        self.assertEqual(counted.frame["files_omitted"], ["c", "d", "e"])
        del by_count

    def test_an_outputs_folder_swapped_for_a_symlink_gives_nothing(self):
        finished = run_script(self, dedent("""
            import os, shutil
            OUT = os.environ["PYEXEC_OUTPUTS_DIR"]
            def main():
                shutil.rmtree(OUT)
                os.makedirs("/tmp/pyexec-elsewhere-" + str(os.getpid()), exist_ok=True)
                os.symlink("/etc", OUT)
                return {}
        """))
        self.assertEqual(finished.frame, {"type": "result", "result": {}})

    def test_media_types_come_from_pythons_own_table(self):
        import runner
        for name, expected in [("a.csv", "text/csv"), ("b/c.JSON", "application/json"),
                               ("x.png", "image/png"), ("noext", "application/octet-stream"),
                               (".hidden", "application/octet-stream"),
                               ("d.unknownext", "application/octet-stream")]:
            self.assertEqual(runner.media_type(name), expected, name)


if __name__ == "__main__":
    unittest.main()
