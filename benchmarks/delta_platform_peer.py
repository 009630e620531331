"""Adapter between the harness and the delta_platform engine.

PLACEHOLDER: wired by the engine issue. Until then it raises NotImplementedError and
engine_speed.py prints "n/a (not wired)" for the `delta_platform` row.

Contract for the lead: load the window `low < updated_at <= high` of the `orders` table
(PostgreSQL schema / MariaDB database `bench`, SQLite main) at `url` (a SQLAlchemy URL) as
Parquet under `out_dir`, then `return summarize(out_dir)` (from benchmarks.common), which reads
the output back and reports rows, exact sum(amount), bytes and losses; its own read-back time is
subtracted from the wall clock. `low`/`high`: tz-aware datetimes (PostgreSQL), naive UTC
datetimes (MariaDB, session time_zone '+00:00'), 'YYYY-MM-DD HH:MM:SS.ffffff' strings (SQLite).
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import PeerResult


def run_delta_platform(db: str, url: str, out_dir: str, low: Any, high: Any) -> PeerResult:
    """Run one delta_platform window load and summarize its output (not wired yet)."""
    raise NotImplementedError("wired by the engine issue")
