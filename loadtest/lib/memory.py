#!/usr/bin/env python3
"""Memory of a running pyexec server and its warm workers, from /proc.

Usage: memory.py SERVER_PID [OUT.json]

Walks the process tree under SERVER_PID: the server itself, each worker's
nsjail supervisor and the jailed Python runner under it. Reports RSS and PSS
(proportional set size: shared pages such as numpy's libraries divided among
the processes sharing them, so PSS sums to real memory) per process kind, and
the mean per warm worker (nsjail + python). Standard library only.
"""
import json
import os
import sys


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    return seen


def rollup(pid):
    vals = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                    vals[parts[0][:-1]] = int(parts[1]) * 1024
        with open(f"/proc/{pid}/comm") as f:
            vals["comm"] = f.read().strip()
    except OSError:
        return None
    return vals


def main():
    server = int(sys.argv[1])
    procs = []
    for pid in tree(server):
        r = rollup(pid)
        if r is None:
            continue
        kind = "server" if pid == server else ("nsjail" if "nsjail" in r["comm"] else
                                                 ("python" if r["comm"].startswith("python") else "other"))
        procs.append({"pid": pid, "kind": kind, "comm": r["comm"], "rss": r.get("Rss", 0), "pss": r.get("Pss", 0),
                      "private": r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)})

    def agg(kind):
        ps = [p for p in procs if p["kind"] == kind]
        return {
            "count": len(ps),
            "rss_total": sum(p["rss"] for p in ps),
            "pss_total": sum(p["pss"] for p in ps),
            "private_total": sum(p["private"] for p in ps),
        }

    py, nj, sv = agg("python"), agg("nsjail"), agg("server")
    workers = py["count"]
    mib = 1024 * 1024
    result = {
        "server_pid": server,
        "server": sv,
        "python": py,
        "nsjail": nj,
        "other": agg("other"),
        "warm_workers": workers,
        "per_worker_mib": None if not workers else {
            "python_rss": round(py["rss_total"] / workers / mib, 1),
            "python_pss": round(py["pss_total"] / workers / mib, 1),
            "python_private": round(py["private_total"] / workers / mib, 1),
            "nsjail_pss": round(nj["pss_total"] / max(nj["count"], 1) / mib, 1),
            "pss_with_nsjail": round((py["pss_total"] + nj["pss_total"]) / workers / mib, 1),
        },
        "server_rss_mib": round(sv["rss_total"] / mib, 1),
        "processes": procs,
    }
    text = json.dumps(result, indent=2)
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            f.write(text + "\n")
    pw = result["per_worker_mib"]
    print(f"memory: server rss {result['server_rss_mib']} MiB; {workers} warm workers"
          + (f", per worker pss {pw['pss_with_nsjail']} MiB (python pss {pw['python_pss']}, "
             f"rss {pw['python_rss']}, private {pw['python_private']}; nsjail pss {pw['nsjail_pss']})" if pw else ""))


if __name__ == "__main__":
    main()
