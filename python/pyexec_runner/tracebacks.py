"""Exceptions as the user sees them: the script's frames only (the runner's
and the libraries' are left out), with its line numbers and source lines."""

from .names import SCRIPT_FILENAME, type_name
from .private import own_builtins

# Taken before any script runs (see private.py).
_str_str = str.__str__
own_builtins(globals())


def safe_str(exc):
    try:
        text = str(exc)
        return text if type(text) is str else _str_str(text)
    except BaseException:
        return "<exception str() failed>"


def exception_line(exc):
    """'ExcType: text', the way Python's own traceback ends."""
    name = type_name(type(exc))
    text = safe_str(exc)
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
