"""Packed-CSV MariaDB reads: nasty values round-trip exactly and match the per-value path."""

from __future__ import annotations

import datetime as dt
import importlib.util
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from delta_platform.source import mysql_packed, snapshot
from delta_platform.source.dialects import MySQLDialect
from delta_platform_tests.source.extremes import BYTES, TEXTS
from delta_platform_tests.source.maria import create_table

HAS_MYSQLCLIENT = importlib.util.find_spec("MySQLdb") is not None
READERS = [
    "engine",
    pytest.param(
        "mysqlclient",
        marks=pytest.mark.skipif(not HAS_MYSQLCLIENT, reason="mysqlclient (extra mysql-fast) not installed"),
    ),
]

DDL = """
CREATE TABLE nasty (
  id BIGINT NOT NULL PRIMARY KEY,
  i8 TINYINT, i16 SMALLINT, i24 MEDIUMINT, i32 INT,
  dec2 DECIMAL(12,2), dec65 DECIMAL(65,30), dbl DOUBLE,
  d DATE, dt0 DATETIME, dt6 DATETIME(6), ts6 TIMESTAMP(6) NULL DEFAULT NULL,
  s VARCHAR(100) CHARACTER SET utf8mb4, lat TEXT CHARACTER SET latin1,
  e ENUM('a', 'b,c', '"q"'), js JSON,
  vb VARBINARY(300), bl BLOB
) DEFAULT CHARSET=utf8mb4
"""



def _rows() -> list[dict[str, Any]]:
    """One row per nasty text, with the other types' extremes cycled alongside."""
    ints = [
        (-128, -32768, -8388608, -2147483648),
        (127, 32767, 8388607, 2147483647),
        (0, 0, 0, 0),
        (None, None, None, None),
    ]
    decs = [
        (Decimal("-9999999999.99"), Decimal("-" + "9" * 35 + "." + "9" * 30)),
        (Decimal("0.01"), Decimal("0." + "0" * 29 + "1")),
        (Decimal("0.00"), Decimal(0)),
        (None, None),
    ]
    dbls = [0.1, 1 / 3, 1e308, -2.2250738585072014e-308, 5e-324, -0.0, 123456789.125, None]
    dates = [dt.date(1000, 1, 1), dt.date(9999, 12, 31), dt.date(2024, 2, 29), None]
    dts = [
        dt.datetime(1000, 1, 1),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        dt.datetime(2024, 3, 31, 1, 30, 0, 1),
        None,
    ]
    tss = [
        dt.datetime(1970, 1, 1, 0, 0, 1),
        dt.datetime(2038, 1, 19, 3, 14, 7, 999999),
        dt.datetime(2024, 10, 27, 1, 59, 59, 500000),
        None,
    ]
    enums = ["a", "b,c", '"q"', None]
    rows = []
    for i, text in enumerate(TEXTS):
        i8, i16, i24, i32 = ints[i % len(ints)]
        dec2, dec65 = decs[i % len(decs)]
        rows.append(
            {
                "id": -(2**63) if i == 0 else (2**63 - 1 if i == 1 else i),
                "i8": i8,
                "i16": i16,
                "i24": i24,
                "i32": i32,
                "dec2": dec2,
                "dec65": dec65,
                "dbl": dbls[i % len(dbls)],
                "d": dates[i % len(dates)],
                "dt0": None if dts[i % 4] is None else dts[i % 4].replace(microsecond=0),
                "dt6": dts[i % 4],
                "ts6": tss[i % 4],
                "s": text,
                "lat": None
                if text is None
                else ('café, "crème"\n' if i % 2 else text.encode("latin1", "replace").decode("latin1")),
                "e": enums[i % len(enums)],
                "js": None if text is None else '{"k": %s}' % ('"v,\\"x\\"\\n"' if i % 2 else str(i)),
                "vb": BYTES[i % len(BYTES)],
                "bl": None if i % 3 == 0 else bytes(range(256)) * (i + 1),
            }
        )
    return rows


def _read(
    engine: sa.Engine,
    stmt: sa.Select[Any],
    schema: pa.Schema,
    *,
    reader: str,
    packed: bool,
    monkeypatch: pytest.MonkeyPatch,
    batch_rows: int = 7,
) -> pa.Table:
    monkeypatch.setattr(snapshot, "MYSQL_READER", reader)
    monkeypatch.setattr(snapshot, "MYSQL_PACKED", packed)
    with snapshot.open_snapshot(engine, MySQLDialect(), table="t") as snap:
        batches = list(snap.stream(stmt, schema, batch_rows))
        assert type(snap.raw).__module__.split(".")[0] == (
            "MySQLdb" if reader == "mysqlclient" else "pymysql"
        )
    return pa.Table.from_batches(batches, schema=schema).sort_by("id") if batches else schema.empty_table()


