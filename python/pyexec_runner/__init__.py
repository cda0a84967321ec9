"""The pyexec job runner: what every job process runs, in both isolation modes.

Everything between a warm interpreter and its one answer, one role a module
(each imports only from those listed above it):

    private     how the runner keeps its tools out of the script's reach
    protocol    the job side of the length-prefixed JSON protocol: frames,
                the job message, the ready and error messages
    libraries   numpy and pandas, as the runner holds them privately
    figures     matplotlib: warmed with the install-time font list, and the
                figures a script leaves open saved as PNG files
    names       how the runner names things to the user (the script's file,
                types by their public names)
    tracebacks  exceptions shown as the script's frames only
    results     what main() may return: the JSON rules, conversions and hints
    outputs     the files a script leaves in /tmp/outputs
    fds         the job process's descriptors: the capture pipes, and
                closing what the script may not reach
    script      running the one untrusted script: compile, load, call main()
    warmup      importing numpy/pandas/matplotlib so the first job is fast
    serve       one job's life, from "ready" to its one answer

runner.py (next to this package) is the entry point: nsjail runs it in spawn
mode, and zygote.py imports it in fork mode; both end in `serve.serve`.

File descriptors on entry to `serve` (set up by the server or the zygote):
    0, 1 -> /dev/null    2 -> the server's log (spawn) or /dev/null (fork)
    3    -> the job socket
    4, 5 -> the job's stdout / stderr capture pipes
Before the script runs, fds 1 and 2 point at the capture pipes and every
other descriptor but the job socket and /dev/null is closed: the script
never holds the server's log.

Stdlib only (numpy, pandas and matplotlib are imported by warm-up, never
required).
"""
