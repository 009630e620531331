"""SQLite read tuning keeps exactness: the decimal fast path equals the exact cast, and a table
scan is chosen only for windows covering much of the table, with the same rows either way."""

from __future__ import annotations

import random
import sqlite3
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from delta_platform.control_entry import ControlEntry
from delta_platform.core.operators import Operator
from delta_platform.core.watermark import Kind, Watermark
from delta_platform.core.window import Bound, Window
from delta_platform.engine.streaming import SQLITE_SCAN_SHARE, _table_scan
from delta_platform.source import Source
from delta_platform.source.catalog import conform
from delta_platform.source.snapshot import _sqlite_decimals
from delta_platform_tests.items import gte_item


def _exact(values: list[float | None], target: pa.DataType) -> pa.Array:
    """The reference: each double's shortest repr, cast exactly (what `conform` does)."""
    batch = pa.record_batch([pa.array(values, pa.float64())], names=["x"])
    return conform(batch, pa.schema([pa.field("x", target)]), table="t").column(0)


@pytest.mark.parametrize(("precision", "scale"), [(12, 2), (15, 5), (9, 0), (15, 0), (4, 3)])
def test_decimal_fast_path_equals_the_exact_cast(precision: int, scale: int) -> None:
    rng = random.Random(precision * 100 + scale)
    bound = 10 ** (precision - scale) - 1
    values: list[float | None] = [round(rng.uniform(-bound, bound), scale) for _ in range(20_000)] + [
        None,
        0.0,
        -0.0,
        float(bound),
        -float(bound),
    ]
    target = pa.decimal128(precision, scale)
    batch = pa.record_batch([pa.array(values, pa.float64())], names=["x"])
    fast = _sqlite_decimals(batch, pa.schema([pa.field("x", target)])).column(0)
    assert fast.type == target
    assert fast.to_pylist() == _exact(values, target).to_pylist()


def test_values_the_fast_path_cannot_prove_exact_keep_the_exact_cast_and_its_error() -> None:
    target = pa.decimal128(12, 2)
    schema = pa.schema([pa.field("x", target)])
    more_digits = pa.record_batch([pa.array([1.005, 2.5], pa.float64())], names=["x"])
    untouched = _sqlite_decimals(more_digits, schema)
    assert untouched.column(0).type == pa.float64()  # left for conform, which is exact or fails
    with pytest.raises(Exception, match="x"):
        conform(untouched, schema, table="t")
    nan = pa.record_batch([pa.array([float("nan")], pa.float64())], names=["x"])
    assert _sqlite_decimals(nan, schema).column(0).type == pa.float64()
    assert conform(
        _sqlite_decimals(pa.record_batch([pa.array([12.34], pa.float64())], names=["x"]), schema),
        schema,
        table="t",
    ).column(0).to_pylist() == [Decimal("12.34")]


@pytest.fixture
def source(tmp_path: Path) -> Source:
    db = tmp_path / "s.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t(id integer primary key, v integer)")
        conn.execute("create index t_v on t(v)")
        conn.executemany("insert into t values(?, ?)", [(i, i) for i in range(1, 3001)])
    conn.close()
    return Source(f"sqlite:///{db}")


def _entry() -> ControlEntry:
    return ControlEntry.from_item(gte_item())


def _window(low: int) -> Window:
    return Window(
        Operator.GTE, Bound(Watermark(Kind.INT, low), False), Bound(Watermark(Kind.INT, 3000), True)
    )


def test_table_scan_only_for_windows_covering_a_third_and_same_rows(source: Source) -> None:
    info = source.describe(_entry())
    with source.snapshot(info) as snap:
        for low, expect_scan in ((0, True), (2100, False), (3000 - int(3000 * SQLITE_SCAN_SHARE) - 1, True)):
            window = _window(low)
            count = int(snap.scalar(source.count_window(info, window)))
            assert _table_scan(source, snap, info, source.select_window(info, window), count) is expect_scan
            scanned = [
                r
                for b in snap.stream(source.select_window(info, window, table_scan=True), info.schema, 1000)
                for r in b.to_pylist()
            ]
            indexed = [
                r
                for b in snap.stream(source.select_window(info, window), info.schema, 1000)
                for r in b.to_pylist()
            ]
            assert (
                sorted(r["id"] for r in scanned)
                == sorted(r["id"] for r in indexed)
                == list(range(low + 1, 3001))
            )


def test_table_scan_hint_is_rendered_for_sqlite(source: Source) -> None:
    from delta_platform.source.snapshot import _SQLiteHintCompiler  # noqa: F401 - the compiler under test

    info = source.describe(_entry())
    stmt = source.select_window(info, _window(0), table_scan=True)
    with source.snapshot(info) as snap:
        sql, _ = snap._compile(stmt)  # noqa: SLF001 - the SQL the reader really sends
    assert "NOT INDEXED" in sql and "3000" not in sql  # hint rendered, values still bound
