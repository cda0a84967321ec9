"""The files a script leaves for the answer, in /tmp/outputs.

Before the script runs, `prepare_outputs_dir` creates the folder empty; once
main()'s value is known to be sendable, `collect` turns what the folder holds
into the result frame's file members. Everything that makes files of what a
script left behind belongs to that step. The folder is read here, inside the
sandbox, never by the server.
"""

import binascii
import codecs
import json
import mimetypes
import os
import stat

from . import figures
from .private import own_builtins
from .protocol import cap_utf8, encode_json, printable

# Taken before any script runs (see private.py).
_os_open = os.open
_os_read = os.read
_os_close = os.close
_os_fstat = os.fstat
_os_scandir = os.scandir
_os_mkdir = os.mkdir
_os_chmod = os.chmod
_os_listdir = os.listdir
_s_isreg = stat.S_ISREG
_b2a_base64 = binascii.b2a_base64
_int_repr = int.__repr__
_json_loads = json.loads
_utf8_decoder = codecs.getincrementaldecoder("utf-8")
own_builtins(globals())


# Where a script leaves files for the answer (created empty before it runs).
# The tests, which run the runner outside a jail, point it elsewhere.
OUTPUTS_DIR = os.environ.get("PYEXEC_OUTPUTS_DIR") or "/tmp/outputs"
# At most this many names are listed as omitted; a longer name is left out.
# The server sizes its answer frame by both (worker/src/job/protocol.rs).
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


def prepare_outputs_dir(path=None):
    """Create the empty, world-writable folder a script leaves its files in."""
    path = path or OUTPUTS_DIR
    try:
        _os_mkdir(path, 0o777)
    except FileExistsError:
        if _os_listdir(path):
            raise OSError(f"{path} is not empty before the script runs") from None
    _os_chmod(path, 0o777)  # past the umask


def collect(max_files, max_bytes):
    """The result frame's file members for what the script left in the
    outputs folder, with the figures it left open saved there first (see
    `output_files_json`)."""
    figures.save_open_figures(OUTPUTS_DIR)
    return output_files_json(OUTPUTS_DIR, max_files, max_bytes)


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
        entries.append(b'{"name":' + encode_json(name).encode("utf-8")
                       + b',"size":' + _int_repr(len(data)).encode()
                       + b',"media_type":' + encode_json(media_type(name)).encode()
                       + b',"content_type":' + encode_json(content_type(data, name)).encode()
                       + b',"content_base64":"' + _b2a_base64(data, newline=False) + b'"}')
    truncated = truncated or bool(omitted)
    if not entries and not truncated:
        return b""
    listed = [cap_utf8(name, MAX_FILE_NAME_BYTES) for name in omitted[:MAX_OMITTED_LISTED]]
    return (b',"files":[' + b",".join(entries) + b'],"files_truncated":'
            + (b"true" if truncated else b"false")
            + b',"files_omitted":' + encode_json(listed).encode("utf-8"))


def media_type(name):
    """The media type Python's mimetypes table gives the name's extension."""
    base = name.rpartition("/")[2]
    dot = base.rfind(".")
    if dot <= 0:
        return "application/octet-stream"
    extension = base[dot:]
    return (_MEDIA_TYPES.get(extension) or _MEDIA_TYPES.get(extension.lower())
            or "application/octet-stream")


# How much of a file's start content_type looks at (JSON is parsed whole).
SNIFF_BYTES = 4096
MAX_JSON_SNIFF_BYTES = 1 << 20
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"%PDF-", "application/pdf"))


def content_type(data, name):
    """The file's type from its leading bytes (the name only tells CSV from
    other text): PNG, JPEG, PDF, SVG, JSON, CSV, text/plain, else
    application/octet-stream."""
    if not data:
        return "application/octet-stream"
    head = data[:SNIFF_BYTES]
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    cut = len(data) > SNIFF_BYTES
    text = _utf8_head(head, cut)
    if text is None:
        return "application/octet-stream"
    start = text.lstrip("\ufeff \t\r\n")
    if start.startswith("<") and "<svg" in start and (
            start.startswith(("<svg", "<?xml", "<!DOCTYPE svg", "<!--"))):
        return "image/svg+xml"
    if start[:1] in ("{", "[") and len(data) <= MAX_JSON_SNIFF_BYTES and _is_json(data):
        return "application/json"
    if name.lower().endswith(".csv") or _looks_like_csv(text, cut):
        return "text/csv"
    return "text/plain"


def _utf8_head(head, cut):
    """head as text if it is UTF-8 without control bytes but whitespace
    (a character cut at the end of a longer file allowed), else None."""
    try:
        text = _utf8_decoder().decode(head, final=not cut)
    except UnicodeDecodeError:
        return None
    for char in text:
        if char < " " and char not in "\t\n\r\f":
            return None
    return text


def _is_json(data):
    try:
        _json_loads(data)
        return True
    except (ValueError, RecursionError):
        return False


def _looks_like_csv(text, cut):
    """At least two complete lines, each with the same (non-zero) number of commas."""
    lines = text.splitlines()
    if cut:
        lines = lines[:-1]
    lines = [line for line in lines if line]
    if len(lines) < 2:
        return False
    commas = lines[0].count(",")
    return commas > 0 and all(line.count(",") == commas for line in lines[:20])


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
                        name = prefix + printable(entry.name)
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
