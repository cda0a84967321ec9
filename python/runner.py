"""The pyexec job runner: what every job process runs, in both isolation modes.

This file owns everything between a warm interpreter and its one answer:
warm-up (importing numpy/pandas so the first job is fast), the job side of
the length-prefixed JSON protocol, running exactly one untrusted script with
its stdout/stderr pointed at the capture pipes (and `input`, when the job
carries one, as main's one argument), and turning whatever the script did
into exactly one "result" or "error" frame (`serve`), with the files the
script left in /tmp/outputs.

- spawn mode: nsjail runs this file; `main` warms up, seals the process
  (confine.py) and serves the job.
- fork mode: zygote.py imports this module, warms up once, and each job
  child it forks seals itself and calls the same `serve`.

File descriptors on entry to `serve` (set up by the server or the zygote):
    0, 1 -> /dev/null    2 -> the server's log (spawn) or /dev/null (fork)
    3    -> the job socket
    4, 5 -> the job's stdout / stderr capture pipes
Before the script runs, fds 1 and 2 point at the capture pipes and every
other descriptor but the job socket and /dev/null is closed: the script
never holds the server's log.

The script runs in this process and can do anything Python can: close fds,
monkeypatch modules and builtins, replace sys.stdout, write to fds. So every
tool the runner needs after the script starts is bound privately here, before
the script runs, and the reporting path never trusts shared mutable state.
"""

import binascii
import builtins
import datetime
import decimal
import fcntl
import gc
import inspect
import io
import linecache
import math
import mimetypes
import os
import platform
import signal
import stat
import sys
import types

import json
import _json

# The runner's directory: `python -I` leaves it off sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import confine  # noqa: E402

# Private references taken before any user code runs (see module docstring).
_os_read = os.read
_os_write = os.write
_os_dup2 = os.dup2
_os_close = os.close
_os_exit = os._exit
_isfinite = math.isfinite
_str_str = str.__str__
_int_int = int.__int__
_float_float = float.__float__
_int_repr = int.__repr__
_float_repr = float.__repr__
_str_repr = str.__repr__
_dict_len = dict.__len__
_dict_items = dict.items
_list_iter = list.__iter__
_tuple_iter = tuple.__iter__
_set_recursion_limit = sys.setrecursionlimit
_STARTUP_RECURSION_LIMIT = sys.getrecursionlimit()
_settrace = sys.settrace
_setprofile = sys.setprofile
_gc_disable = gc.disable
_json_loads = json.loads
_os_open = os.open
_os_fstat = os.fstat
_os_scandir = os.scandir
_os_mkdir = os.mkdir
_os_chmod = os.chmod
_os_listdir = os.listdir
_s_isreg = stat.S_ISREG
_b2a_base64 = binascii.b2a_base64
_signature = inspect.signature
_Parameter = inspect.Parameter
# Give the runner its own copy of every builtin: global lookups find these
# before the builtins module, which the script is free to patch.
globals().update({name: value for name, value in vars(builtins).items()
                  if not name.startswith("_")})

SCRIPT_FILENAME = "<script>"
SCRIPT_MODULE_NAME = "script"

JOB_FD, STDOUT_PIPE_FD, STDERR_PIPE_FD = 3, 4, 5
# Above any descriptor a jail's RLIMIT_NOFILE lets a process open.
MAX_FD = 1 << 20
MAX_JOB_FRAME_BYTES = 16 * 1024 * 1024
MAX_MESSAGE_BYTES = 8 * 1024
MAX_TRACEBACK_BYTES = 64 * 1024
# serde_json refuses input nested deeper than 128; the result sits two levels
# down in its frame, so 100 leaves the server comfortable headroom.
MAX_RESULT_DEPTH = 100

EXIT_PROTOCOL_ERROR = 2
EXIT_WARMUP_FAILED = 3
EXIT_INTERNAL_ERROR = 70

RESULT_FRAME_PREFIX = b'{"type":"result","result":'
RESULT_FRAME_SUFFIX = b"}"

# Where a script leaves files for the answer (created empty before it runs).
# The tests, which run the runner outside a jail, point it elsewhere.
OUTPUTS_DIR = os.environ.get("PYEXEC_OUTPUTS_DIR") or "/tmp/outputs"
# At most this many names are listed as omitted; a longer name is left out.
# The server sizes its answer frame by both (worker/src/protocol.rs).
MAX_OMITTED_LISTED = 100
MAX_FILE_NAME_BYTES = 1024
# The walk of OUTPUTS_DIR: how deep it goes, and how many entries it looks at.
MAX_OUTPUT_DEPTH = 16
MAX_OUTPUT_ENTRIES = 10000
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
# Python's own table of extensions (never the host's mime.types files), taken
# now: a script can change the mimetypes module, not this copy.
_MEDIA_TYPES = dict(mimetypes.MimeTypes().types_map[True])
# main() gets no argument: distinct from an input of None (JSON null).
NO_INPUT = object()


def _private_fd(fd):
    """Duplicate fd to a close-on-exec descriptor the script is unlikely to touch."""
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    except OSError:
        # The jail's RLIMIT_NOFILE may be tiny; any private copy will do.
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)


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


def _make_libc_flush():
    """Return a function that flushes C stdio buffers (printf from extensions).

    os._exit skips libc's exit-time flush, so without this C-level output
    that was still buffered would be lost instead of captured.
    """
    try:
        import ctypes
        fflush = ctypes.CDLL(None).fflush
        fflush.argtypes = [ctypes.c_void_p]
        fflush.restype = ctypes.c_int
        return lambda: fflush(None)
    except Exception:
        return lambda: None


