"""Peak RSS of one delta_platform window load as the window grows (should stay flat).

    python benchmarks/memory_profile.py --db postgres --rows 200000,1000000,5000000 [--repeat K]
    python benchmarks/memory_profile.py --db postgres --rows 2000000 --chunk-rows 250000

For each row count: build the table (tables.py), then run the full delta_platform load
(delta_platform_peer: fence, snapshot, engine, publish) in a fresh interpreter and report its
peak RSS (VmHWM), the RSS after imports, best wall and client CPU seconds, and check rows and
exact sum(amount) against the source. Engine knobs can be overridden for experiments with
`--engine batch_rows=...,row_group_rows=...,queue_depth=...`; `--chunk-rows N` runs the chunked
engine instead (chunks of at least N rows, on the `id` key, as engine_speed's chunked peer).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DBS, default_url  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """In the fresh process: import, load once, report."""
    import resource

    from benchmarks.delta_platform_peer import run_delta_platform
    from delta_platform.engine import streaming

    if spec["engine"]:
        knobs = {k: int(v) for k, v in (kv.split("=") for kv in spec["engine"].split(","))}
        defaults = list(streaming.StreamingEngine.__init__.__defaults__ or ())
        names = ("batch_rows", "row_group_rows", "queue_depth")
        for i, name in enumerate(names):
            if name in knobs:
                defaults[i] = knobs[name]
        streaming.StreamingEngine.__init__.__defaults__ = tuple(defaults)
    import datetime as dt

    low, high = spec["low"], spec["high"]
    if spec["db"] != "sqlite":
        low, high = dt.datetime.fromisoformat(low), dt.datetime.fromisoformat(high)
    base = _status_mb("VmRSS")
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    loaded: dict[str, float] = {}

    def sample() -> None:  # the load's own peak, before the harness reads the output back
        import pyarrow as pa

        loaded["peak_mb"] = _status_mb("VmHWM")
        loaded["arrow_mb"] = pa.default_memory_pool().max_memory() / 2**20

    res = run_delta_platform(
        spec["db"], spec["url"], spec["out_dir"], low, high, on_loaded=sample, chunk_rows=spec["chunk_rows"]
    )
    wall = time.perf_counter() - started - res.verify_s
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime - res.verify_s
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "base_mb": base,
        "peak_mb": loaded["peak_mb"],
        "arrow_mb": loaded["arrow_mb"],
        "rows": res.rows,
        "amount_sum": str(res.amount_sum),
    }


def spawn(
    db: str, url: str, low: Any, high: Any, engine: str, chunk_rows: int | None = None
) -> dict[str, Any]:
    """One load in a fresh interpreter, so the peak is this load's own."""
    with tempfile.TemporaryDirectory(prefix="memprof_") as out_dir:
        spec = {
            "db": db,
            "url": url,
            "out_dir": out_dir,
            "low": str(low) if db == "sqlite" else low.isoformat(),
            "high": str(high) if db == "sqlite" else high.isoformat(),
            "engine": engine,
            "chunk_rows": chunk_rows,
        }
        cmd = [sys.executable, "-m", "benchmarks.memory_profile", "--child", json.dumps(spec)]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEM_RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError((proc.stderr or proc.stdout).strip()[-2000:])
    return json.loads(lines[-1].removeprefix("MEM_RESULT "))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (also the child's, with --child)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=DBS, default="postgres")
    ap.add_argument("--rows", default="200000,1000000,5000000", help="comma-separated row counts")
    ap.add_argument("--repeat", type=int, default=2, help="runs per size (best wall, max peak)")
    ap.add_argument("--engine", default="", help="StreamingEngine knobs, e.g. batch_rows=131072")
    ap.add_argument("--chunk-rows", type=int, default=None, help="chunked engine, min rows a chunk")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("MEM_RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0

    from decimal import Decimal

    from benchmarks import tables

    url = default_url(args.db)
    head = (
        "| rows | wall s | client CPU s | RSS after imports MB | peak RSS MB | Arrow pool peak MB | check |"
    )
    engine = f"chunked, chunks >= {args.chunk_rows:,} rows" if args.chunk_rows else "streaming"
    knobs = args.engine or "defaults"
    out = [f"{args.db}: delta_platform window load (whole table), {engine}, knobs: {knobs}"]
    out += [head, "|---:|---:|---:|---:|---:|---:|---|"]
    for n in (int(x) for x in args.rows.split(",")):
        tables.ensure_table(args.db, url, n)
        truth = tables.source_truth(args.db, url)
        low, high = truth.window.low, truth.window.high
        runs = [spawn(args.db, url, low, high, args.engine, args.chunk_rows) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["wall_s"])
        ok = all(r["rows"] == truth.rows and Decimal(r["amount_sum"]) == truth.amount_sum for r in runs)
        peak = max(r["peak_mb"] for r in runs)
        arrow = max(r["arrow_mb"] for r in runs)
        out.append(
            f"| {n:,} | {best['wall_s']:.2f} | {best['cpu_s']:.2f} | {best['base_mb']:.0f} | "
            f"{peak:.0f} | {arrow:.0f} | "
            f"{'ok' if ok else 'MISMATCH'} |"
        )
        print(out[-1], file=sys.stderr, flush=True)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
