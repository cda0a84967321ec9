#!/usr/bin/env python3
"""Prints the figures of a loadtest/run.sh run as Markdown, for the README table.

Usage: report.py [RESULTS_DIR]   (default: loadtest/results)

Reads the k6 summaries (--summary-export JSON) and capacity*.json / memory.json
that run.sh wrote. Standard library only.
"""
import json
import os
import sys

TYPES = ["hello", "numpy", "pandas", "print", "raise", "timeout"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def metric(summary, key):
    return (summary or {}).get("metrics", {}).get(key)


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f} s" if v >= 1000 else (f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms")


def latency_row(summary, name, scenario=None):
    cells = []
    for t in TYPES:
        key = f"http_req_duration{{type:{t}}}" if scenario is None else f"http_req_duration{{type:{t},scenario:{scenario}}}"
        m = metric(summary, key)
        if not m:
            cells.append("-")
            continue
        cells.append(f"{fmt_ms(m.get('med'))} / {fmt_ms(m.get('p(95)'))} / {fmt_ms(m.get('p(99)'))}")
    return f"| {name} | " + " | ".join(cells) + " |"


def thresholds_ok(summary):
    bad = []
    for k, m in (summary or {}).get("metrics", {}).items():
        for expr, t in (m.get("thresholds") or {}).items():
            # --summary-export: {"expr": false} means *not failed* in older k6,
            # {"ok": bool} in newer; accept both shapes.
            failed = (not t["ok"]) if isinstance(t, dict) and "ok" in t else bool(t)
            if failed:
                bad.append(f"{k} {expr}")
    return bad


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    cap = load(os.path.join(d, "capacity.json"))
    cap0 = load(os.path.join(d, "capacity-pool0.json"))
    mem = load(os.path.join(d, "memory.json"))
    out = ["## loadtest figures", ""]
    if cap:
        out.append(f"- capacity (warm pool {cap.get('pool_target_size')}): **{cap['jobs_per_second']} jobs/s** "
                   f"(hello-world, {cap['vus']} closed-model users, {cap['window_seconds']} s window; "
                   f"saturated p50 {fmt_ms((cap.get('latency_ms_at_saturation') or {}).get('med'))})")
    if cap0:
        out.append(f"- capacity, PYEXEC_POOL_SIZE=0: **{cap0['jobs_per_second']} jobs/s** "
                   f"(saturated p50 {fmt_ms((cap0.get('latency_ms_at_saturation') or {}).get('med'))})")
    if mem and mem.get("per_worker_mib"):
        pw = mem["per_worker_mib"]
        out.append(f"- memory: {mem['warm_workers']} warm workers, per worker PSS {pw['pss_with_nsjail']} MiB "
                   f"(python PSS {pw['python_pss']}, RSS {pw['python_rss']}, private {pw['python_private']}; "
                   f"nsjail PSS {pw['nsjail_pss']}); server RSS {mem['server_rss_mib']} MiB")
    out += ["", "Latency: p50 / p95 / p99 per script type (k6 http_req_duration)", "",
            "| run | " + " | ".join(TYPES) + " |", "|---|" + "---|" * len(TYPES)]
    runs = [("load", None, "load"), ("load-pool0", None, "load, POOL_SIZE=0"),
            ("stress", "recovery", "stress: recovery"), ("spike", "after", "spike: after"),
            ("soak", "soak", "soak")]
    for fname, scen, label in runs:
        s = load(os.path.join(d, f"{fname}.summary.json"))
        if s:
            reqs = metric(s, "http_reqs") or {}
            note = f"{reqs.get('rate', 0):.2f} req/s" if scen is None else \
                f"{(metric(s, f'http_reqs{{scenario:{scen}}}') or {}).get('count', '?')} requests"
            out.append(latency_row(s, f"{label} ({note})", scen))
    out.append("")
    for fname, scen in [("stress", "overload"), ("spike", "burst")]:
        s = load(os.path.join(d, f"{fname}.summary.json"))
        if not s:
            continue
        shed = (metric(s, f"job_shed{{scenario:{scen}}}") or {}).get("count", 0)
        reqs = (metric(s, f"http_reqs{{scenario:{scen}}}") or {}).get("count", 0)
        sd = metric(s, "job_shed_duration") or {}
        out.append(f"- {fname} ({scen}): {shed} of {reqs} requests refused with 503 "
                   f"({100 * shed / reqs if reqs else 0:.0f}%), 503 latency p50 {fmt_ms(sd.get('med'))} / "
                   f"max {fmt_ms(sd.get('max'))}; other 5xx {(metric(s, 'job_other_5xx') or {}).get('count', 0)}, "
                   f"client timeouts {(metric(s, 'job_client_timeout') or {}).get('count', 0)}")
    s = load(os.path.join(d, "soak.summary.json"))
    if s:
        g = lambda k, f: (metric(s, k) or {}).get(f)
        mib = lambda b: "-" if b is None else f"{b / 1048576:.1f}"
        out.append(f"- soak: server RSS {mib(g('soak_server_rss_bytes', 'min'))}..{mib(g('soak_server_rss_bytes', 'max'))} MiB, "
                   f"growth max {mib(g('soak_rss_growth_bytes', 'max'))} MiB, idle {mib(g('soak_idle_rss_growth_bytes', 'value'))} MiB; "
                   f"fds {g('soak_server_open_fds', 'min')}..{g('soak_server_open_fds', 'max')}, idle growth {g('soak_idle_fd_growth', 'value')}")
    out.append("")
    for fname in ["smoke", "capacity", "load", "stress", "spike", "soak", "load-pool0"]:
        s = load(os.path.join(d, f"{fname}.summary.json"))
        if s:
            bad = thresholds_ok(s)
            out.append(f"- thresholds {fname}: " + ("all held" if not bad else "FAILED " + "; ".join(bad)))
    print("\n".join(out))


if __name__ == "__main__":
    main()