_encode_json = _make_json_encoder()
_flush_libc = _make_libc_flush()


# ---------------------------------------------------------------- framing


class ProtocolError(Exception):
    """The server sent something that is not a valid job frame."""


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = _os_write(fd, view)
        view = view[written:]


def send_frame(fd, payload_bytes):
    _write_all(fd, len(payload_bytes).to_bytes(4, "big") + payload_bytes)


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


def encode_frame(obj):
    return _encode_json(obj).encode("utf-8")


def error_frame(kind, message, line=None, traceback=None):
    return encode_frame({
        "type": "error",
        "kind": kind,
        "message": _cap_utf8(_printable(message), MAX_MESSAGE_BYTES),
        "line": line if type(line) is int else None,
        "traceback": None if traceback is None else _cap_traceback(_printable(traceback)),
    })


def _printable(text):
    """Make text valid UTF-8 (lone surrogates from the script become escapes)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cap_utf8(text, limit):
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


# ---------------------------------------------------------------- warm-up


def warm_up():
    """Import numpy/pandas and exercise their lazily-loaded parts once."""
    import numpy
    import pandas

    frame = pandas.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "x"], "c": [0.5, 1.5, 2.5]})
    frame.groupby("b").agg({"a": "sum", "c": "mean"}).reset_index().to_dict(orient="records")
    repr(frame)
    frame.describe()
    pandas.read_csv(io.StringIO("a,b\n1,2\n"))
    pandas.to_datetime(["2024-01-01"])
    frame["b"].str.upper()
    frame.merge(frame, on="a")
    frame.sort_values("c").pivot_table(index="b", values="a")
    numpy.linalg.inv(numpy.eye(3))
    numpy.random.default_rng().random(3)
    # Everything alive now is long-lived library state: keep the script's
    # garbage collections from scanning it over and over.
    gc.collect()
    gc.freeze()
    bind_libraries()
    return {
        "type": "ready",
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
    }


def _module_name(tp):
    try:
        # Via type's own descriptor: a class can't lie about it with a property.
        module = type.__dict__["__module__"].__get__(tp, type)
    except Exception:
        return None
    return module if type(module) is str else None


def _type_name(tp):
    """Fully qualified type name, with numpy/pandas types under their public names."""
    name = tp.__qualname__
    module = _module_name(tp)
    if module is None or module in ("builtins", "__main__", SCRIPT_MODULE_NAME):
        return name
    for library in (_NUMPY, _PANDAS):
        if library is None:
            continue
        public = library.name
        if module == public or module.startswith(public + "."):
            if library.namespace.get(name) is tp:
                return f"{public}.{name}"
    return f"{module}.{name}"


# ------------------------------------------------- numpy and pandas, privately

# The numpy and pandas types and functions the validator needs, taken from the
# modules warm-up imported (never imported here), before any script runs: a
# script that patches numpy or replaces sys.modules["numpy"] changes nothing.
# None when the library is not loaded.
_NUMPY = None
_PANDAS = None


def bind_libraries():
    """Take the private references to numpy and pandas (called by warm_up)."""
    global _NUMPY, _PANDAS
    numpy, pandas = sys.modules.get("numpy"), sys.modules.get("pandas")
    if numpy is not None:
        _NUMPY = types.SimpleNamespace(
            name="numpy",
            namespace=dict(vars(numpy)),
            generic=numpy.generic,
            ndarray=numpy.ndarray,
            # The scalars that convert: their .item() is a bool, int or float.
            json_scalars=(numpy.bool_, numpy.integer, numpy.floating),
            datetime64=numpy.datetime64,
            complexfloating=numpy.complexfloating,
            # Unbound methods of the base types, so a subclass's override never runs.
            item=numpy.generic.item,
            tolist=numpy.ndarray.tolist,
            # Module functions can be replaced by a script; numpy's types can't.
            isfinite=numpy.isfinite,
        )
    if pandas is not None:
        _PANDAS = types.SimpleNamespace(
            name="pandas",
            namespace=dict(vars(pandas)),
            DataFrame=pandas.DataFrame,
            Series=pandas.Series,
            Index=pandas.Index,
            Timestamp=pandas.Timestamp,
            Timedelta=pandas.Timedelta,
            NaT=pandas.NaT,
            NA=pandas.NA,
        )


# ------------------------------------------------------------- validation


class InvalidResult(Exception):
    """The value main() returned cannot be sent as a JSON result.

    `what` names the offending value, `why` says what is wrong and how to
    fix it; the path is filled in while the validator unwinds.
    """

    def __init__(self, what, why):
        super().__init__(what)
        self.what, self.why = what, why
        self.path = []  # keys/indexes, innermost first


_ANY_JSON_TYPE = "convert it to a dict, list, str, int, float, bool or None"


def _conversion_hint(value):
    # issubclass on type(value), never isinstance: isinstance would consult a
    # __class__ the script's object may fake.
    tp = type(value)
    numpy, pandas = _NUMPY, _PANDAS
    if numpy is not None:
        if tp is numpy.ndarray and value.dtype.kind == "M":
            return "convert it with numpy.datetime_as_string(arr).tolist()"
        if tp is numpy.ndarray and value.dtype.kind == "m":
            return 'convert it with (arr / numpy.timedelta64(1, "s")).tolist()'
        if issubclass(tp, numpy.ndarray):  # a subclass: masked array, matrix, ...
            return "convert it with arr.tolist()"
        if issubclass(tp, numpy.json_scalars):  # numpy.longdouble
            return "convert it with float(x)"
        if issubclass(tp, numpy.datetime64):
            return "convert it with str(x) (ISO 8601)"
        if issubclass(tp, numpy.complexfloating):
            return "convert it with [x.real, x.imag]"
        if issubclass(tp, numpy.generic):
            return "convert it with x.item()"
    if pandas is not None:
        if issubclass(tp, pandas.DataFrame):
            return ('convert it with df.to_dict(orient="records") (a list of rows) '
                    'or df.to_dict() (a dict per column)')
        if issubclass(tp, pandas.Series):
            return "convert it with series.to_dict() or series.tolist()"
        if issubclass(tp, pandas.Index):
            return "convert it with index.tolist()"
        if value is pandas.NaT:
            return "use None for a missing time"
        if value is pandas.NA:
            return "use None for a missing value"
        if issubclass(tp, pandas.Timestamp):
            return "convert it with ts.isoformat()"
        if issubclass(tp, pandas.Timedelta):
            return "convert it with td.total_seconds()"
        module = _module_name(tp)
        if module is not None and module.startswith("pandas."):
            return "convert it with x.tolist(), x.to_dict() or str(x)"
    if issubclass(tp, (set, frozenset)):
        return "convert it with sorted(x) or list(x)"
    if issubclass(tp, (bytes, bytearray, memoryview)):
        return "convert it with x.decode() (or base64 for binary data)"
    if issubclass(tp, (datetime.date, datetime.time)):
        return "convert it with x.isoformat()"
    if issubclass(tp, datetime.timedelta):
        return "convert it with x.total_seconds()"
    if issubclass(tp, decimal.Decimal):
        return "convert it with float(x) or str(x)"
    if issubclass(tp, complex):
        return "convert it with [x.real, x.imag]"
    return _ANY_JSON_TYPE


def _unencodable(value):
    try:
        hint = _conversion_hint(value)
    except Exception:
        hint = _ANY_JSON_TYPE
    pandas = _PANDAS
    if pandas is not None and (value is pandas.NaT or value is pandas.NA):
        what = "pandas.NaT" if value is pandas.NaT else "pandas.NA"
    else:
        what = f"a {_type_name(type(value))}"
    return InvalidResult(what, f"which JSON cannot encode: {hint}")


def _not_finite(value):
    return InvalidResult(
        f"the float {_float_repr(value)}", "which JSON cannot encode: use None for missing values")


def _plain_str(value):
    """Exact-str copy of a str (subclass), rejecting text that is not valid UTF-8."""
    if type(value) is not str:
        value = _str_str(value)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidResult(
                "a string containing a lone surrogate",
                "which is not valid UTF-8: remove it or encode the text properly") from None
    return value


def to_plain_json(value, depth=0, active=None):
    """Return a copy of value built only from exact JSON builtin types.

    Policy: exact JSON types pass; subclasses of str/int/float/list/tuple/dict
    (numpy.float64, numpy.str_, IntEnum, OrderedDict, ...) are accepted and
    converted through the base type's own method, so the script's overrides
    never run. numpy's bool, integer and floating scalars become their Python
    value and an ndarray its nested lists (as orjson's OPT_SERIALIZE_NUMPY
    treats them). Anything else (pandas objects, sets, bytes, dates, ...) and
    NaN or Infinity anywhere are rejected. Raises InvalidResult.
    """
    tp = type(value)
    if value is None or tp is bool or tp is int:
        return value
    if tp is str:
        return value if value.isascii() else _plain_str(value)
    if tp is dict or tp is list or tp is tuple:
        return _plain_container(value, tp, depth + 1, active if active is not None else set())
    if tp is float or issubclass(tp, float):
        if tp is not float:
            value = _float_float(value)
        if not _isfinite(value):
            raise _not_finite(value)
        return value
    if issubclass(tp, int):
        return _int_int(value)
    if issubclass(tp, str):
        return _plain_str(value)
    if issubclass(tp, (dict, list, tuple)):
        return _plain_container(value, tp, depth + 1, active if active is not None else set())
    numpy = _NUMPY
    if numpy is not None:
        if tp is numpy.ndarray:
            return _plain_array(value, depth, active if active is not None else set())
        if issubclass(tp, numpy.json_scalars):
            plain = numpy.item(value)
            kind = type(plain)
            if kind is float:
                if not _isfinite(plain):
                    raise _not_finite(plain)
                return plain
            if kind is int or kind is bool:
                return plain
    raise _unencodable(value)


def _plain_container(value, tp, depth, active):
    if depth > MAX_RESULT_DEPTH:
        raise _too_deep()
    ident = id(value)
    if ident in active:
        raise _circular()
    active.add(ident)
    if tp is dict or issubclass(tp, dict):
        plain = _plain_dict(value, depth, active)
    else:
        plain = _plain_list(_list_iter(value) if issubclass(tp, list) else _tuple_iter(value),
                            depth, active)
    active.discard(ident)
    return plain


def _too_deep():
    return InvalidResult(f"a value nested more than {MAX_RESULT_DEPTH} levels deep",
                         "which is too deep to send: flatten the structure")


def _circular():
    return InvalidResult("a circular reference (a container that contains itself)",
                         "which JSON cannot encode")


def _plain_array(array, depth, active):
    """An exact numpy.ndarray as nested lists (a 0-d array as its one value).

    Arrays of bools, ints and finite floats convert whole in C; any other
    array (object, str, complex, with NaN, ...) is walked like a list, which
    finds what JSON can't hold and names its index.
    """
    numpy = _NUMPY
    if depth + array.ndim > MAX_RESULT_DEPTH:
        raise _too_deep()
    dtype = array.dtype
    kind = dtype.kind
    if kind in "biu" or kind == "f" and dtype.itemsize <= 8 and numpy.isfinite(array).all():
        return numpy.tolist(array)
    if kind in "Mm":  # tolist() would give bare nanosecond counts
        raise _unencodable(array)
    ident = id(array)
    if ident in active:  # an object array holding itself
        raise _circular()
    active.add(ident)
    plain = to_plain_json(numpy.tolist(array), depth, active)
    active.discard(ident)
    return plain


def _plain_key(key):
    """The string json.dumps writes for a dict key; raises InvalidResult.

    str as is; int, float, bool and None as json.dumps writes them ("1",
    "1.5", "true", "null"); numpy bool, integer and floating scalars as their
    Python value would be.
    """
    tp = type(key)
    if tp is str or issubclass(tp, str):
        try:
            return _plain_str(key)
        except InvalidResult as exc:
            exc.what = "a dict key containing a lone surrogate"
            raise
    if key is None:
        return "null"
    if tp is bool:
        return "true" if key else "false"
    if issubclass(tp, int):
        try:
            return _int_repr(key)
        except ValueError:  # over sys.get_int_max_str_digits()
            raise InvalidResult("a dict key that is an int too long to write in decimal",
                                "which Python refuses to convert to a string: use a shorter key"
                                ) from None
    if issubclass(tp, float):
        value = _float_float(key)
        if not _isfinite(value):
            raise InvalidResult(f"a dict key that is the float {_float_repr(value)}",
                                "which JSON cannot encode: use a string key such as \"nan\"")
        return _float_repr(value)
    numpy = _NUMPY
    if numpy is not None and issubclass(tp, numpy.json_scalars):
        plain = numpy.item(key)
        if type(plain) in (bool, int, float):
            return _plain_key(plain)
    raise InvalidResult(
        f"a dict key of type {_type_name(tp)} ({_short_repr(key)})",
        "but JSON object keys must be strings, numbers, booleans or None: "
        "convert it with str(key)")


def _plain_dict(value, depth, active):
    plain = {}
    for key, item in _dict_items(value):
        if type(key) is not str or not key.isascii():
            key = _plain_key(key)
        tp = type(item)
        if (tp is int or tp is str and item.isascii() or item is None or tp is bool
                or tp is float and _isfinite(item)):
            plain[key] = item  # fast path for the common scalars
            continue
        try:
            plain[key] = to_plain_json(item, depth, active)
        except InvalidResult as exc:
            exc.path.append(key)
            raise
    if len(plain) != _dict_len(value):
        raise _duplicate_key(value)
    return plain


def _duplicate_key(value):
    """The error for a dict two of whose keys write as the same JSON key."""
    seen = {}
    for key, _ in _dict_items(value):
        plain = _plain_key(key)
        if plain in seen:
            return InvalidResult(
                f"two keys that both become {_encode_json(plain)} in JSON "
                f"({_describe_key(seen[plain])} and {_describe_key(key)})",
                "but a JSON object cannot hold a key twice: keep one of them or rename the other")
        seen[plain] = key
    return InvalidResult("a dict whose keys changed while it was checked", "which cannot be sent")


def _describe_key(key):
    """`the int 1`, `the str '1'`: shown through the base types' own repr."""
    tp = type(key)
    if issubclass(tp, str):
        shown = _str_repr(key)
    elif key is None:
        return "None"
    elif tp is bool:
        shown = repr(key)
    elif issubclass(tp, int):
        shown = _int_repr(key)
    elif issubclass(tp, float):
        shown = _float_repr(key)
    else:  # a numpy scalar
        shown = _plain_key(key)
    return f"the {_type_name(tp)} {shown}"


