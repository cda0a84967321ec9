"""The entry point of every job process, in both isolation modes.

- spawn mode: nsjail runs this file (`python -I -X utf8 -B -u
  /pyexec/runner.py`); `main` warms up, seals the process (confine.py) and
  serves the one job.
- fork mode: zygote.py imports this module, warms up once, and each job
  child it forks seals itself and calls the same `serve`.

The runner itself is the package next to this file, pyexec_runner/ (its
__init__ maps it); this module keeps the names zygote.py uses.
"""

import os
import sys

# The runner's directory: `python -I` leaves it off sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import confine  # noqa: E402
from pyexec_runner.fds import JOB_FD, MAX_FD, STDERR_PIPE_FD, STDOUT_PIPE_FD  # noqa: E402
from pyexec_runner.fds import private_fd as _private_fd  # noqa: E402
from pyexec_runner.protocol import encode_frame, error_frame, send_frame  # noqa: E402
from pyexec_runner.serve import EXIT_INTERNAL_ERROR, EXIT_WARMUP_FAILED, log, serve  # noqa: E402
from pyexec_runner.tracebacks import exception_line  # noqa: E402
from pyexec_runner.tracebacks import safe_str as _safe_str  # noqa: E402
from pyexec_runner.warmup import warm_up  # noqa: E402

# What zygote.py uses of the runner.
__all__ = ["JOB_FD", "STDOUT_PIPE_FD", "STDERR_PIPE_FD", "MAX_FD", "encode_frame", "error_frame",
           "send_frame", "exception_line", "serve", "warm_up"]

_os_exit = os._exit


def main():
    """Spawn mode: this interpreter is one jail's only job process."""
    log_fd = _private_fd(2)
    try:
        ready = warm_up(matplotlib=False)
        confine.seal()
    except BaseException as exc:
        log(log_fd, f"warm-up failed: {type(exc).__name__}: {_safe_str(exc)}")
        _os_exit(EXIT_WARMUP_FAILED)
    serve(encode_frame(ready), log_fd)


if __name__ == "__main__":
    try:
        main()
    finally:
        _os_exit(EXIT_INTERNAL_ERROR)  # main() always exits itself; never fall through
