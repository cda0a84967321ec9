"""One job's life, the same in both isolation modes: "ready", the job, the
script, and exactly one answer. Never returns."""

import os

from .fds import (JOB_FD, close_all_fds_except, point_stdio_at_capture_pipes, private_fd,
                  release_capture_pipes)
from .outputs import prepare_outputs_dir
from .private import own_builtins
from .protocol import ProtocolError, error_frame, read_job, send_frame, write_all
from .script import run_job
from .tracebacks import exception_line

# Taken before any script runs (see private.py).
_os_close = os.close
_os_exit = os._exit
own_builtins(globals())


EXIT_PROTOCOL_ERROR = 2
EXIT_WARMUP_FAILED = 3
EXIT_INTERNAL_ERROR = 70


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
        job_fd = private_fd(JOB_FD)
        devnull_fd = private_fd(1)  # fd 1 is /dev/null until the job starts
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


def _internal_error_frame(exc):
    try:
        return error_frame("internal", f"the runner failed: {exception_line(exc)}")
    except BaseException:
        return (b'{"type":"error","kind":"internal","message":"the runner failed",'
                b'"line":null,"traceback":null}')


def log(log_fd, message):
    if log_fd is None:
        return
    try:
        write_all(log_fd, f"pyexec runner: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass
