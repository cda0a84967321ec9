"""What main() may return, and the frame that reports it.

A dict of JSON values, checked and copied into exact builtin types without
running any of the script's code (no override, no patched module); numpy
scalars and arrays convert, anything else JSON can't hold is refused with the
path to it and a hint on how to convert it.
"""

import datetime
import decimal
import math
import types

from . import libraries
from .names import short_repr, type_name, module_name
from .private import own_builtins
from .protocol import RESULT_FRAME_PREFIX, RESULT_FRAME_SUFFIX, encode_json, error_frame

# Taken before any script runs (see private.py).
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
own_builtins(globals())


# serde_json refuses input nested deeper than 128; the result sits two levels
# down in its frame, so 100 leaves the server comfortable headroom.
MAX_RESULT_DEPTH = 100


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


def result_frame(value, max_result_bytes, files=None):
    """The frame for main()'s value: a result (with the output files' JSON
    members from `files()`, if given) or the error that makes it unsendable."""
    plain, problem = check_result(value)
    if problem is not None:
        return error_frame("invalid_result", problem)
    try:
        encoded = encode_json(plain).encode("utf-8")
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
    numpy, pandas = libraries.NUMPY, libraries.PANDAS
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
        module = module_name(tp)
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
    pandas = libraries.PANDAS
    if pandas is not None and (value is pandas.NaT or value is pandas.NA):
        what = "pandas.NaT" if value is pandas.NaT else "pandas.NA"
    else:
        what = f"a {type_name(type(value))}"
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
    numpy = libraries.NUMPY
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
    numpy = libraries.NUMPY
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
    numpy = libraries.NUMPY
    if numpy is not None and issubclass(tp, numpy.json_scalars):
        plain = numpy.item(key)
        if type(plain) in (bool, int, float):
            return _plain_key(plain)
    raise InvalidResult(
        f"a dict key of type {type_name(tp)} ({short_repr(key)})",
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
                f"two keys that both become {encode_json(plain)} in JSON "
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
    return f"the {type_name(tp)} {shown}"


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


def describe_path(path_innermost_first):
    parts = ["result"]
    for key in reversed(path_innermost_first):
        parts.append(f"[{short_repr(key)}]")
    return "".join(parts)


def _not_a_dict_message(value):
    name = type_name(type(value))
    message = f"main() must return a dict (a JSON object), it returned {name}"
    if value is None:
        message += ": is a `return` statement missing at the end of main()?"
    elif isinstance(value, types.CoroutineType):
        value.close()  # avoid a "never awaited" warning
        message += ": main must be a plain def, not async def (call asyncio.run inside it)"
    else:
        message += "; wrap it, for example return {\"value\": ...}"
    return message


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
