#!/usr/bin/env python3
"""Prints the figures of a loadtest/run.sh run as Markdown: one table with a
column per isolation mode, then each mode's latency table.

Usage: report.py [RESULTS_DIR [MODE ...]]   (default: loadtest/results, every
mode folder in it: fork, spawn)

Reads what run.sh wrote in RESULTS_DIR/<mode>/: the k6 summaries
(--summary-export JSON), capacity.json, capacity-pool0.json and memory.json.
A results folder of the old flat layout (no mode folders) is one column.
Standard library only.
"""
import json
import os
import sys

TYPES = ["hello", "numpy", "pandas", "print", "raise", "timeout"]
KNOWN_MODES = ["fork", "spawn"]
TESTS = ["smoke", "capacity", "load", "stress", "spike", "soak", "capacity-pool0", "load-pool0"]
JUDGED = ["smoke", "capacity", "load", "stress", "spike", "soak"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f} s" if v >= 1000 else (f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms")


def mib(b):
    return "-" if b is None else f"{b / 1048576:.1f}"


class Run:
    """The files of one mode's folder."""

    def __init__(self, folder):
        self.folder = folder
        self.cap = load(os.path.join(folder, "capacity.json"))
        self.cap0 = load(os.path.join(folder, "capacity-pool0.json"))
        self.mem = load(os.path.join(folder, "memory.json"))
        self.s = {t: load(os.path.join(folder, f"{t}.summary.json")) for t in TESTS}

    def metric(self, test, key):
        return ((self.s.get(test) or {}).get("metrics") or {}).get(key)

    def value(self, test, key, field, default=None):
        m = self.metric(test, key)
        return default if not m or m.get(field) is None else m.get(field)

    def count(self, test, key):
        return self.value(test, key, "count", 0)

    def failed_thresholds(self, test):
        bad = []
        for k, m in ((self.s.get(test) or {}).get("metrics") or {}).items():
            for expr, t in (m.get("thresholds") or {}).items():
                # --summary-export: {"expr": false} means *not failed* in older
                # k6, {"ok": bool} in newer; accept both shapes.
                failed = (not t["ok"]) if isinstance(t, dict) and "ok" in t else bool(t)
                if failed:
                    bad.append(f"{k} {expr}")
        return bad


# Each row: a label and a function of a Run giving the cell (None: "-").
def capacity_hello(r):
    if not r.cap:
        return None
    sat = r.cap.get("latency_ms_at_saturation") or {}
    return (f"**{r.cap['jobs_per_second']}** (pool {r.cap.get('pool_target_size')}, {r.cap.get('vus')} users; "
            f"p50 {fmt_ms(sat.get('med'))}, p99 {fmt_ms(sat.get('p(99)'))})")


def capacity_mix(r):
    if not r.cap or not r.cap.get("mix_jobs_per_second"):
        return None
    m = r.cap.get("mix") or {}
    sat = m.get("latency_ms_at_saturation") or {}
    refused = m.get("refused_503_in_window") or 0
    return (f"**{r.cap['mix_jobs_per_second']}** ({m.get('vus')} users; p50 {fmt_ms(sat.get('med'))}"
            + (f"; {refused} refused" if refused else "") + ")")


def load_row(r):
    if not r.s["load"]:
        return None
    rate = r.value("load", "http_reqs", "rate", 0)
    return (f"{rate:.1f} req/s; hello p50 {fmt_ms(r.value('load', 'http_req_duration{type:hello}', 'med'))}, "
            f"p99 {fmt_ms(r.value('load', 'http_req_duration{type:hello}', 'p(99)'))}")


def shed_row(test, scen):
    def cell(r):
        if not r.s[test]:
            return None
        shed = r.count(test, f"job_shed{{scenario:{scen}}}")
        reqs = r.count(test, f"http_reqs{{scenario:{scen}}}")
        share = f"{100 * shed / reqs:.0f}%" if reqs else "-"
        return f"{share} ({shed} of {reqs})"
    return cell


def shed_latency(test):
    def cell(r):
        if not r.s[test]:
            return None
        return (f"{fmt_ms(r.value(test, 'job_shed_duration', 'med'))} / "
                f"{fmt_ms(r.value(test, 'job_shed_duration', 'max'))}")
    return cell


def errors_row(test):
    def cell(r):
        if not r.s[test]:
            return None
        return f"{r.count(test, 'job_other_5xx')} / {r.count(test, 'job_client_timeout')}"
    return cell


def phase_latency(test, scen):
    def cell(r):
        key = f"http_req_duration{{type:hello,scenario:{scen}}}"
        if not r.metric(test, key):
            return None
        return f"{fmt_ms(r.value(test, key, 'med'))} / {fmt_ms(r.value(test, key, 'p(99)'))}"
    return cell


def pool_refilled(r):
    m = r.metric("spike", "spike_pool_refilled")
    if not m:
        return None
    return "yes" if m.get("value") == 1 else "NO"


def concurrent(r):
    key = "http_req_duration{scenario:concurrent,type:hello}"
    if not r.metric("spike", key):
        return None
    n = r.count("spike", "http_reqs{scenario:concurrent,type:hello}")
    shed = r.count("spike", "job_shed{scenario:concurrent}")
    return (f"{fmt_ms(r.value('spike', key, 'med'))} / {fmt_ms(r.value('spike', key, 'max'))}; "
            f"{shed} refused ({n} requests)")


def mem_field(key, fork_only=False):
    def cell(r):
        if not r.mem:
            return None
        if fork_only and r.mem.get("isolation") != "fork":
            return "-"
        v = (r.mem.get("mib") or {}).get(key)
        if isinstance(v, dict):
            return f"{v['mean']} (max {v['max']})"
        return None if v is None else f"{v}"
    return cell


