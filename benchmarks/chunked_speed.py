"""The chunked engine against the single stream on one large window.

    python benchmarks/chunked_speed.py --db postgres --rows 2000000 [--chunks 2,4] [--repeat 2]

Builds or reuses `bench.orders` (tables.py). Each method runs the engine alone (no fence, no
publish) over the window covering the table, in a fresh subprocess per repetition so its peak
RSS is its own; the best wall time is kept. Rows and exact sum(amount) are checked against the
source, read back from the staged Parquet after the clock stops.
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
    error: str = ""


def child(db: str, method: str, url: str, low: str, high: str, out_dir: str) -> Run:
    """In the fresh process: build the engine, start the clock, read the window, report."""
    import pyarrow.parquet as pq

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
        engine = ChunkedEngine(chunks=k, workers=k, min_rows_per_chunk=1)
    lake = Lake(out_dir)
    started = time.perf_counter()
    result = engine.run(source, info, window, lake, "bench00000001")
    wall = time.perf_counter() - started
    rss = _peak_rss_mb()
    if result.rows_read != result.source_count:
        raise RuntimeError(f"count mismatch {result.rows_read} != {result.source_count}")
    total = Decimal(0)
    for f in result.staged:
        total += exact_amount_sum(pq.read_table(f.path, columns=["amount"]).column("amount"))
    chunks = result.details.get("chunks")
    return Run("ok", wall, rss, result.rows_read, str(total), len(chunks) if isinstance(chunks, list) else 1)


def spawn(db: str, method: str, url: str, low: str, high: str) -> Run:
    with tempfile.TemporaryDirectory(prefix=f"bench_{method}_") as out_dir:
        spec = {"db": db, "method": method, "url": url, "low": low, "high": high, "out_dir": out_dir}
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
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        run = child(spec["db"], spec["method"], spec["url"], spec["low"], spec["high"], spec["out_dir"])
        print("BENCH_RESULT " + json.dumps(asdict(run)), flush=True)
        return 0
    url = default_url(args.db)
    ensure_table(args.db, url, args.rows)
    truth = source_truth(args.db, url)
    low, high = (
        str(v) if args.db == "sqlite" else v.isoformat() for v in (truth.window.low, truth.window.high)
    )
    methods = ["streaming", *(f"chunked-{int(k)}" for k in args.chunks.split(","))]
    results: dict[str, Run] = {}
    for method in methods:
        runs = [spawn(args.db, method, url, low, high) for _ in range(args.repeat)]
        ok = [r for r in runs if r.status == "ok"]
        results[method] = min(ok, key=lambda r: r.wall_s) if ok else runs[-1]
    print(f"{args.db}: {truth.rows:,} rows, best of {args.repeat}, {os.cpu_count()} cores")
    print("| method | chunks | wall s | rows/s | peak RSS MB | check |")
    print("|---|---:|---:|---:|---:|---|")
    for method, r in results.items():
        if r.status != "ok":
            print(f"| {method} | | | error | | {r.error} |")
            continue
        good = r.rows == truth.rows and Decimal(r.amount_sum) == truth.amount_sum
        check = "ok" if good else f"MISMATCH rows={r.rows} sum={r.amount_sum}"
        rate = f"{r.rows / r.wall_s:,.0f}"
        print(f"| {method} | {r.chunks} | {r.wall_s:.2f} | {rate} | {r.rss_mb:.0f} | {check} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
