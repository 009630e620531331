"""The chunked engine against the single stream on one large window.

    python benchmarks/chunked_speed.py --db postgres --rows 2000000 [--chunks 2,4] [--repeat 3]
        [--workers auto] [--cpus 1,2] [--checkpoint]

Builds or reuses `bench.orders` (tables.py). Each method runs the engine alone (no fence, no
publish) over the window covering the table, in a fresh subprocess per repetition so its peak
RSS is its own. The methods are interleaved (streaming, chunked-2, ..., streaming, ...) so a
burst of load from other users of the machine hits them alike; the best wall time is kept with
that run's client CPU seconds (user + system of the child) and the database server's CPU
seconds over the same interval (all local `postgres`/`mariadbd` processes: a shared server
counts other sessions' work too, so read it as an upper bound). Rows and exact sum(amount) are
checked against the source, read back from the staged Parquet after the clock stops.

`chunked-K` uses K chunks; its connections are `--workers` (default `auto`: the engine's own
choice from the cores the process may run on, `os.sched_getaffinity`). `--cpus 1,2` repeats
everything with the client process pinned to that many cores (`os.sched_setaffinity`, the
workers then follow it); the database server is NOT pinned and keeps using every core, so the
1-core figures show the client's scaling, not a 1-core machine. `--checkpoint` runs the engine
as DeltaTask does (a resumable run that writes the chunk checkpoint).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DBS, default_url, exact_amount_sum  # noqa: E402
from benchmarks.delta_platform_peer import bench_item  # noqa: E402
from benchmarks.engine_speed import _peak_rss_mb  # noqa: E402
from benchmarks.tables import ensure_table, source_truth  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 600


@dataclass
class Run:
    status: str
    wall_s: float = 0.0
    rss_mb: float = 0.0
    rows: int = 0
    amount_sum: str = ""
    chunks: int = 1
    workers: int = 1
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    error: str = ""


SERVER_PROCESSES = {"postgres": ("postgres",), "mariadb": ("mariadbd", "mysqld")}


def server_cpu_seconds(db: str) -> float:
    """CPU seconds used so far by the local database server's processes (0 when not visible)."""
    names = SERVER_PROCESSES.get(db, ())
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm in names:
            fields = stat[stat.rindex(")") + 2 :].split()
            # utime + stime, plus cutime + cstime: a backend's CPU moves to the postmaster's
            # children's time when it exits and is reaped.
            total += sum(int(f) for f in fields[11:15])
    return total / tick


def child(
    db: str,
    method: str,
    url: str,
    low: str,
    high: str,
    out_dir: str,
    workers: str = "auto",
    cpus: int | None = None,
    checkpoint: bool = False,
) -> Run:
    """In the fresh process: build the engine, start the clock, read the window, report."""
    import resource

    import pyarrow.parquet as pq

    if cpus:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])

    from delta_platform.control_entry import ControlEntry
    from delta_platform.core.operators import Operator
    from delta_platform.core.watermark import Kind, Watermark
    from delta_platform.core.window import Bound, Window
    from delta_platform.engine import ChunkedEngine, StreamingEngine
    from delta_platform.lake import Lake
    from delta_platform.source import Source

    source = Source(url)
    entry = ControlEntry.from_item({**bench_item(db, out_dir, "2000-01-01 00:00:00"), "primaryKey": "id"})
    info = source.describe(entry)

    def mark(text: str) -> Watermark:
        value = dt.datetime.fromisoformat(text)
        if info.kind is Kind.TIMESTAMPTZ:
            value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        else:
            value = value.replace(tzinfo=None)
        return Watermark(info.kind, value)

    window = Window(Operator.GTE, Bound(mark(low), False), Bound(mark(high), True))
    if method == "streaming":
        engine: Any = StreamingEngine()
    else:
        k = int(method.removeprefix("chunked-"))
        engine = ChunkedEngine(
            chunks=k, workers=None if workers == "auto" else int(workers), min_rows_per_chunk=1
        )
    lake = Lake(out_dir)
    kw = {"checkpoint": True} if checkpoint and method != "streaming" else {}
    before = resource.getrusage(resource.RUSAGE_SELF)
    server = server_cpu_seconds(db)
    started = time.perf_counter()
    result = engine.run(source, info, window, lake, "bench00000001", **kw)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    source.dispose()
    time.sleep(0.3)  # the backends of closed connections exit and are reaped
    server = server_cpu_seconds(db) - server
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    rss = _peak_rss_mb()
    if result.rows_read != result.source_count:
        raise RuntimeError(f"count mismatch {result.rows_read} != {result.source_count}")
    total = Decimal(0)
    for f in result.staged:
        total += exact_amount_sum(pq.read_table(f.path, columns=["amount"]).column("amount"))
    chunks = result.details.get("chunks")
    used = result.details.get("workers", 1)
    return Run(
        "ok",
        wall,
        rss,
        result.rows_read,
        str(total),
        len(chunks) if isinstance(chunks, list) else 1,
        used if isinstance(used, int) else 1,
        cpu,
        server,
    )