@pytest.mark.parametrize("reader", READERS)
def test_nasty_values_round_trip(maria: sa.Engine, reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows()
    table, schema = create_table(maria, DDL, "nasty", rows)
    assert mysql_packed.packed_select(sa.select(*table.columns), schema) is not None, "every column packs"
    got = _read(maria, sa.select(*table.columns), schema, reader=reader, packed=True, monkeypatch=monkeypatch)
    assert got.schema == schema
    expected = sorted(rows, key=lambda r: r["id"])
    for name in schema.names:
        values = got.column(name).to_pylist()
        want = [r[name] for r in expected]
        if name == "ts6":
            want = [None if v is None else v.replace(tzinfo=dt.UTC) for v in want]
        assert values == want, name
    assert schema.field("dec65").type == pa.decimal256(65, 30)


@pytest.mark.parametrize("batch_rows", [1, 7, 1000])
@pytest.mark.parametrize("reader", READERS)
def test_packed_equals_per_value_path(
    maria: sa.Engine, reader: str, batch_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row at every batch edge (a NULL last field at the end of a batch once read as '')."""
    table, schema = create_table(maria, DDL, "nasty", _rows())
    # a window with bound values, as the engine reads it
    stmt = sa.select(*table.columns).where(table.c.id > -5, table.c.s != "never")
    kw = {"reader": reader, "monkeypatch": monkeypatch, "batch_rows": batch_rows}
    fast = _read(maria, stmt, schema, packed=True, **kw)
    slow = _read(maria, stmt, schema, packed=False, **kw)
    assert fast.num_rows == len(TEXTS) - 2  # id -2**63 dropped, NULL s dropped by !=
    assert fast.schema == slow.schema
    for name in schema.names:
        assert fast.column(name).to_pylist() == slow.column(name).to_pylist(), name


def test_null_and_empty_string_stay_distinct(maria: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        {"id": 1, "s": "", "b": b""},
        {"id": 2, "s": None, "b": None},
        {"id": 3, "s": '""', "b": b'""'},
        {"id": 4, "s": "x", "b": None},
        {"id": 5, "s": None, "b": b"y"},
    ]
    ddl = "CREATE TABLE ne (id INT PRIMARY KEY, s VARCHAR(10), b VARBINARY(10))"
    table, schema = create_table(maria, ddl, "ne", rows)
    for batch_rows in (1, 2, 3):
        got = _read(
            maria,
            sa.select(*table.columns),
            schema,
            reader="engine",
            packed=True,
            monkeypatch=monkeypatch,
            batch_rows=batch_rows,
        )
        assert got.column("s").to_pylist() == ["", None, '""', "x", None]
        assert got.column("b").to_pylist() == [b"", None, b'""', None, b"y"]


def test_single_nullable_column_keeps_all_null_rows(
    maria: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-column NULL row is an empty line; it must still be a row."""
    rows = [{"id": None}, {"id": 1}, {"id": None}]
    table, schema = create_table(maria, "CREATE TABLE one (id INT)", "one", rows)
    monkeypatch.setattr(snapshot, "MYSQL_READER", "engine")
    with snapshot.open_snapshot(maria, MySQLDialect(), table="t") as snap:
        got = pa.Table.from_batches(list(snap.stream(sa.select(*table.columns), schema, 2)), schema=schema)
    assert sorted(got.column("id").to_pylist(), key=lambda v: (v is not None, v)) == [None, None, 1]


def test_unpackable_column_falls_back(maria: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    ddl = "CREATE TABLE tm (id INT PRIMARY KEY, t TIME(6), y YEAR, f FLOAT, bt BIT(8))"
    rows = [{"id": 1, "t": dt.time(1, 2, 3, 4), "y": 2024, "f": 0.5, "bt": b"\x05"}]
    table, schema = create_table(maria, ddl, "tm", rows)
    assert mysql_packed.packed_select(sa.select(*table.columns), schema) is None
    assert mysql_packed.packed_select(sa.select(table.c.id), pa.schema([schema.field("id")])) is not None


def test_window_values_stay_bound_parameters() -> None:
    from sqlalchemy.dialects.mysql import pymysql

    t = sa.Table("x", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("s", sa.String(10)))
    stmt = sa.select(*t.columns).where(t.c.s > "o'brien; DROP").order_by(t.c.id)
    packed = mysql_packed.packed_select(stmt, pa.schema([("id", pa.int32()), ("s", pa.string())]))
    assert packed is not None
    compiled = packed.compile(dialect=pymysql.dialect())
    assert "brien" not in str(compiled)
    assert "o'brien; DROP" in compiled.params.values()
    assert str(compiled).rstrip().endswith("ORDER BY x.id")


@pytest.mark.parametrize("reader", READERS)
def test_session_charset_is_restored_after_a_packed_read(
    maria: sa.Engine, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The packed read sets character_set_results = binary; the snapshot's later reads must not see it."""
    table, schema = create_table(
        maria, "CREATE TABLE cs (id INT PRIMARY KEY, s TEXT)", "cs", [{"id": 1, "s": "é€"}]
    )
    monkeypatch.setattr(snapshot, "MYSQL_READER", reader)
    monkeypatch.setattr(snapshot, "MYSQL_PACKED", True)
    with snapshot.open_snapshot(maria, MySQLDialect(), table="cs") as snap:
        before = snap.scalar(sa.select(sa.literal_column("@@session.character_set_results")))
        rows = [r for b in snap.stream(sa.select(table), schema, 10) for r in b.to_pylist()]
        after = snap.scalar(sa.select(sa.literal_column("@@session.character_set_results")))
        assert not snap.session_dirty
    assert rows == [{"id": 1, "s": "é€"}]
    assert after == before and str(after).lower() != "binary"
