"""The job process's descriptors: where the job socket and the capture pipes
sit, the script's stdout/stderr pointed at the pipes and released again, and
everything else closed so the script reaches nothing it shouldn't."""

import fcntl
import io
import os
import sys

from .private import own_builtins

# Taken before any script runs (see private.py).
_os_dup2 = os.dup2
_os_close = os.close
own_builtins(globals())


JOB_FD, STDOUT_PIPE_FD, STDERR_PIPE_FD = 3, 4, 5
# Above any descriptor a jail's RLIMIT_NOFILE lets a process open.
MAX_FD = 1 << 20


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


_flush_libc = _make_libc_flush()


def private_fd(fd):
    """Duplicate fd to a close-on-exec descriptor the script is unlikely to touch."""
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    except OSError:
        # The jail's RLIMIT_NOFILE may be tiny; any private copy will do.
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)


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


def close_all_fds_except(keep):
    """Close every descriptor but those in keep: the script reaches nothing else."""
    low = 0
    for fd in sorted(keep) + [None]:
        high = MAX_FD if fd is None else fd
        if low < high:
            os.closerange(low, high)
        if fd is not None:
            low = fd + 1