def spawn(db: str, method: str, url: str, low: str, high: str, **opts: Any) -> Run:
    with tempfile.TemporaryDirectory(prefix=f"bench_{method}_") as out_dir:
        spec = {"db": db, "method": method, "url": url, "low": low, "high": high, "out_dir": out_dir, **opts}
        cmd = [sys.executable, "-m", "benchmarks.chunked_speed", "--child", json.dumps(spec)]
        try:
            proc = subprocess.run(
                cmd, cwd=REPO, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=dict(os.environ)
            )
        except subprocess.TimeoutExpired:
            return Run("error", error=f"timeout after {CHILD_TIMEOUT_S} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return Run("error", error=tail[0][:160])
    return Run(**json.loads(lines[-1].removeprefix("BENCH_RESULT ")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=DBS, default="postgres")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunks", default="2,4", help="comma-separated chunk counts (workers = chunks)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", default="auto", help="connections of chunked-K: auto (from the cores) or N")
    ap.add_argument("--cpus", default="", help="comma-separated core counts to pin the client to, e.g. 1,2")
    ap.add_argument("--checkpoint", action="store_true", help="resumable runs, as DeltaTask does")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run = child(**json.loads(args.child))
        print("BENCH_RESULT " + json.dumps(asdict(run)), flush=True)
        return 0
    url = default_url(args.db)
    ensure_table(args.db, url, args.rows)
    truth = source_truth(args.db, url)
    low, high = (
        str(v) if args.db == "sqlite" else v.isoformat() for v in (truth.window.low, truth.window.high)
    )
    methods = ["streaming", *(f"chunked-{int(k)}" for k in args.chunks.split(","))]
    pins: list[int | None] = [int(c) for c in args.cpus.split(",")] if args.cpus else [None]
    runs: dict[tuple[int | None, str], list[Run]] = {(c, m): [] for c in pins for m in methods}
    for _ in range(args.repeat):  # interleaved: noise from other users hits every method alike
        for cpus in pins:
            for method in methods:
                opts = {"workers": args.workers, "cpus": cpus, "checkpoint": args.checkpoint}
                runs[cpus, method].append(spawn(args.db, method, url, low, high, **opts))
    print(
        f"{args.db}: {truth.rows:,} rows, best of {args.repeat} (interleaved), "
        f"{len(os.sched_getaffinity(0))} cores available, workers={args.workers}"
        + (", checkpointed" if args.checkpoint else "")
    )
    print(
        "| client cores | method | chunks | connections | wall s | rows/s | client CPU s | server CPU s "
        "| peak RSS MB | check |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for (cpus, method), tries in runs.items():
        ok = [r for r in tries if r.status == "ok"]
        pin = str(cpus) if cpus else "all"
        if not ok:
            print(f"| {pin} | {method} | | | | error | | | | {tries[-1].error} |")
            continue
        r = min(ok, key=lambda r: r.wall_s)
        good = r.rows == truth.rows and Decimal(r.amount_sum) == truth.amount_sum
        check = "ok" if good else f"MISMATCH rows={r.rows} sum={r.amount_sum}"
        rate = f"{r.rows / r.wall_s:,.0f}"
        print(
            f"| {pin} | {method} | {r.chunks} | {r.workers} | {r.wall_s:.2f} | {rate} | {r.cpu_s:.2f} "
            f"| {r.server_cpu_s:.2f} | {r.rss_mb:.0f} | {check} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
