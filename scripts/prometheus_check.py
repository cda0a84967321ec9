#!/usr/bin/env python3
"""The metrics, read by their real consumer. Part of `make test`.

Starts a live pyexec (the real sandbox, a small pool) and a throwaway
Prometheus (Debian's package, installed by scripts/setup.sh: its own config
and data under a temporary directory, listening on 127.0.0.1 only) that
scrapes it every second; lints the exposition with `promtool check
metrics`; runs a short mixed load (successes, script errors, timeouts,
inputs, tighter limits, output files, refused requests, a burst past the
queue); checks that every metric of docs/operations.md's metric table is
exposed; then evaluates through Prometheus's HTTP API every PromQL query
printed in docs/operations.md and every query of server/grafana-dashboard.json.
Each must return a non-empty result whose every value is finite. Exits
non-zero, naming the query, if one does not.

Environment: PYEXEC_BIN (default target/debug/pyexec, built if missing),
LOAD_SECONDS (default 20).
"""

import concurrent.futures
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "20"))
# Grafana's variables, as the dashboard's "All" and a rate window.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None, timeout=30):
    """(status, body bytes) of one request; a JSON body is POSTed."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for(url, seconds, process, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"prometheus-check: {what} exited with {process.returncode}")
        try:
            if http(url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"prometheus-check: {what} not ready within {seconds} s")


# ------------------------------------------------------------------ queries


DOC_QUERIES = os.path.join("docs", "operations.md")


def doc_queries():
    """Every query of the ```promql blocks of DOC_QUERIES; an indented line
    continues the query above it, # lines are comments."""
    text = open(os.path.join(ROOT, DOC_QUERIES), encoding="utf-8").read()
    queries = []
    for block in re.findall(r"```promql\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and queries:
                queries[-1] += " " + line.strip()
            else:
                queries.append(line.strip())
    return queries


def doc_metrics():
    """The metric names of the table under DOC_QUERIES' "## Metrics" (the
    `process_*` family left out: the client library's own)."""
    text = open(os.path.join(ROOT, DOC_QUERIES), encoding="utf-8").read()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    return [n for n in names if not n.startswith("process_")]


def missing_metrics(exposition, names):
    """The names among `names` with no `# TYPE` line in `exposition`."""
    exposed = set(re.findall(r"^# TYPE (\S+) ", exposition, re.M))
    return [n for n in names if n not in exposed]


def dashboard_queries():
    """Every `expr` of the Grafana dashboard, with its variables filled in."""
    with open(os.path.join(ROOT, "server", "grafana-dashboard.json"), encoding="utf-8") as f:
        dashboard = json.load(f)
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard)
    queries = []
    for expr in found:
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        queries.append(expr)
    return queries


def problems_of(prometheus, query):
    """What is wrong with the query's result; [] if it is non-empty and finite."""
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, body = http(url)
    answer = json.loads(body)
    if status != 200 or answer.get("status") != "success":
        return [f"error: {answer.get('error', body[:200])}"]
    data = answer["data"]
    if data["resultType"] == "scalar":
        values = [data["result"][1]]
    elif data["resultType"] == "vector":
        values = [sample["value"][1] for sample in data["result"]]
    else:
        return [f"unexpected result type {data['resultType']}"]
    if not values:
        return ["empty result"]
    bad = [v for v in values if not math.isfinite(float(v))]
    return [f"{len(bad)} of {len(values)} values not finite: {bad[:5]}"] if bad else []


# --------------------------------------------------------------------- load


SCRIPTS = {
    "hello": {"script": "def main():\n    return {'hello': 'world'}\n"},
    "pandas": {"script": "import pandas as pd\ndef main():\n    df = pd.DataFrame({'k': ['a', 'b', 'a'], 'v': [1, 2, 3]})\n    return {'s': df.groupby('k')['v'].sum().to_dict()}\n"},
    "input": {"script": "def main(data):\n    return {'n': len(data)}\n", "input": list(range(100))},
    "file": {"script": "def main():\n    open('/tmp/outputs/a.txt', 'w').write('a' * 1000)\n    return {}\n"},
    "limits": {"script": "def main():\n    return {}\n", "limits": {"timeout_s": 1, "memory_mb": 128}},
    "raise": {"script": "def main():\n    raise ValueError('no')\n"},
    "timeout": {"script": "def main():\n    while True:\n        pass\n", "limits": {"timeout_s": 0.3}},
    "memory": {"script": "def main():\n    b = bytearray(b'x') * (300 << 20)\n    return {}\n", "limits": {"memory_mb": 64}},
    "cpu": {"script": "import time\ndef main():\n    t = time.process_time()\n    while time.process_time() - t < 0.1:\n        pass\n    return {}\n"},
    "invalid": {"script": "x", "unknown": 1},
    "mismatch": {"script": "def main():\n    return {}\n", "input": 1},
    "too_large": {"script": "def main(x):\n    return {}\n", "input": "x" * 2000},
}


