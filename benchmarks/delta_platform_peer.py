"""Adapter between the harness and delta_platform: one real window load through the DeltaTask.

It runs the whole path a scheduled load runs — lease, plan, fence (MAX, clock, open
transactions), one snapshot with its count, the streaming engine, verification, manifest
publish and the watermark commit — so the figure is what a user pays, not just the reader.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import PeerResult, summarize
from delta_platform.delta_task import PartitionSpec
from delta_platform.runtime import Runtime
from delta_platform.store import LocalStore

SCHEMAS = {"postgres": "bench", "mariadb": "bench", "sqlite": "main"}


def bench_item(db: str, out_dir: str, low: str, *, chunk_rows: int | None = None) -> dict[str, Any]:
    """The control item for the benchmark table: `updated_at >= low`, fenced at MAX."""
    return {
        "targetTableName": "orders",
        "activeflag": "true",
        "sourceSchema": SCHEMAS[db],
        "sourceTable": "orders",
        "filtercolumn": "updated_at",
        "filteroperator": "gte",
        "startvalue": low,
        "ouputs3Prefix": out_dir,
        # chunked engine: ranges of the primary key read over several connections
        **({"chunkRows": str(chunk_rows), "primaryKey": "id"} if chunk_rows else {}),
    }


def run_delta_platform(
    db: str,
    url: str,
    out_dir: str,
    low: Any,
    high: Any,
    on_loaded: Callable[[], None] | None = None,
    chunk_rows: int | None = None,
) -> PeerResult:
    """Load `updated_at >= low` (fenced at MAX) of `orders` into `out_dir` and summarize it.

    `on_loaded` runs after the load, before the output is read back (memory_profile samples
    the load's own peak there).
    """
    with tempfile.TemporaryDirectory() as state:
        store = LocalStore(str(Path(state) / "control.db"))
        store.init()
        store.put_entry(bench_item(db, out_dir, str(low), chunk_rows=chunk_rows))
        runtime = Runtime(store, {"default": url})
        result = runtime.task().run("orders", PartitionSpec("bench"), run_id="bench")
        if result.rows != result.source_count:
            raise RuntimeError(f"count mismatch: {result.rows} != {result.source_count}")
    if on_loaded is not None:
        on_loaded()
    return summarize(out_dir)
