"""delta_platform against its peers on one window, side by side.

    python benchmarks/engine_speed.py --db postgres --rows 1000000 [--peers a,b] [--repeat K]

Builds the table (tables.py), runs every method in a fresh subprocess per repetition (so peak
RSS is that method's own), keeps the best wall time (imports excluded, read-back of the
output excluded), checks rows and exact sum(amount) against the source and prints one table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DBS, Window, default_url  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 420


@dataclass
class Run:
    """One child's outcome."""

    status: str  # ok | not_wired | error
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_mb: float = 0.0
    rows: int = 0
    amount_sum: str | None = None
    out_bytes: int = 0
    loses: str = ""
    error: str = ""
    runs: int = 1


def _peak_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM).

    ru_maxrss is not used on Linux: exec carries the forking parent's RSS into it.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    self_kb = int(line.split()[1])
                    break
            else:
                raise OSError("no VmHWM")
    except OSError:
        self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(self_kb, kids_kb) / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    k = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + k.ru_utime + k.ru_stime


def child(db: str, name: str, url: str, window: dict[str, Any], out_dir: str) -> Run:
    """Inside the fresh process: import, start the clock, run one peer, report."""
    from benchmarks import peers
    from benchmarks.peers import Ctx

    p = peers.REGISTRY[db][name]
    for mod in p.imports:
        try:
            importlib.import_module(mod)
        except ImportError:
            if name != "delta_platform":
                raise
    low, high = window["low"], window["high"]
    if db != "sqlite":
        import datetime as dt

        low, high = dt.datetime.fromisoformat(low), dt.datetime.fromisoformat(high)
    ctx = Ctx(db=db, url=url, out_dir=out_dir, window=Window(low, high))
    cpu0 = _cpu_s()
    started = time.perf_counter()
    try:
        res = p.fn(ctx)
    except NotImplementedError as exc:
        return Run("not_wired", error=str(exc))
    wall = time.perf_counter() - started - res.verify_s
    return Run(
        "ok",
        wall_s=wall,
        cpu_s=_cpu_s() - cpu0 - res.verify_s,
        rss_mb=_peak_rss_mb(),
        rows=res.rows,
        amount_sum=None if res.amount_sum is None else str(res.amount_sum),
        out_bytes=res.out_bytes,
        loses=res.loses,
    )


def spawn(db: str, name: str, url: str, window: Window) -> Run:
    """Run one peer once in a fresh interpreter; parse its JSON report."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{name}_") as out_dir:
        spec = {
            "db": db,
            "name": name,
            "url": url,
            "out_dir": out_dir,
            "window": {
                "low": str(window.low) if db == "sqlite" else window.low.isoformat(),
                "high": str(window.high) if db == "sqlite" else window.high.isoformat(),
            },
        }
        cmd = [sys.executable, "-m", "benchmarks.engine_speed", "--child", json.dumps(spec)]
        env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}
        try:
            proc = subprocess.run(
                cmd, cwd=REPO, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env
            )
        except subprocess.TimeoutExpired:
            return Run("error", error=f"timeout after {CHILD_TIMEOUT_S} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return Run("error", error=tail[0][:120])
    return Run(**json.loads(lines[-1].removeprefix("BENCH_RESULT ")))


def _fmt_row(cells: list[str], widths: list[int]) -> str:
    out = []
    for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
        out.append(c.ljust(w) if i in (0, len(cells) - 1) else c.rjust(w))
    return "| " + " | ".join(out) + " |"


def report(
    db: str, rows: int, truth_rows: int, truth_sum: Decimal, results: dict[str, Run], wire: set[str]
) -> str:
    """The one table: method, wall, rows/s, CPU, peak RSS, ratio to fastest exact, check, loses."""

    def checked(r: Run) -> str:
        if r.status != "ok":
            return ""
        if r.rows != truth_rows:
            return f"ROWS {r.rows}"
        if r.amount_sum is None:
            return "rows ok"
        return "ok" if Decimal(r.amount_sum) == truth_sum else f"SUM {r.amount_sum}"

    exact = [
        r.wall_s
        for n, r in results.items()
        if r.status == "ok" and n not in wire and checked(r) == "ok" and r.loses == "—"
    ]
    best = min(exact) if exact else None
    head = [
        "method",
        "wall s",
        "rows/s",
        "client CPU s",
        "peak RSS MB",
        "× fastest exact",
        "check",
        "what the output loses",
    ]
    body = []
    for name, r in sorted(results.items(), key=lambda kv: (kv[1].status != "ok", kv[1].wall_s)):
        if r.status == "not_wired":
            body.append([name, "", "n/a (not wired)", "", "", "", "", "", ""])
        elif r.status == "error":
            body.append([name, "", "error", "", "", "", "", "", r.error])
        else:
            ratio = f"{r.wall_s / best:.2f}" if best else "—"
            body.append(
                [
                    name,
                    f"{r.wall_s:.2f}",
                    f"{r.rows / r.wall_s:,.0f}",
                    f"{r.cpu_s:.2f}",
                    f"{r.rss_mb:.0f}",
                    ratio,
                    checked(r),
                    r.loses,
                ]
            )
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        f"{db}: {rows:,} rows, window covers the table; source rows={truth_rows:,} sum(amount)={truth_sum}",
        _fmt_row(head, widths),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [_fmt_row(row, widths) for row in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (also the child's, with --child)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=DBS, default="postgres")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--peers", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--repeat", type=int, default=3, help="best of K runs, each a fresh process")
    ap.add_argument(
        "--once-over",
        type=float,
        default=20.0,
        help="methods whose first run takes longer than this many seconds run once",
    )
    ap.add_argument("--list", action="store_true", help="list the methods and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        spec = json.loads(args.child)
        run = child(spec["db"], spec["name"], spec["url"], spec["window"], spec["out_dir"])
        print("BENCH_RESULT " + json.dumps(run.__dict__), flush=True)
        return 0

    from benchmarks import peers, tables

    registry = peers.REGISTRY[args.db]
    if args.list:
        print("\n".join(registry))
        return 0
    names = [n.strip() for n in args.peers.split(",") if n.strip()] or list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        ap.error(f"unknown peers for {args.db}: {unknown}; known: {list(registry)}")
    url = default_url(args.db)
    tables.ensure_table(args.db, url, args.rows)
    truth = tables.source_truth(args.db, url)
    runs: dict[str, list[Run]] = {n: [] for n in names}
    for rep in range(max(1, args.repeat)):  # round-robin, so a burst of load hits all methods
        for name in names:
            done = runs[name]
            if done and (done[-1].status != "ok" or done[0].wall_s > args.once_over):
                continue
            done.append(spawn(args.db, name, url, truth.window))
            r = done[-1]
            print(f"  [{rep + 1}] {name}: {r.status} {r.wall_s:.2f}s {r.error}", file=sys.stderr, flush=True)
    results: dict[str, Run] = {}
    for name, done in runs.items():
        ok = [r for r in done if r.status == "ok"]
        if ok:
            results[name] = min(ok, key=lambda r: r.wall_s)
            results[name].rss_mb = max(r.rss_mb for r in ok)
            results[name].runs = len(ok)
        else:
            results[name] = done[-1]
    wire = {n for n in names if registry[n].wire_limit}
    print(report(args.db, args.rows, truth.rows, truth.amount_sum, results, wire))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