def _plain_list(items, depth, active):
    plain = []
    append = plain.append
    for index, item in enumerate(items):
        tp = type(item)
        if (tp is int or tp is float and _isfinite(item) or tp is str and item.isascii()
                or item is None or tp is bool):
            append(item)  # fast path for the common scalars
            continue
        try:
            append(to_plain_json(item, depth, active))
        except InvalidResult as exc:
            exc.path.append(index)
            raise
    return plain


def _short_repr(value, limit=60):
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe_path(path_innermost_first):
    parts = ["result"]
    for key in reversed(path_innermost_first):
        parts.append(f"[{_short_repr(key)}]")
    return "".join(parts)


def check_result(value):
    """Validate main()'s return value; returns (plain_copy, None) or (None, message)."""
    if type(value) is not dict and not issubclass(type(value), dict):
        return None, _not_a_dict_message(value)
    try:
        return to_plain_json(value), None
    except InvalidResult as exc:
        return None, f"main() returned {exc.what} at {describe_path(exc.path)}, {exc.why}"
    except RecursionError:
        return None, "main() returned a value nested too deeply to encode as JSON"


def _not_a_dict_message(value):
    name = _type_name(type(value))
    message = f"main() must return a dict (a JSON object), it returned {name}"
    if value is None:
        message += ": is a `return` statement missing at the end of main()?"
    elif isinstance(value, types.CoroutineType):
        value.close()  # avoid a "never awaited" warning
        message += ": main must be a plain def, not async def (call asyncio.run inside it)"
    else:
        message += "; wrap it, for example return {\"value\": ...}"
    return message


