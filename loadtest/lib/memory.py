#!/usr/bin/env python3
"""Memory of a running pyexec server and its warm workers, from its cgroups and /proc.

Usage: memory.py SERVER_PID [OUT.json] [--max-child-private-mib N]

Every worker, in both isolation modes, has a cgroup w<id> of its own under the
server's cgroup root, and fork mode's zygote has z<n>:

    v1: <mount>/memory/<parent>/<server pid>/{w<id>,z<n>}
    v2: <mount>/<parent>/<server pid>/{w<id>,z<n>}

(mount and parent: PYEXEC_CGROUP_MOUNT, default /sys/fs/cgroup, and
PYEXEC_CGROUP_PARENT, default pyexec, as the server reads them). The processes
of each worker are read from its cgroup.procs, not guessed from the process
tree:

    spawn: w<id> = nsjail + the jailed Python runner (one interpreter each)
    fork:  z<n>  = the zygote's nsjail + the zygote Python (numpy, pandas imported)
           w<id> = one job child forked from the zygote, idle until its job

For each process: RSS, PSS (proportional set size: pages shared with other
processes, such as a forked child's copy-on-write pages still shared with its
zygote, divided among the sharers, so PSS sums to real memory) and private
memory (Private_Clean + Private_Dirty: what the process alone holds, freed when
it exits). A fork-mode child's private memory is what each more idle child
costs; the zygote's PSS is what the children share.

With --max-child-private-mib, exits 1 when an idle worker's private memory
(fork: the child; spawn: nsjail + python) is above it. Standard library only.
"""
import json
import os
import re
import sys

MIB = 1024 * 1024


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cgroup_root(server):
    """The server's cgroup root in the memory hierarchy, and the layout."""
    mount = os.environ.get("PYEXEC_CGROUP_MOUNT") or "/sys/fs/cgroup"
    parent = os.environ.get("PYEXEC_CGROUP_PARENT") or "pyexec"
    if os.path.exists(os.path.join(mount, "cgroup.controllers")):
        return os.path.join(mount, parent, str(server)), "v2"
    return os.path.join(mount, "memory", parent, str(server)), "v1"


def rollup(pid):
    vals = {}
    text = read(f"/proc/{pid}/smaps_rollup")
    comm = read(f"/proc/{pid}/comm")
    if text is None or comm is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
            vals[parts[0][:-1]] = int(parts[1]) * 1024
    return {
        "pid": pid,
        "comm": comm.strip(),
        "rss": vals.get("Rss", 0),
        "pss": vals.get("Pss", 0),
        "private": vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0),
    }


def kind_of(comm):
    return "nsjail" if "nsjail" in comm else ("python" if comm.startswith("python") else "other")


def descendants(pid):
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        for tid in os.listdir(f"/proc/{p}/task") if os.path.isdir(f"/proc/{p}/task") else []:
            todo += [int(x) for x in (read(f"/proc/{p}/task/{tid}/children") or "").split()]
    return seen


def group(path, name, mode):
    pids = [int(x) for x in (read(os.path.join(path, "cgroup.procs")) or "").split()]
    procs = [r for r in (rollup(p) for p in pids) if r is not None]
    for p in procs:
        p["kind"] = kind_of(p["comm"])
        p["cgroup"] = name
    charged = read(os.path.join(path, "memory.usage_in_bytes" if mode == "v1" else "memory.current"))
    return {
        "name": name,
        "processes": procs,
        "rss": sum(p["rss"] for p in procs),
        "pss": sum(p["pss"] for p in procs),
        "private": sum(p["private"] for p in procs),
        # What the memory cgroup charges this worker (its limit counts this).
        "cgroup_charged": int(charged) if charged and charged.strip().isdigit() else None,
    }


