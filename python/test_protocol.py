"""Tests for pyexec_runner/protocol.py: the job frame's checks, and
python/protocol_examples.json, the frames the Rust codec tests decode too.

The examples are held to the same shape checker as the runner's real frames,
decoded by the runner's own parser and rebuilt by its own encoders, so the
two sides cannot drift apart. Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import base64
import json
import os
import shutil
import socket
import struct
import tempfile
import unittest

from pyexec_runner import outputs, protocol, results
from runner_harness import (EXAMPLES, TIMEOUT, encode_frame, run_scripts, shape_problems,
                            split_frames, start_worker)


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


class ExamplesThroughTheRunnersOwnCodeTest(unittest.TestCase):
    """The runner's own parser reads every job example, and its own encoders
    write every example answer byte for byte."""

    @classmethod
    def setUpClass(cls):
        with open(EXAMPLES, encoding="utf-8") as f:
            cls.examples = json.load(f)

    def test_the_runner_parses_every_job_example(self):
        for example in self.examples["to_runner"]:
            with self.subTest(example=example):
                job = protocol.parse_job(json.dumps(example).encode("utf-8"))
                self.assertEqual(job.script, example["script"])
                if "input" in example:
                    self.assertEqual(job.input, example["input"])
                else:
                    self.assertIs(job.input, protocol.NO_INPUT)
                self.assertEqual((job.max_result_bytes, job.max_files, job.max_files_bytes),
                                 (example["max_result_bytes"], example["max_files"],
                                  example["max_files_bytes"]))

    def test_the_runners_encoders_write_every_example_answer(self):
        compact = {"separators": (",", ":"), "ensure_ascii": False}
        for example in self.examples["from_runner"]:
            with self.subTest(example=example):
                if example["type"] == "ready":
                    written = protocol.encode_frame(protocol.ready_message(
                        example["python"], example["numpy"], example["pandas"]))
                elif example["type"] == "error":
                    written = protocol.error_frame(example["kind"], example["message"],
                                                   example["line"], example["traceback"])
                elif "files" in example:
                    self.assertEqual(json.loads(self.result_with_files(example)), example)
                    continue
                else:
                    written = results.result_frame(example["result"], 1 << 20)
                self.assertEqual(written, json.dumps(example, **compact).encode("utf-8"))

    def result_with_files(self, example):
        """The example's result frame as the runner writes it for a folder holding
        its files (and the omitted one, which a byte cap keeps out)."""
        root = tempfile.mkdtemp(prefix="pyexec-protocol-test-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        kept = 0
        for entry in example["files"]:
            path = os.path.join(root, entry["name"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(base64.b64decode(entry["content_base64"]))
            kept += entry["size"]
        for name in example["files_omitted"]:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"x" * (kept + 1))
        written = results.result_frame(
            example["result"], 1 << 20,
            lambda: outputs.output_files_json(root, len(example["files"]) + 1, kept))
        # The runner lists files sorted by name; the example need not be.
        frame = json.loads(written)
        order = [entry["name"] for entry in example["files"]]
        frame["files"].sort(key=lambda entry: order.index(entry["name"]))
        return json.dumps(frame)


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
