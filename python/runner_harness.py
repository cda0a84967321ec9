"""The harness the runner's tests share: the real runner, wired like the server wires it.

A `Worker` is python/runner.py started as a subprocess under the jail's own
flags (`-I -X utf8 -B -u`, from another directory), with the job socket on
fd 3, the capture pipes on fds 4/5 and a log pipe on fd 2; the tests speak the
framed protocol to it and check the frames and the captured output.
`shape_problems` is the shape checker the runner's real frames and
python/protocol_examples.json (the Rust side's examples) are both held to.

Not a test module itself (unittest discovers test_*.py); the test_*.py files
next to it, one per module of pyexec_runner/, import it.
"""

import fcntl
import json
import os
import socket
import struct
import shutil
import subprocess
import sys
import tempfile
import threading

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
                or sorted(entry) != ["content_base64", "content_type", "media_type", "name",
                                  "size"]):
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


def files_of(test, finished):
    """{name: (bytes, media type)} of a result frame's files, checking sizes."""
    import base64
    out = {}
    for entry in finished.frame.get("files", []):
        data = base64.b64decode(entry["content_base64"])
        test.assertEqual(entry["size"], len(data), entry["name"])
        out[entry["name"]] = (data, entry["media_type"])
    return out
