"""The job side of the protocol with the server: length-prefixed JSON frames.

Each frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON.
The server sends one "job" frame (`read_job` checks it into a `Job`); the
runner sends "ready" once it is warm, then exactly one "result" or "error".
python/protocol_examples.json holds example frames both languages' tests
decode; worker/src/job/protocol.rs is the server's side.
"""

import _json
import json
import os

from .private import own_builtins

# Taken before any script runs (see private.py).
_os_read = os.read
_os_write = os.write
_json_loads = json.loads
own_builtins(globals())


MAX_JOB_FRAME_BYTES = 16 * 1024 * 1024
MAX_MESSAGE_BYTES = 8 * 1024
MAX_TRACEBACK_BYTES = 64 * 1024

RESULT_FRAME_PREFIX = b'{"type":"result","result":'
RESULT_FRAME_SUFFIX = b"}"

# main() gets no argument: distinct from an input of None (JSON null).
NO_INPUT = object()


def _make_json_encoder():
    """Build the compact, strict JSON encoder entirely from C parts.

    Equivalent to json.dumps(obj, ensure_ascii=False, allow_nan=False,
    separators=(",", ":")), but built now so that a script patching
    json.dumps or json.JSONEncoder cannot change how results are encoded.
    """
    iterencode = _json.make_encoder(
        None, None, _json.encode_basestring, None, ":", ",", False, False, False)
    join = "".join
    return lambda obj: join(iterencode(obj, 0))


encode_json = _make_json_encoder()


class ProtocolError(Exception):
    """The server sent something that is not a valid job frame."""


def write_all(fd, data):
    view = memoryview(data)
    while view:
        written = _os_write(fd, view)
        view = view[written:]


def send_frame(fd, payload_bytes):
    write_all(fd, len(payload_bytes).to_bytes(4, "big") + payload_bytes)


def _read_exactly(fd, count):
    """Read count bytes; returns fewer only if the peer closed the socket."""
    chunks = bytearray()
    while len(chunks) < count:
        chunk = _os_read(fd, min(count - len(chunks), 1 << 20))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


def read_job(fd):
    """Read the one job frame; None if the server closed the socket instead."""
    header = _read_exactly(fd, 4)
    if not header:
        return None
    if len(header) < 4:
        raise ProtocolError("the socket closed in the middle of a frame header")
    length = int.from_bytes(header, "big")
    if length > MAX_JOB_FRAME_BYTES:
        raise ProtocolError(
            f"job frame of {length} bytes is over the {MAX_JOB_FRAME_BYTES}-byte limit")
    body = _read_exactly(fd, length)
    if len(body) < length:
        raise ProtocolError(f"the socket closed after {len(body)} of {length} frame bytes")
    return parse_job(body)


class Job:
    """One job frame, checked: the script, main's input, the caps."""

    def __init__(self, script, job_input, max_result_bytes, max_files, max_files_bytes):
        self.script, self.input = script, job_input
        self.max_result_bytes = max_result_bytes
        self.max_files, self.max_files_bytes = max_files, max_files_bytes


def parse_job(body):
    try:
        job = _json_loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"job frame is not UTF-8 JSON: {exc}") from None
    if not isinstance(job, dict) or job.get("type") != "job":
        raise ProtocolError("expected a frame with type \"job\"")
    script = job.get("script")
    if type(script) is not str:
        raise ProtocolError("job.script must be a string")
    caps = []
    for name, default in (("max_result_bytes", None), ("max_files", 0),
                          ("max_files_bytes", 0)):
        value = job.get(name, default)
        if type(value) is not int or value < 0:
            raise ProtocolError(f"job.{name} must be a non-negative integer")
        caps.append(value)
    # A present input is passed, null included; an absent one is not.
    return Job(script, job["input"] if "input" in job else NO_INPUT, *caps)


def ready_message(python, numpy, pandas):
    """The "ready" message: the versions a warm job process runs."""
    return {"type": "ready", "python": python, "numpy": numpy, "pandas": pandas}


def encode_frame(obj):
    return encode_json(obj).encode("utf-8")


def error_frame(kind, message, line=None, traceback=None):
    return encode_frame({
        "type": "error",
        "kind": kind,
        "message": cap_utf8(printable(message), MAX_MESSAGE_BYTES),
        "line": line if type(line) is int else None,
        "traceback": None if traceback is None else _cap_traceback(printable(traceback)),
    })


def printable(text):
    """Make text valid UTF-8 (lone surrogates from the script become escapes)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def cap_utf8(text, limit):
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = " ... (truncated)"
    return data[:limit - len(marker)].decode("utf-8", "ignore") + marker


def _cap_traceback(text):
    """Keep the head and, mostly, the tail (innermost frames) of a long traceback."""
    data = text.encode("utf-8")
    if len(data) <= MAX_TRACEBACK_BYTES:
        return text
    head_bytes, tail_bytes = 8 * 1024, MAX_TRACEBACK_BYTES - 9 * 1024
    omitted = len(data) - head_bytes - tail_bytes
    head = data[:head_bytes].decode("utf-8", "ignore")
    tail = data[-tail_bytes:].decode("utf-8", "ignore")
    return f"{head}\n  ... ({omitted} bytes of traceback omitted) ...\n{tail}"