def pool_total(r):
    if not r.mem:
        return None
    m = r.mem.get("mib") or {}
    return f"{m.get('pool_pss_total')} ({r.mem.get('warm_workers')} workers; {m.get('pool_pss_per_worker')} each)"


def baseline(r):
    if not r.cap0:
        return None
    sat = (r.cap0.get("latency_ms_at_saturation") or {}).get("med")
    mix = r.cap0.get("mix_jobs_per_second")
    return f"{r.cap0['jobs_per_second']} hello, {mix if mix else '-'} mix (hello p50 {fmt_ms(sat)})"


def soak(r):
    if not r.s["soak"]:
        return None
    g = lambda k, f: r.value("soak", k, f)
    rate = r.count("soak", "http_reqs{scenario:soak}")
    return (f"{rate} requests; RSS {mib(g('soak_server_rss_bytes', 'min'))}..{mib(g('soak_server_rss_bytes', 'max'))} MiB, "
            f"growth max {mib(g('soak_rss_growth_bytes', 'max'))}, idle {mib(g('soak_idle_rss_growth_bytes', 'value'))} MiB; "
            f"fds {g('soak_server_open_fds', 'min')}..{g('soak_server_open_fds', 'max')}, "
            f"idle growth {g('soak_idle_fd_growth', 'value')}")


def thresholds(r):
    ran = [t for t in JUDGED if r.s[t]]
    if not ran:
        return None
    bad = [t for t in ran if r.failed_thresholds(t)]
    return "all held (" + ", ".join(ran) + ")" if not bad else "FAILED: " + ", ".join(bad)


ROWS = [
    ("capacity, hello-world (jobs/s)", capacity_hello),
    ("capacity, the mix (jobs/s): the rate the mix tests scale from", capacity_mix),
    ("load: arrival rate; hello p50 / p99", load_row),
    ("stress: refused with 503 while overloaded", shed_row("stress", "overload")),
    ("stress: 503 latency p50 / max", shed_latency("stress")),
    ("stress: other 5xx / client timeouts", errors_row("stress")),
    ("stress: recovery, hello p50 / p99", phase_latency("stress", "recovery")),
    ("spike: refused with 503 in the burst", shed_row("spike", "burst")),
    ("spike: other 5xx / client timeouts", errors_row("spike")),
    ("spike: pool refilled after", pool_refilled),
    ("spike: after, hello p50 / p99", phase_latency("spike", "after")),
    ("16 concurrent hello-world: p50 / max", concurrent),
    ("memory: server RSS (MiB)", mem_field("server_rss")),
    ("memory: idle worker private (MiB)", mem_field("worker_private")),
    ("memory: idle worker PSS (MiB)", mem_field("worker_pss")),
    ("memory: zygote PSS (MiB)", mem_field("zygote_pss", fork_only=True)),
    ("memory: warm pool PSS in all (MiB)", pool_total),
    ("baseline PYEXEC_POOL_SIZE=0: capacity (jobs/s)", baseline),
    ("soak", soak),
    ("thresholds", thresholds),
]


def latency_table(r):
    out = ["| run | " + " | ".join(TYPES) + " |", "|---|" + "---|" * len(TYPES)]
    runs = [("load", None, "load"), ("load-pool0", None, "load, POOL_SIZE=0"),
            ("stress", "recovery", "stress: recovery"), ("spike", "after", "spike: after"),
            ("soak", "soak", "soak")]
    for test, scen, label in runs:
        if not r.s[test]:
            continue
        note = (f"{r.value(test, 'http_reqs', 'rate', 0):.2f} req/s" if scen is None
                else f"{r.count(test, f'http_reqs{{scenario:{scen}}}')} requests")
        cells = []
        for t in TYPES:
            key = f"http_req_duration{{type:{t}}}" if scen is None else f"http_req_duration{{type:{t},scenario:{scen}}}"
            m = r.metric(test, key)
            cells.append("-" if not m else f"{fmt_ms(m.get('med'))} / {fmt_ms(m.get('p(95)'))} / {fmt_ms(m.get('p(99)'))}")
        out.append(f"| {label} ({note}) | " + " | ".join(cells) + " |")
    return out if len(out) > 2 else []


def has_results(folder):
    """A mode's folder: run.sh wrote a capacity, memory or k6 summary file in it."""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(n in ("capacity.json", "memory.json") or n.endswith(".summary.json") for n in names)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    modes = sys.argv[2:]
    if not modes:
        present = [m for m in os.listdir(d) if has_results(os.path.join(d, m))] if os.path.isdir(d) else []
        modes = [m for m in KNOWN_MODES if m in present] + sorted(m for m in present if m not in KNOWN_MODES)
    runs = [(m, Run(os.path.join(d, m))) for m in modes]
    if not runs:
        runs = [("results", Run(d))]  # the old flat layout

    out = ["## loadtest figures", "",
           "| | " + " | ".join(m for m, _ in runs) + " |", "|---|" + "---|" * len(runs)]
    for label, fn in ROWS:
        cells = [fn(r) for _, r in runs]
        if all(c is None for c in cells):
            continue
        out.append(f"| {label} | " + " | ".join("-" if c is None else c for c in cells) + " |")
    for m, r in runs:
        table = latency_table(r)
        if table:
            out += ["", f"### {m}: latency p50 / p95 / p99 per script type (k6 http_req_duration)", ""] + table
    failures = []
    for m, r in runs:
        for t in JUDGED:
            for b in r.failed_thresholds(t) if r.s[t] else []:
                failures.append(f"- {m}: {t}: {b}")
    if failures:
        out += ["", "Thresholds that failed:", ""] + failures
    print("\n".join(out))


if __name__ == "__main__":
    main()
