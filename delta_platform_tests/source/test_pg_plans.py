"""PostgreSQL reads a large window by scanning the table, as its planner would for the real values.

The stream's window values reach the server as transaction settings the planner cannot look
into; `planner_scans_table` asks EXPLAIN with the values bound, and the stream then turns the
index paths off for that one read. These tests pin the decision for every cursor kind (a value
the driver failed to bind would silently answer False), the rows (the same either way) and the
settings afterwards (back to their defaults for the snapshot's other reads).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from delta_platform.control_entry import ControlEntry
from delta_platform.core.operators import Operator
from delta_platform.core.watermark import Watermark
from delta_platform.core.window import Bound, Window
from delta_platform.engine.streaming import _table_scan
from delta_platform.source import Source
from delta_platform_tests.items import gte_item
from delta_platform_tests.scenarios.harness import Db, make_db, make_source

ROWS = 5000
T0 = datetime(2024, 1, 1, tzinfo=UTC)
KINDS: dict[str, tuple[str, Any]] = {  # cursor column type -> value of row i
    "bigint": ("bigint", lambda i: i),
    "numeric": ("numeric(12,2)", lambda i: Decimal(i) / 4),
    "text": ("text", lambda i: f"k{i:06d}"),
    "date": ("date", lambda i: date(2000, 1, 1) + timedelta(days=i)),
    "timestamp": ("timestamp", lambda i: (T0 + timedelta(seconds=i)).replace(tzinfo=None)),
    "timestamptz": ("timestamptz", lambda i: T0 + timedelta(seconds=i)),
}


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    db = make_db("postgresql", request, tmp_path)
    cols = ", ".join(f"c_{k} {t} NOT NULL" for k, (t, _) in KINDS.items())
    db.execute(f"CREATE TABLE {db.qualified('t')} (id bigint PRIMARY KEY, {cols})")
    for k in KINDS:
        db.execute(f"CREATE INDEX ON {db.qualified('t')} (c_{k})")
    # rows stored in an order unrelated to the cursors, as in a table that has seen updates
    order = sorted(range(1, ROWS + 1), key=lambda i: (i * 7919) % ROWS)
    db.insert("t", [{"id": i, **{f"c_{k}": f(i) for k, (_, f) in KINDS.items()}} for i in order])
    db.execute(f"ANALYZE {db.qualified('t')}")
    return db


def _window(source: Source, info: Any, low_row: int) -> Window:
    """`cursor >= value of row low_row` up to the last row, typed as the catalog types it."""
    kind = info.kind
    column = info.entry.filter_column.removeprefix("c_")
    low, high = (KINDS[column][1](i) for i in (low_row, ROWS))
    text = {datetime: lambda v: v.isoformat(), date: lambda v: v.isoformat()}.get(type(low), str)
    return Window(
        Operator.GTE,
        Bound(Watermark.parse(kind, text(low), table="t", attribute="startvalue"), True),
        Bound(Watermark.parse(kind, text(high), table="t", attribute="startvalue"), True),
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_large_windows_scan_the_table_small_ones_use_the_index(pg: Db, kind: str) -> None:
    source = make_source(pg)
    entry = ControlEntry.from_item(gte_item(sourceSchema=pg.schema, filtercolumn=f"c_{kind}"))
    info = source.describe(entry)
    with source.snapshot(info) as snap:
        for low_row, expect_scan in ((1, True), (ROWS - 2, False)):
            window = _window(source, info, low_row)
            select = source.select_window(info, window)
            assert _table_scan(source, snap, info, select, -1) is expect_scan, (kind, low_row)
            scanned = [
                r["id"]
                for b in snap.stream(source.select_window(info, window, table_scan=True), info.schema, 1000)
                for r in b.to_pylist()
            ]
            assert snap.scalar(_show("enable_indexscan")) == "on"  # back for the snapshot's other reads
            planned = [r["id"] for b in snap.stream(select, info.schema, 1000) for r in b.to_pylist()]
            assert sorted(scanned) == sorted(planned) == list(range(low_row, ROWS + 1))


def _show(setting: str) -> Any:
    import sqlalchemy as sa

    return sa.select(sa.func.current_setting(setting))