# -------------------------------------------------------------- tracebacks


def _safe_str(exc):
    try:
        text = str(exc)
        return text if type(text) is str else _str_str(text)
    except BaseException:
        return "<exception str() failed>"


def exception_line(exc):
    """'ExcType: text', the way Python's own traceback ends."""
    name = _type_name(type(exc))
    text = _safe_str(exc)
    return f"{name}: {text}" if text else name


def _user_frames(tb, source_lines):
    """(lineno, function, source line) for each traceback entry in the script."""
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == SCRIPT_FILENAME:
            lineno = tb.tb_lineno
            text = ""
            if type(lineno) is int and 0 < lineno <= len(source_lines):
                text = source_lines[lineno - 1].strip()
            frames.append((lineno, code.co_name, text))
        tb = tb.tb_next
    return frames


def _format_frames(frames):
    """Format frames like Python does, collapsing runs of identical frames."""
    out, previous, repeats = [], None, 0
    for frame in frames:
        if frame == previous:
            repeats += 1
            if repeats >= 3:
                continue
        else:
            if repeats >= 3:
                out.append(f"  [Previous line repeated {repeats - 2} more times]\n")
            previous, repeats = frame, 0
        lineno, name, text = frame
        out.append(f'  File "{SCRIPT_FILENAME}", line {lineno}, in {name}\n')
        if text:
            out.append(f"    {text}\n")
    if repeats >= 3:
        out.append(f"  [Previous line repeated {repeats - 2} more times]\n")
    return "".join(out)


