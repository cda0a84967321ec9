"""Running the one untrusted script: compile it, load it as the module
`script`, call its main() (with the job's input when it has one), and turn
whatever happened into the frame to send."""

import builtins
import gc
import inspect
import linecache
import signal
import sys
import types

from . import outputs
from .names import SCRIPT_FILENAME, SCRIPT_MODULE_NAME, short_repr, type_name
from .private import own_builtins
from .protocol import NO_INPUT, error_frame
from .results import result_frame
from .tracebacks import exception_line, format_user_traceback, innermost_user_line, safe_str

# Taken before any script runs (see private.py).
_set_recursion_limit = sys.setrecursionlimit
_STARTUP_RECURSION_LIMIT = sys.getrecursionlimit()
_settrace = sys.settrace
_setprofile = sys.setprofile
_gc_disable = gc.disable
_signature = inspect.signature
_Parameter = inspect.Parameter
own_builtins(globals())


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
                        lambda: outputs.collect(max_files, max_files_bytes))


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
        raise JobOutcome(error_frame("syntax_error", f"{safe_str(exc)}{where}", line)) from None
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


def _exit_message(exc, when):
    try:
        code = exc.code
        shown = "" if code is None else short_repr(code, 200)
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


def _missing_main_frame(main):
    if main is None:
        return error_frame("missing_main", "the script defines no callable main()")
    return error_frame(
        "missing_main",
        f"the script's main is a {type_name(type(main))}, not a function: define def main(): ...")


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
