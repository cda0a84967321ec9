#!/usr/bin/env python3
"""End-to-end API checks against a running pyexec (the container image test).

Standard library only, so it runs on the host without the sandbox venv.

    docker/api_checks.py http://127.0.0.1:8080 [--wait SECONDS]

--wait: first poll /readyz until it answers 200 (exit 3 when it never does).
Exit 0 when every check passes, 1 otherwise; one line per check.
"""
import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def request(base, method, path, body=None, timeout=30):
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return status, payload


def execute(base, script):
    return request(base, "POST", "/execute", {"script": script})


def wait_ready(base, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            status, _ = request(base, "GET", "/readyz", timeout=2)
            if status == 200:
                return True
            last = f"HTTP {status}"
        except OSError as e:  # not listening yet
            last = str(e)
        time.sleep(0.5)
    print(f"FAIL /readyz not 200 within {seconds:g} s (last: {last})")
    return False


HELLO = """
def main():
    print("hello from the sandbox")
    return {"greeting": "hello world", "n": 42}
"""

PANDAS = """
import numpy as np
import pandas as pd

def main():
    df = pd.DataFrame({"g": ["a", "b", "a", "b"], "x": np.arange(4.0)})
    sums = df.groupby("g")["x"].sum()
    m = np.arange(9.0).reshape(3, 3)
    print(df.describe().loc["mean", "x"])
    return {
        "sums": {k: float(v) for k, v in sums.items()},
        "trace": float(np.trace(m @ m)),
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
"""

# A script that probes the jail and reports what it could do.
PROBE = """
import os, socket

def attempt(fn):
    try:
        fn()
        return "allowed"
    except OSError as e:
        return type(e).__name__

def write_usr():
    with open("/usr/x", "w") as f:
        f.write("x")

def connect_local():
    socket.create_connection(("127.0.0.1", 1), timeout=2).close()

def connect_host():
    # A UDP connect only looks up a route: it sends nothing, even from a
    # broken jail. 192.0.2.1 is TEST-NET-1, never routed on the internet.
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("192.0.2.1", 53))

def main():
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "write_usr": attempt(write_usr),
        "connect_local": attempt(connect_local),
        "connect_host": attempt(connect_host),
        "etc_passwd": os.path.exists("/etc/passwd"),
        "proc": os.path.exists("/proc/1"),
    }
"""

# The same violation, uncaught: it must come back as a script error.
UNCAUGHT_WRITE = """
def main():
    with open("/usr/x", "w") as f:
        f.write("x")
    return {"wrote": True}
"""

SYNTAX = "def main(:\n    return {}\n"

# Over the 256 MiB memory cgroup (under RLIMIT_AS): proves the per-job cgroup
# works inside the container.
MEMORY_BOMB = """
def main():
    blocks = [bytearray(64 * 1024 * 1024) for _ in range(8)]
    return {"allocated_mib": 64 * len(blocks)}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--wait", type=float, default=0)
    args = ap.parse_args()
    base = args.base.rstrip("/")

    if args.wait and not wait_ready(base, args.wait):
        return 3

    failures = 0

    def check(name, ok, detail):
        nonlocal failures
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        if not ok:
            failures += 1

    status, body = request(base, "GET", "/healthz")
    check("GET /healthz", status == 200, f"HTTP {status}")

    status, body = request(base, "GET", "/readyz")
    check("GET /readyz", status == 200, f"HTTP {status}")

    status, body = execute(base, HELLO)
    ok = (status == 200 and isinstance(body, dict)
          and body.get("result") == {"greeting": "hello world", "n": 42}
          and "hello from the sandbox" in body.get("stdout", ""))
    check("hello world", ok, f"HTTP {status} {json.dumps(body)[:300]}")

    status, body = execute(base, PANDAS)
    result = body.get("result", {}) if isinstance(body, dict) else {}
    ok = (status == 200 and result.get("sums") == {"a": 2.0, "b": 4.0}
          and result.get("trace") == 180.0 and "1.5" in body.get("stdout", ""))
    check("numpy + pandas job", ok, f"HTTP {status} {json.dumps(body)[:300]}")

    status, body = execute(base, PROBE)
    r = body.get("result", {}) if isinstance(body, dict) else {}
    ok = (status == 200 and r.get("uid") not in (None, 0) and r.get("gid") not in (None, 0)
          and r.get("write_usr") != "allowed" and r.get("connect_local") != "allowed"
          and r.get("connect_host") != "allowed" and r.get("etc_passwd") is False)
    check("sandbox confines the script (uid != 0, no write to /usr, no network)", ok,
          f"HTTP {status} {json.dumps(r)}")

    status, body = execute(base, UNCAUGHT_WRITE)
    ok = (status == 400 and isinstance(body, dict) and body.get("kind") == "script_exception"
          and isinstance(body.get("error"), str))
    check("write to /usr is an error", ok, f"HTTP {status} {json.dumps(body)[:300]}")

    status, body = execute(base, SYNTAX)
    ok = status == 400 and isinstance(body, dict) and body.get("kind") == "syntax_error"
    check("syntax error", ok, f"HTTP {status} {json.dumps(body)[:300]}")

    status, body = execute(base, MEMORY_BOMB)
    ok = status == 400 and isinstance(body, dict) and body.get("kind") == "memory_limit"
    check("memory limit (cgroup) enforced", ok, f"HTTP {status} {json.dumps(body)[:300]}")

    # After all of that the pool still serves.
    status, body = execute(base, HELLO)
    check("next job after the failures", status == 200, f"HTTP {status}")

    print(f"{'all checks passed' if not failures else f'{failures} check(s) failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