def _format_one(exc, source_lines):
    frames = _user_frames(exc.__traceback__, source_lines)
    parts = []
    if frames:
        parts.append("Traceback (most recent call last):\n")
        parts.append(_format_frames(frames))
    parts.append(exception_line(exc) + "\n")
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        parts.extend(note + "\n" for note in notes if type(note) is str)
    return "".join(parts)


def format_user_traceback(exc, source_lines):
    """The traceback of exc and its causes/contexts, showing only script frames."""
    chain, seen = [], set()
    current, link = exc, None
    while current is not None and id(current) not in seen and len(chain) < 20:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, (
                "\nThe above exception was the direct cause of the following exception:\n\n")
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, (
                "\nDuring handling of the above exception, another exception occurred:\n\n")
        else:
            current = None
    text = []
    for index in range(len(chain) - 1, -1, -1):
        current, link = chain[index]
        # Exceptions raised and handled inside a library (pandas chains a
        # KeyError onto KeyError, say) show nothing of the user's code.
        if index > 0 and not _user_frames(current.__traceback__, source_lines):
            continue
        text.append(_format_one(current, source_lines))
        if link:
            text.append(link)
    return "".join(text)


def innermost_user_line(exc):
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == SCRIPT_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


# ----------------------------------------------------------- running a job


class JobOutcome(Exception):
    """Carries the finished error frame out of the job stages."""

    def __init__(self, frame):
        super().__init__("job finished")
        self.frame = frame