def stats(values):
    if not values:
        return None
    values = sorted(values)
    return {
        "mean": round(sum(values) / len(values) / MIB, 2),
        "min": round(values[0] / MIB, 2),
        "max": round(values[-1] / MIB, 2),
    }


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    limit = None
    for i, a in enumerate(argv):
        if a == "--max-child-private-mib":
            limit = float(argv[i + 1])
            args.remove(argv[i + 1])
    if not args:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    server = int(args[0])
    out_path = args[1] if len(args) > 1 else None

    root, mode = cgroup_root(server)
    if not os.path.isdir(root):
        print(f"memory: no cgroup root {root} for server {server} (PYEXEC_CGROUP_PARENT / PYEXEC_CGROUP_MOUNT?)",
              file=sys.stderr)
        return 2
    names = sorted(os.listdir(root), key=lambda n: (n[0], int(n[1:]) if n[1:].isdigit() else 0))
    workers = [group(os.path.join(root, n), n, mode) for n in names if re.fullmatch(r"w\d+", n)]
    zygotes = [group(os.path.join(root, n), n, mode) for n in names if re.fullmatch(r"z\d+", n)]
    # A worker cgroup between its creation and its process joining is empty.
    workers = [w for w in workers if w["processes"]]
    zygotes = [z for z in zygotes if z["processes"]]
    isolation = "fork" if zygotes else "spawn"

    srv = rollup(server) or {"rss": 0, "pss": 0, "private": 0}
    in_cgroups = {p["pid"] for g in workers + zygotes for p in g["processes"]}
    # The server's own threads show up as its pid only; anything else in its
    # tree outside these cgroups is a process no worker accounts for.
    untracked = [r for r in (rollup(p) for p in descendants(server) if p != server and p not in in_cgroups)
                 if r is not None]

    pool_pss = sum(g["pss"] for g in workers + zygotes)
    charged = [w["cgroup_charged"] for w in workers if w["cgroup_charged"] is not None]
    summary = {
        "server_rss": round(srv["rss"] / MIB, 1),
        "server_pss": round(srv["pss"] / MIB, 1),
        "worker_private": stats([w["private"] for w in workers]),
        "worker_pss": stats([w["pss"] for w in workers]),
        "worker_rss": stats([w["rss"] for w in workers]),
        "worker_cgroup_charged": stats(charged),
        "zygote_pss": round(sum(z["pss"] for z in zygotes) / MIB, 1) if zygotes else None,
        "zygote_rss": round(sum(z["rss"] for z in zygotes) / MIB, 1) if zygotes else None,
        # Everything the warm pool holds (zygotes included), and that per worker.
        "pool_pss_total": round(pool_pss / MIB, 1),
        "pool_pss_per_worker": round(pool_pss / len(workers) / MIB, 1) if workers else None,
    }
    if isolation == "spawn" and workers:
        py = [sum(p["pss"] for p in w["processes"] if p["kind"] == "python") for w in workers]
        nj = [sum(p["pss"] for p in w["processes"] if p["kind"] == "nsjail") for w in workers]
        summary["python_pss"] = stats(py)
        summary["nsjail_pss"] = stats(nj)

    result = {
        "server_pid": server,
        "isolation": isolation,
        "cgroup_mode": mode,
        "cgroup_root": root,
        "warm_workers": len(workers),
        "zygotes": len(zygotes),
        "mib": summary,
        "untracked": untracked,
        "server": srv,
        "groups": workers + zygotes,
    }
    if out_path:
        with open(out_path, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")

    s = summary
    wp, wpss = s["worker_private"] or {}, s["worker_pss"] or {}
    line = f"memory ({isolation}): server rss {s['server_rss']} MiB; {len(workers)} warm workers"
    if isolation == "fork":
        line += (f"; idle pre-forked child private {wp.get('mean')} MiB (max {wp.get('max')}), "
                 f"pss {wpss.get('mean')} MiB; zygote pss {s['zygote_pss']} MiB (rss {s['zygote_rss']})")
    elif workers:
        line += (f"; per worker (nsjail + python) pss {wpss.get('mean')} MiB, private {wp.get('mean')} MiB "
                 f"(python pss {s['python_pss']['mean']}, nsjail pss {s['nsjail_pss']['mean']})")
    line += f"; pool pss {s['pool_pss_total']} MiB in all"
    print(line)
    if untracked:
        print(f"memory: {len(untracked)} processes under the server in no worker cgroup: "
              + ", ".join(f"{p['pid']} {p['comm']}" for p in untracked[:10]))
    if limit is not None and workers:
        over = [w for w in workers if w["private"] > limit * MIB]
        if over:
            print(f"memory: FAILED: {len(over)} of {len(workers)} idle workers hold more than {limit} MiB private "
                  f"(max {wp.get('max')} MiB)")
            return 1
        print(f"memory: every idle worker holds at most {limit} MiB private (max {wp.get('max')} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