def mixed_load(base, seconds):
    """Cycles through SCRIPTS from four clients, with a burst past the queue
    now and then; returns {status: count}."""
    names = list(SCRIPTS)
    statuses = {}
    deadline = time.monotonic() + seconds

    def client(offset):
        counts, i = {}, offset
        while time.monotonic() < deadline:
            status, _ = http(f"{base}/execute", SCRIPTS[names[i % len(names)]])
            counts[status] = counts.get(status, 0) + 1
            i += 1
        return counts

    def burst():
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            slow = {"script": "import time\ndef main():\n    time.sleep(0.5)\n    return {}\n"}
            return [f.result()[0] for f in [pool.submit(http, f"{base}/execute", slow)
                                            for _ in range(16)]]

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        clients = [pool.submit(client, n) for n in range(4)]
        bursts = []
        while time.monotonic() < deadline - 2:
            bursts.append(pool.submit(burst))
            time.sleep(seconds / 3)
        for future in clients:
            for status, count in future.result().items():
                statuses[status] = statuses.get(status, 0) + count
        for future in bursts:
            for status in future.result():
                statuses[status] = statuses.get(status, 0) + 1
    return statuses


# --------------------------------------------------------------------- main


def main():
    if not doc_queries():
        sys.exit(f"prometheus-check: no ```promql query found in {DOC_QUERIES}")
    binary = os.environ.get("PYEXEC_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--locked", "--quiet", "-p", "pyexec-server",
                        "--bin", "pyexec"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "debug", "pyexec")
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            sys.exit(f"prometheus-check: {tool} missing; run scripts/setup.sh")
    work = tempfile.mkdtemp(prefix="pyexec-prometheus-")
    started = []
    try:
        port = free_port()
        env = dict(os.environ, PORT=str(port), PYEXEC_POOL_SIZE="4", PYEXEC_QUEUE_MAX="8",
                   PYEXEC_QUEUE_TIMEOUT="1", PYEXEC_MAX_INPUT_BYTES="1000",
                   PYEXEC_LOG_LEVEL="warn")
        server_log = open(os.path.join(work, "pyexec.log"), "w")
        pyexec = subprocess.Popen([binary], cwd=ROOT, env=env, stdout=server_log,
                                  stderr=subprocess.STDOUT)
        started.append(pyexec)
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/readyz", 60, pyexec, "pyexec")

        # The exposition, linted by Prometheus's own tool.
        _, exposition = http(f"{base}/metrics")
        lint = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                              capture_output=True)
        if lint.returncode != 0:
            sys.exit("prometheus-check: promtool check metrics failed:\n"
                     + (lint.stdout + lint.stderr).decode())
        print("prometheus-check: promtool check metrics: clean")

        prometheus_port = free_port()
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: pyexec\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{port}']\n")
        prometheus_log = open(os.path.join(work, "prometheus.log"), "w")
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(work, 'data')}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            cwd=work, stdout=prometheus_log, stderr=subprocess.STDOUT)
        started.append(prometheus)
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        wait_for(f"{prometheus_url}/-/ready", 60, prometheus, "prometheus")

        statuses = mixed_load(base, LOAD_SECONDS)
        print(f"prometheus-check: load of {LOAD_SECONDS:.0f} s answered "
              + ", ".join(f"{count} × {status}" for status, count in sorted(statuses.items())))
        time.sleep(3)  # the last scrapes

        # After the load, since labelled histograms appear with their first sample.
        _, exposition = http(f"{base}/metrics")
        missing = missing_metrics(exposition.decode(), doc_metrics())
        if missing:
            sys.exit(f"prometheus-check: in {DOC_QUERIES}'s metric table but not exposed: "
                     + ", ".join(missing))
        print(f"prometheus-check: all {len(doc_metrics())} metrics of {DOC_QUERIES}'s table exposed")

        failures = 0
        queries = [(DOC_QUERIES, q) for q in doc_queries()] + \
                  [("dashboard", q) for q in dashboard_queries()]
        for source, query in queries:
            problems = problems_of(prometheus_url, query)
            if problems:
                failures += 1
                print(f"prometheus-check: FAIL ({source}) {query}\n    {'; '.join(problems)}")
        print(f"prometheus-check: {len(queries) - failures} passed, {failures} failed "
              f"({len(doc_queries())} {DOC_QUERIES} queries, {len(dashboard_queries())} dashboard queries)")
        return 1 if failures else 0
    finally:
        for process in reversed(started):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
