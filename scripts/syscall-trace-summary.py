#!/usr/bin/python3
"""Summarise `strace -f -X verbose` logs of nsjail launches into the measured
system-call list: python/syscall_trace.json (scripts/trace-syscalls.sh runs it).

    syscall-trace-summary.py OUTPUT.json TRACE... [--meta KEY=VALUE ...]

Each trace file holds one nsjail launch and everything it started. A process
is attributed to a phase by what it is when it makes the call:

    nsjail      nsjail itself and its child before the exec of python (not
                a job's concern: counted, not listed)
    warm-up     a jailed python before its job filter is installed: the
                spawn-mode runner's warm-up, the zygote's whole life, and a
                zygote child's own sandbox building
    job         a process after it installed the job filter, and every
                process or thread it started since: what the allow-list is for

The seal is recognised by the job filter's installation (prctl
PR_SET_SECCOMP or seccomp(2)) in a process that has already exec'd python;
nsjail's own policy is installed before that exec. Arguments the filter
narrows on are kept, by value: socket and socketpair domains, ioctl
requests, prctl options, fcntl commands and clone flags. Host Python, stdlib
only.
"""

import json
import re
import sys

NARROWED = {  # syscall -> which argument (0-based) the filter looks at
    "socket": 0, "socketpair": 0, "ioctl": 1, "prctl": 0, "fcntl": 1, "clone": 0,
}
LINE = re.compile(r"^(\d+) +(?:(\w+)\((.*)|<\.\.\. (\w+) resumed>(.*))$")
# "= 3 /* 8414 in strace's PID NS */": a pid as the caller's namespace and
# the host see it (strace --decode-pids=pidns).
RESULT = re.compile(r"\) += (-?\d+|0x[0-9a-f]+|\?)(?: /\* (\d+) in strace's PID NS \*/)?"
                    r"(?: ([A-Z][A-Z0-9_]+))?")
VALUE = re.compile(r"^(?:\w+=)?(-?0x[0-9a-f]+|-?\d+)(?: /\* ([^*]*) \*/)?")


def split_args(text):
    """Top-level comma-separated arguments of a call's text (up to its close)."""
    args, depth, current, quoted, escaped = [], 0, [], False, False
    for char in text:
        if quoted:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            continue
        if char == '"':
            quoted = True
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif char == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    args.append("".join(current).strip())
    return args


def parse(path):
    """Complete calls of one trace, in order: (pid, name, args text, result, errno)."""
    pending = {}
    calls = []
    with open(path, errors="replace") as f:
        for line in f:
            match = LINE.match(line.rstrip("\n"))
            if not match:
                continue
            pid = int(match.group(1))
            if match.group(2):
                name, rest = match.group(2), match.group(3)
                if rest.endswith("<unfinished ...>"):
                    pending[pid] = (name, rest[:-len("<unfinished ...>")])
                    continue
            else:
                name, rest = match.group(4), match.group(5)
                started = pending.pop(pid, (name, ""))
                rest = started[1] + rest
            results = list(RESULT.finditer(rest))
            result = results[-1] if results else None
            value = result.group(2) or result.group(1) if result else "?"
            error = result.group(3) if result and value.startswith("-") else None
            calls.append((pid, name, rest, value, error))
    return calls


class Lineage:
    """Which pids are jailed python and which are sealed, from the calls."""

    def __init__(self, calls):
        self.parent = {}          # child -> (parent, index of the clone)
        self.python_at = {}       # pid -> index of its python exec
        self.sealed_at = {}       # pid -> index of its own seal
        for index, (pid, name, args, value, error) in enumerate(calls):
            if name in ("clone", "clone3", "fork", "vfork") and value.isdigit() \
                    and int(value) > 0:
                self.parent.setdefault(int(value), (pid, index))
            elif name == "execve" and value == "0" and "python3" in args.split(",")[0]:
                self.python_at.setdefault(pid, index)
            elif self._is_filter_install(name, args, value) and self.is_python(pid, index):
                self.sealed_at.setdefault(pid, index)

    @staticmethod
    def _is_filter_install(name, args, value):
        if value != "0":
            return False
        if name == "prctl":
            return args.startswith("0x16 ")  # PR_SET_SECCOMP
        return name == "seccomp" and "SECCOMP_SET_MODE_FILTER" in args

    def _since(self, table, pid, index, depth=0):
        """True if pid had the property at index (its own, or inherited at its birth)."""
        if pid in table and table[pid] < index:
            return True
        if pid in self.parent and depth < 64:
            parent, born = self.parent[pid]
            return self._since(table, parent, born, depth + 1)
        return False

    def is_python(self, pid, index):
        return self._since(self.python_at, pid, index)

    def is_sealed(self, pid, index):
        return self._since(self.sealed_at, pid, index)


def argument(name, args):
    """(value, label) of the argument the filter narrows `name` on."""
    parts = split_args(args)
    position = NARROWED[name]
    if name == "clone":  # strace names clone's arguments, child_stack first
        parts = [p for p in parts if p.startswith("flags=")]
        position = 0
    if position >= len(parts):
        return "?", ""
    match = VALUE.match(parts[position])
    if not match:
        return parts[position][:40], ""
    number = int(match.group(1), 0)
    return f"{number:#x}", (match.group(2) or "").strip()


def summarise(paths):
    phases = {"job": {}, "warm-up": {}, "nsjail": {}}
    for path in paths:
        calls = parse(path)
        lineage = Lineage(calls)
        for index, (pid, name, args, value, error) in enumerate(calls):
            if lineage.is_sealed(pid, index):
                phase = "job"
            elif lineage.is_python(pid, index) or lineage.python_at.get(pid) == index:
                phase = "warm-up"
            else:
                phase = "nsjail"
            entry = phases[phase].setdefault(name, {"calls": 0})
            entry["calls"] += 1
            if error:
                errors = entry.setdefault("errors", {})
                errors[error] = errors.get(error, 0) + 1
            if name in NARROWED and phase != "nsjail":
                number, label = argument(name, args)
                if name == "clone":
                    # Only whether namespace flags were asked for matters.
                    number = "namespace flags" if int(number, 16) & 0x7E020000 else "no namespace flag"
                    label = ""
                seen = entry.setdefault("arguments", {})
                key = f"{number} {label}".strip()
                seen[key] = seen.get(key, 0) + 1
    return phases


def main():
    args = sys.argv[1:]
    meta = {}
    paths = []
    output = args.pop(0)
    while args:
        item = args.pop(0)
        if item == "--meta":
            key, _, value = args.pop(0).partition("=")
            meta[key] = value
        else:
            paths.append(item)
    phases = summarise(paths)
    document = {"about": meta, "job": phases["job"], "warm-up": phases["warm-up"],
                "nsjail_calls": sum(e["calls"] for e in phases["nsjail"].values())}
    with open(output, "w") as f:
        json.dump(document, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(phases['job'])} system calls in jobs, {len(phases['warm-up'])} before the "
          f"seal; {sum(e['calls'] for e in phases['job'].values())} job calls traced")


if __name__ == "__main__":
    main()