def compile_script(source):
    try:
        return compile(source, SCRIPT_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise JobOutcome(_syntax_error_frame(exc)) from None
    except ValueError as exc:  # null bytes, lone surrogates
        line = _first_bad_character_line(source)
        where = f" at line {line}" if line else ""
        raise JobOutcome(error_frame("syntax_error", f"{_safe_str(exc)}{where}", line)) from None
    except (RecursionError, MemoryError):
        raise JobOutcome(error_frame(
            "syntax_error", "the script is nested too deeply to compile")) from None


def _syntax_error_frame(exc):
    import traceback
    line = exc.lineno if type(exc.lineno) is int else None
    message = exc.msg if type(exc.msg) is str else "invalid syntax"
    if line is not None:
        message += f" at line {line}"
        if type(exc.text) is str and exc.text.strip():
            message += f": {exc.text.strip()[:200]}"
    try:
        detail = "".join(traceback.format_exception_only(type(exc), exc))
    except Exception:
        detail = None
    return error_frame("syntax_error", message, line, detail)


def _first_bad_character_line(source):
    for index, char in enumerate(source):
        if char == "\0" or "\ud800" <= char <= "\udfff":
            return source.count("\n", 0, index) + 1
    return None


def new_script_module(source):
    module = types.ModuleType(SCRIPT_MODULE_NAME)
    module.__file__ = SCRIPT_FILENAME
    module.__builtins__ = builtins
    sys.modules[SCRIPT_MODULE_NAME] = module  # so pickle/dataclasses/typing find it
    # A None mtime keeps linecache.checkcache from evicting it: the script's
    # own traceback/inspect calls then show source lines too.
    linecache.cache[SCRIPT_FILENAME] = (
        len(source), None, source.splitlines(True), SCRIPT_FILENAME)
    return module


def _exit_message(exc, when):
    try:
        code = exc.code
        shown = "" if code is None else _short_repr(code, 200)
    except BaseException:
        shown = "..."
    return f"the script called sys.exit({shown}) {when}"


def _script_exception_frame(exc, source_lines, kind="script_exception"):
    try:
        message = exception_line(exc)
        line = innermost_user_line(exc)
        text = format_user_traceback(exc, source_lines)
    except BaseException:
        message, line, text = f"{type(exc).__name__} (could not be formatted)", None, None
    return error_frame(kind, message, line, text)


def run_user_code(code, module, source_lines, job_input=NO_INPUT):
    """Execute the script and call main() (with the job's input, if it has
    one); returns main()'s value or raises JobOutcome."""
    stage, main, value, failure, mismatch = "loading", None, None, None, None
    try:
        exec(code, module.__dict__)
        stage = "finding main"
        main = module.__dict__.get("main")
        if callable(main):
            # Before main runs: a request whose input main can't take (or
            # that lacks the one main needs) is the caller's mistake, not a
            # TypeError from inside the script.
            stage = "checking main's parameters"
            mismatch = signature_mismatch(main, job_input)
            if mismatch is None:
                stage = "running main"
                value = main() if job_input is NO_INPUT else main(job_input)
    except BaseException as exc:
        failure = exc
    # A trace or profile hook the script installed would run on every Python
    # call the runner makes from here on; remove them before making any.
    # (A hook that raises uninstalls itself, so a second attempt succeeds.)
    try:
        _setprofile(None)
    except BaseException:
        _setprofile(None)
    _settrace(None)
    regain_control()

    if failure is not None:
        raise JobOutcome(_failure_frame(failure, stage, source_lines))
    if stage == "finding main":
        raise JobOutcome(_missing_main_frame(main))
    if mismatch is not None:
        message, line = mismatch
        raise JobOutcome(error_frame("invalid_request", message, line))
    return value


_POSITIONAL = (_Parameter.POSITIONAL_ONLY, _Parameter.POSITIONAL_OR_KEYWORD,
               _Parameter.VAR_POSITIONAL)


def signature_mismatch(main, job_input):
    """None if main can be called as the request asks (with the input as its
    one argument, or with none), else (message, line of main's def).

    Callables inspect can't read (some C functions) are called as asked and
    answer for themselves. inspect's helpers are module globals a script can
    patch: a script that does only changes its own job's answer, which is
    why this check, unlike the reporting path, needs no private copies.
    """
    try:
        signature = _signature(main)
    except (ValueError, TypeError):
        return None
    try:
        if job_input is NO_INPUT:
            signature.bind()
        else:
            signature.bind(job_input)
        return None
    except TypeError:
        pass
    # Only names and kinds: showing defaults or annotations would run their
    # __repr__, the script's code.
    parameters = list(signature.parameters.values())
    names = ", ".join(p.name for p in parameters if type(p.name) is str)
    line = _def_line(main)
    if job_input is NO_INPUT:
        required = [p.name for p in parameters
                    if p.default is _Parameter.empty
                    and p.kind not in (_Parameter.VAR_POSITIONAL, _Parameter.VAR_KEYWORD)]
        shown = ", ".join(required)
        return (f"main() requires the parameter{'s' if len(required) != 1 else ''} {shown}, "
                "but the request sent no input: send one in \"input\", or give "
                f"{'them' if len(required) != 1 else 'it'} a default", line)
    if not any(p.kind in _POSITIONAL for p in parameters):
        return ("the request sent an input, but main() takes no parameter: "
                "define def main(input): to receive it", line)
    return (f"main({names}) cannot take the request's input as its one argument: "
            "give it exactly one parameter without a default", line)


def _def_line(function):
    """The line of the script where `function` is defined, if it is the script's."""
    if type(function) is not types.FunctionType:
        return None
    code = function.__code__
    return code.co_firstlineno if code.co_filename == SCRIPT_FILENAME else None


def _failure_frame(exc, stage, source_lines):
    if isinstance(exc, SystemExit):
        when = ("before main() returned" if stage == "running main"
                else "while the script was loading, before main() ran")
        return error_frame("worker_exited", _exit_message(exc, when))
    if isinstance(exc, MemoryError):
        # An allocation refused under the jail's address-space limit is the
        # same event for the user as the memory cgroup's kill.
        return _script_exception_frame(exc, source_lines, kind="memory_limit")
    return _script_exception_frame(exc, source_lines)


def _missing_main_frame(main):
    if main is None:
        return error_frame("missing_main", "the script defines no callable main()")
    return error_frame(
        "missing_main",
        f"the script's main is a {_type_name(type(main))}, not a function: define def main(): ...")


def regain_control():
    """Undo process-wide state the script may have changed that would hurt reporting."""
    _gc_disable()  # no script __del__ can run in the middle of reporting
    try:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.setitimer(signal.ITIMER_PROF, 0)
    except Exception:
        pass
    _set_recursion_limit(_STARTUP_RECURSION_LIMIT)


def result_frame(value, max_result_bytes, files=None):
    """The frame for main()'s value: a result (with the output files' JSON
    members from `files()`, if given) or the error that makes it unsendable."""
    plain, problem = check_result(value)
    if problem is not None:
        return error_frame("invalid_result", problem)
    try:
        encoded = _encode_json(plain).encode("utf-8")
    except ValueError:
        # What validation lets through and the encoder refuses: an int with
        # more digits than sys.get_int_max_str_digits() (4300 by default).
        # Checking every int up front would slow the common path.
        return error_frame("invalid_result", _long_int_message(plain))
    if len(encoded) > max_result_bytes:
        return error_frame(
            "result_too_large",
            f"the result is {len(encoded)} bytes of JSON, over the {max_result_bytes}-byte limit")
    members = b"" if files is None else files()
    return RESULT_FRAME_PREFIX + encoded + members + RESULT_FRAME_SUFFIX


def _long_int_message(plain):
    path = _long_int_path(plain)
    where = "" if path is None else f" at {describe_path(path)}"
    return (f"main() returned an int too long to write in decimal{where}, which Python "
            "refuses to convert beyond sys.get_int_max_str_digits() digits: send str(x) "
            "after sys.set_int_max_str_digits(0), or hex(x)")


def _long_int_path(value):
    """The path (innermost first) to an int str() refuses, in a validated result."""
    tp = type(value)
    if tp is int:
        try:
            _int_repr(value)
        except ValueError:
            return []
        return None
    if tp is dict:
        items = _dict_items(value)
    elif tp is list:
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        path = _long_int_path(item)
        if path is not None:
            path.append(key)
            return path
    return None


def run_job(source, max_result_bytes, job_input=NO_INPUT, max_files=0, max_files_bytes=0):
    """Run one script to completion and return the frame (bytes) to report.

    Output files are collected only once main()'s value is known to be
    sendable: a job that answers with an error carries none.
    """
    try:
        code = compile_script(source)
        module = new_script_module(source)
        value = run_user_code(code, module, source.splitlines(), job_input)
    except JobOutcome as outcome:
        return outcome.frame
    return result_frame(value, max_result_bytes,
                        lambda: output_files_json(OUTPUTS_DIR, max_files, max_files_bytes))


# ------------------------------------------------------------ output files


def prepare_outputs_dir(path=None):
    """Create the empty, world-writable folder a script leaves its files in."""
    path = path or OUTPUTS_DIR
    try:
        _os_mkdir(path, 0o777)
    except FileExistsError:
        if _os_listdir(path):
            raise OSError(f"{path} is not empty before the script runs") from None
    _os_chmod(path, 0o777)  # past the umask


def output_files_json(root, max_files, max_bytes):
    """The result frame's file members (`,"files":[...]` and the rest), or
    b"" when the script left no regular file.

    Read here, inside the sandbox, never by the server: regular files only
    (symlinks, FIFOs, sockets and devices are skipped, and no symlink is ever
    followed, in the folders either), names relative to `root` and sorted.
    Files beyond `max_files`, or that would take the total past `max_bytes`,
    are left out and named in `files_omitted`; that is never a failure.
    """
    found, truncated, omitted = _walk_outputs(root)
    entries, total = [], 0
    for name, parts in found:
        if len(entries) >= max_files or len(name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
            omitted.append(name)
            continue
        data = _read_regular_file(root, parts, max_bytes - total)
        if data is None:  # gone, no longer a regular file, or unreadable
            continue
        if data is False:  # does not fit what is left of the byte cap
            omitted.append(name)
            continue
        total += len(data)
        entries.append(b'{"name":' + _encode_json(name).encode("utf-8")
                       + b',"size":' + _int_repr(len(data)).encode()
                       + b',"media_type":' + _encode_json(media_type(name)).encode()
                       + b',"content_base64":"' + _b2a_base64(data, newline=False) + b'"}')
    truncated = truncated or bool(omitted)
    if not entries and not truncated:
        return b""
    listed = [_cap_utf8(name, MAX_FILE_NAME_BYTES) for name in omitted[:MAX_OMITTED_LISTED]]
    return (b',"files":[' + b",".join(entries) + b'],"files_truncated":'
            + (b"true" if truncated else b"false")
            + b',"files_omitted":' + _encode_json(listed).encode("utf-8"))


def media_type(name):
    """The media type Python's mimetypes table gives the name's extension."""
    base = name.rpartition("/")[2]
    dot = base.rfind(".")
    if dot <= 0:
        return "application/octet-stream"
    extension = base[dot:]
    return (_MEDIA_TYPES.get(extension) or _MEDIA_TYPES.get(extension.lower())
            or "application/octet-stream")


def _walk_outputs(root):
    """([(relative name as shown, its path components as the file system
    has them)] of the regular files under root, sorted by name; whether the
    walk stopped short; the folders it did not descend into).

    Each folder is opened relative to its parent with O_NOFOLLOW, so a
    symlink swapped in for a folder is refused, not followed.
    """
    try:
        root_fd = _os_open(root, _O_DIR)
    except OSError:
        return [], False, []
    found, omitted, seen = [], [], 0
    pending = [(root_fd, "", (), 0)]
    truncated = False
    try:
        while pending:
            dir_fd, prefix, parts, depth = pending.pop()
            try:
                with _os_scandir(dir_fd) as entries:
                    for entry in entries:
                        seen += 1
                        if seen > MAX_OUTPUT_ENTRIES:
                            truncated = True
                            break
                        name = prefix + _printable(entry.name)
                        if entry.is_file(follow_symlinks=False):
                            found.append((name, parts + (entry.name,)))
                        elif entry.is_dir(follow_symlinks=False):
                            if depth + 1 >= MAX_OUTPUT_DEPTH:
                                omitted.append(name + "/")
                                continue
                            try:
                                child = _os_open(entry.name, _O_DIR, dir_fd=dir_fd)
                            except OSError:
                                continue
                            pending.append((child, name + "/", parts + (entry.name,),
                                            depth + 1))
            except OSError:
                pass
            finally:
                _os_close(dir_fd)
            if truncated:
                break
    finally:
        for dir_fd, _, _, _ in pending:
            _os_close(dir_fd)
    found.sort()
    return found, truncated, omitted


def _read_regular_file(root, parts, room):
    """The bytes of the file at root/parts if it is (still) a regular file
    reached without a symlink; False if it is larger than room; None if it
    can't be read."""
    fds = []
    try:
        fds.append(_os_open(root, _O_DIR))
        for part in parts[:-1]:
            fds.append(_os_open(part, _O_DIR, dir_fd=fds[-1]))
        fd = _os_open(parts[-1], _O_FILE, dir_fd=fds[-1])
        fds.append(fd)
        info = _os_fstat(fd)
        if not _s_isreg(info.st_mode):
            return None
        if info.st_size > room:
            return False
        chunks, left = [], info.st_size
        while left > 0:  # a file that grows meanwhile is read up to its size at fstat
            chunk = _os_read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        for fd in fds:
            _os_close(fd)


# ---------------------------------------------------------- stdio plumbing


def point_stdio_at_capture_pipes():
    """Route fds 1/2 to the job's capture pipes, then drop the originals.

    Working at the fd level captures print(), os.write(1, ...) and C code
    alike. fds 4/5 are closed now so that at the end only 1/2 hold the pipes.
    """
    _os_dup2(STDOUT_PIPE_FD, 1)
    _os_dup2(STDERR_PIPE_FD, 2)
    _os_close(STDOUT_PIPE_FD)
    _os_close(STDERR_PIPE_FD)
    # Unbuffered text streams straight onto the fds, whatever flags we were
    # started with, so output interleaves in order and nothing sits in a buffer.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                  errors="surrogateescape", write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", write_through=True)


def release_capture_pipes(devnull_fd):
    """Flush what the script wrote, then let the server see EOF on both pipes."""
    for name in ("stdout", "stderr"):
        try:
            stream = getattr(sys, name, None)
            if stream is not None:
                stream.flush()
        except BaseException:
            pass  # the script may have closed or replaced it
    try:
        _flush_libc()
    except BaseException:
        pass
    _os_dup2(devnull_fd, 1)
    _os_dup2(devnull_fd, 2)


def log(log_fd, message):
    if log_fd is None:
        return
    try:
        _write_all(log_fd, f"pyexec runner: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def close_all_fds_except(keep):
    """Close every descriptor but those in keep: the script reaches nothing else."""
    low = 0
    for fd in sorted(keep) + [None]:
        high = MAX_FD if fd is None else fd
        if low < high:
            os.closerange(low, high)
        if fd is not None:
            low = fd + 1


# ------------------------------------------------------- one job, both modes


def serve(ready_frame, log_fd=None):
    """The life of a job process from "ready" to its end, the same in both
    isolation modes. Never returns.

    On entry: fds 0 and 1 are /dev/null, 3 is the job socket, 4 and 5 the
    job's stdout/stderr pipes; fd 2 and log_fd lead to the server's log (spawn
    mode) or /dev/null (fork mode). Before the script runs, everything but
    the job socket (on a private fd), /dev/null and the capture pipes (on 1
    and 2) is closed: the log pipe among them, so a script can't flood it.
    """
    try:
        job_fd = _private_fd(JOB_FD)
        devnull_fd = _private_fd(1)  # fd 1 is /dev/null until the job starts
        _os_close(JOB_FD)
        send_frame(job_fd, ready_frame)
        job = read_job(job_fd)
    except ProtocolError as exc:
        log(log_fd, f"protocol error: {exc}")
        _os_exit(EXIT_PROTOCOL_ERROR)
    except OSError as exc:
        log(log_fd, f"job socket error: {exc}")
        _os_exit(EXIT_PROTOCOL_ERROR)
    if job is None:
        _os_exit(0)  # the server shut this worker down before giving it a job

    try:
        prepare_outputs_dir()
        point_stdio_at_capture_pipes()
        close_all_fds_except({0, 1, 2, job_fd, devnull_fd})
        frame = run_job(job.script, job.max_result_bytes, job.input,
                        job.max_files, job.max_files_bytes)
    except BaseException as exc:
        frame = _internal_error_frame(exc)

    try:
        release_capture_pipes(devnull_fd)
    except BaseException:
        pass  # the answer below matters more than the output's end
    try:
        send_frame(job_fd, frame)
    except BaseException:
        _os_exit(EXIT_INTERNAL_ERROR)
    _os_exit(0)


def main():
    """Spawn mode: this interpreter is one jail's only job process."""
    log_fd = _private_fd(2)
    try:
        ready = warm_up()
        confine.seal()
    except BaseException as exc:
        log(log_fd, f"warm-up failed: {type(exc).__name__}: {_safe_str(exc)}")
        _os_exit(EXIT_WARMUP_FAILED)
    serve(encode_frame(ready), log_fd)


def _internal_error_frame(exc):
    try:
        return error_frame("internal", f"the runner failed: {exception_line(exc)}")
    except BaseException:
        return (b'{"type":"error","kind":"internal","message":"the runner failed",'
                b'"line":null,"traceback":null}')


if __name__ == "__main__":
    try:
        main()
    finally:
        _os_exit(EXIT_INTERNAL_ERROR)  # main() always exits itself; never fall through
