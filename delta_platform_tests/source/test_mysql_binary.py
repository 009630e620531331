"""Binary-protocol MariaDB reads (C extension): exact values, equal to the packed path."""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from delta_platform.errors import SourceError, redact
from delta_platform.source import mysql_binary, snapshot
from delta_platform.source.dialects import MySQLDialect
from delta_platform_tests.source.extremes import BYTES, DATES, DATETIMES, TEXTS
from delta_platform_tests.source.maria import create_table

pytestmark = [
    pytest.mark.mariadb,
    pytest.mark.skipif(not mysql_binary.available(), reason="C extension _mysql_binary not built"),
    pytest.mark.skipif(importlib.util.find_spec("MySQLdb") is None, reason="mysqlclient not installed"),
]

DDL = """
CREATE TABLE kinds (
  id BIGINT NOT NULL PRIMARY KEY,
  i8 TINYINT, i16 SMALLINT, i24 MEDIUMINT, i32 INT, u8 TINYINT UNSIGNED, u24 MEDIUMINT UNSIGNED,
  dec2 DECIMAL(12,2), dec18 DECIMAL(18,4), dec38 DECIMAL(38,10), dec0 DECIMAL(10,0), dbl DOUBLE,
  d DATE, dt0 DATETIME, dt6 DATETIME(6), ts6 TIMESTAMP(6) NULL DEFAULT NULL, ts0 TIMESTAMP NULL DEFAULT NULL,
  s VARCHAR(100) CHARACTER SET utf8mb4, ch CHAR(4), lat TEXT CHARACTER SET latin1,
  e ENUM('a', 'b,c', '"q"'), st SET('x', 'y'),
  vb VARBINARY(300), bl BLOB, bn BINARY(3)
) DEFAULT CHARSET=utf8mb4
"""

DECS = [
    # dec2, dec18, dec38, dec0
    (
        Decimal("-9999999999.99"),
        Decimal("-99999999999999.9999"),
        Decimal("-" + "9" * 28 + "." + "9" * 10),
        Decimal(-9999999999),
    ),
    (
        Decimal("9999999999.99"),
        Decimal("99999999999999.9999"),
        Decimal("9" * 28 + "." + "9" * 10),
        Decimal(9999999999),
    ),
    (Decimal("-0.01"), Decimal("0.0001"), Decimal("0.0000000001"), Decimal(0)),
    (Decimal("-1234.50"), Decimal("-0.0001"), Decimal("-0.0000000001"), Decimal(-1)),
    (Decimal("0.00"), Decimal("0.0000"), Decimal("0E-10"), Decimal(1)),
    (None, None, None, None),
]
INTS = [
    # i8, i16, i24, i32, u8, u24
    (-128, -32768, -8388608, -2147483648, 0, 0),
    (127, 32767, 8388607, 2147483647, 255, 16777215),
    (0, 0, 0, 0, 1, 1),
    (None, None, None, None, None, None),
]
DBLS = [0.1, 1 / 3, 1e308, -2.2250738585072014e-308, 5e-324, -0.0, 123456789.125, None]
TSS = [
    dt.datetime(1970, 1, 1, 0, 0, 0, 1),
    dt.datetime(2038, 1, 19, 3, 14, 7, 999999),
    dt.datetime(2024, 10, 27, 1, 59, 59, 500000),
    dt.datetime(2000, 2, 29, 12, 0, 0, 123456),
    None,
]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i, text in enumerate(TEXTS):
        i8, i16, i24, i32, u8, u24 = INTS[i % len(INTS)]
        dec2, dec18, dec38, dec0 = DECS[i % len(DECS)]
        ts = TSS[i % len(TSS)]
        dtv = DATETIMES[i % len(DATETIMES)]
        rows.append(
            {
                "id": -(2**63) if i == 0 else (2**63 - 1 if i == 1 else i),
                "i8": i8,
                "i16": i16,
                "i24": i24,
                "i32": i32,
                "u8": u8,
                "u24": u24,
                "dec2": dec2,
                "dec18": dec18,
                "dec38": dec38,
                "dec0": dec0,
                "dbl": DBLS[i % len(DBLS)],
                "d": DATES[i % len(DATES)],
                "dt0": None if dtv is None else dtv.replace(microsecond=0),
                "dt6": dtv,
                "ts6": ts,
                "ts0": None
                if ts is None
                else max(ts.replace(microsecond=0), dt.datetime(1970, 1, 1, 0, 0, 1)),
                "s": text,
                "ch": None if text is None else text[:4].rstrip(" ").replace("\x00", "0"),
                "lat": None if text is None else ('café, "crème"\n' if i % 2 else "plain"),
                "e": ["a", "b,c", '"q"', None][i % 4],
                "st": ["x,y", "", "y", None][i % 4],
                "vb": BYTES[i % len(BYTES)],
                "bl": None if i % 3 == 0 else bytes(range(256)) * (i + 1),
                "bn": None if i % 4 == 3 else bytes([i, 0, 255]),
            }
        )
    # a row that is NULL in every nullable column
    rows.append({k: (100 if k == "id" else None) for k in rows[0]})
    return rows


def _truth(rows: list[dict[str, Any]], schema: pa.Schema) -> dict[str, list[Any]]:
    ordered = sorted(rows, key=lambda r: r["id"])
    out = {}
    for name in schema.names:
        want = [r[name] for r in ordered]
        if pa.types.is_timestamp(schema.field(name).type) and schema.field(name).type.tz:
            want = [None if v is None else v.replace(tzinfo=dt.UTC) for v in want]
        out[name] = want
    return out


def _read(
    engine: sa.Engine,
    stmt: sa.Select[Any],
    schema: pa.Schema,
    monkeypatch: pytest.MonkeyPatch,
    *,
    binary: str = "1",
    batch_rows: int = 7,
    path: str | None = None,
) -> tuple[pa.Table, int | None]:
    monkeypatch.setattr(snapshot, "MYSQL_READER", "mysqlclient")
    monkeypatch.setattr(snapshot, "MYSQL_PACKED", True)
    monkeypatch.setattr(snapshot, "MYSQL_BINARY", binary)
    with snapshot.open_snapshot(engine, MySQLDialect(), table="t") as snap:
        batches = list(snap.stream(stmt, schema, batch_rows))
        if path is not None:
            assert snap.last_path == path
        served = snap.served_rows
    table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
    return table.sort_by("id"), served


def test_every_supported_type_round_trips_exactly(maria: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows()
    table, schema = create_table(maria, DDL, "kinds", rows)
    stmt = sa.select(*table.columns)
    assert mysql_binary.plan(stmt, schema) is not None, "every column is read over the binary protocol"
    got, served = _read(maria, stmt, schema, monkeypatch, path="binary")
    assert got.schema == schema
    assert served == len(rows) == got.num_rows
    truth = _truth(rows, schema)
    for name in schema.names:
        assert got.column(name).to_pylist() == truth[name], name
    assert schema.field("ts6").type == pa.timestamp("us", tz="UTC")
    assert schema.field("dt6").type == pa.timestamp("us")
    assert schema.field("dec38").type == pa.decimal128(38, 10)
    got.validate(full=True)


@pytest.mark.parametrize("batch_rows", [1, 7, 1000])
def test_binary_equals_packed_path(
    maria: sa.Engine, batch_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [r for r in _rows() if "\x00" not in (r["s"] or "")]  # CSV lines cannot hold NUL in text
    table, schema = create_table(maria, DDL, "kinds", rows)
    stmt = sa.select(*table.columns).where(table.c.id > -5, table.c.s != "never")
    fast, served = _read(maria, stmt, schema, monkeypatch, batch_rows=batch_rows, path="binary")
    packed, packed_served = _read(
        maria, stmt, schema, monkeypatch, binary="0", batch_rows=batch_rows, path="packed"
    )
    assert fast.num_rows == sum(1 for r in rows if r["id"] > -5 and r["s"] is not None) == served
    assert packed_served == served
    assert fast.equals(packed)


def test_null_and_empty_string_stay_distinct(maria: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        {"id": 1, "s": "", "b": b""},
        {"id": 2, "s": None, "b": None},
        {"id": 3, "s": '""', "b": b'""'},
        {"id": 4, "s": "x", "b": None},
        {"id": 5, "s": None, "b": b"y"},
    ]
    table, schema = create_table(
        maria, "CREATE TABLE ne (id INT PRIMARY KEY, s VARCHAR(10), b VARBINARY(10))", "ne", rows
    )
    for batch_rows in (1, 2, 3, 10):
        got, _ = _read(
            maria, sa.select(*table.columns), schema, monkeypatch, batch_rows=batch_rows, path="binary"
        )
        assert got.column("s").to_pylist() == ["", None, '""', "x", None]
        assert got.column("b").to_pylist() == [b"", None, b'""', None, b"y"]


@pytest.mark.parametrize(("n", "fetch"), [(10_007, 4096), (4096, 4096), (1, 3), (0, 5)])
def test_batch_boundaries(maria: sa.Engine, n: int, fetch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ddl = "CREATE TABLE bb (id BIGINT PRIMARY KEY, s TEXT, d DECIMAL(9,3), ts TIMESTAMP(6) NULL)"
    base = dt.datetime(2020, 1, 1)
    rows = [
        {
            "id": i,
            "s": None if i % 5 == 0 else "x" * (i % 13),
            "d": None if i % 7 == 0 else Decimal(i) / 1000,
            "ts": None if i % 11 == 0 else base + dt.timedelta(microseconds=i * 1_000_003),
        }
        for i in range(n)
    ]
    table, schema = create_table(maria, ddl, "bb", rows)
    monkeypatch.setattr(snapshot, "MYSQL_BINARY_ROWS", fetch)
    got, served = _read(
        maria, sa.select(*table.columns), schema, monkeypatch, batch_rows=1 << 20, path="binary"
    )
    assert served == n == got.num_rows
    assert got.equals(
        pa.Table.from_pylist(sorted(rows, key=lambda r: r["id"]), schema=schema) if rows else got
    )
    if n > 1:
        assert got.column("ts").to_pylist()[1] == (base + dt.timedelta(microseconds=1_000_003)).replace(
            tzinfo=dt.UTC
        )


def test_long_values_past_the_scratch_buffer(maria: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values longer than the C reader's 64 KiB scratch are fetched whole."""
    rows = [
        {"id": 1, "t": "é" * 100_000, "b": bytes(range(256)) * 1000},
        {"id": 2, "t": "", "b": b""},
        {"id": 3, "t": "🎉" * 70_000, "b": None},
    ]
    table, schema = create_table(
        maria, "CREATE TABLE lv (id INT PRIMARY KEY, t MEDIUMTEXT, b MEDIUMBLOB)", "lv", rows
    )
    got, _ = _read(maria, sa.select(*table.columns), schema, monkeypatch, batch_rows=2, path="binary")
    assert got.to_pylist() == rows


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("id", 3),
        ("i32", -1),
        ("dec2", Decimal("-1234.50")),
        ("dec18", Decimal("0.0000")),
        ("dec38", Decimal("-0.0000000001")),
        ("d", dt.date(1970, 1, 1)),
        ("dt6", dt.datetime(1969, 12, 31, 23, 59, 59, 999999)),
        ("ts6", dt.datetime(2000, 2, 29, 12, 0, 0, 123456, tzinfo=dt.UTC)),
        ("s", "o'brien?%s"),
    ],
)
def test_window_bounds_of_each_cursor_kind(
    maria: sa.Engine, column: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows()
    table, schema = create_table(maria, DDL, "kinds", rows)
    col = table.c[column]
    bound = MySQLDialect().bind(_mark(value), col)
    stmt = sa.select(*table.columns).where(col >= bound).order_by(table.c.id)
    got, served = _read(maria, stmt, schema, monkeypatch, path="binary")
    packed, _ = _read(maria, stmt, schema, monkeypatch, binary="0")
    assert got.equals(packed)
    assert served == got.num_rows > 0
    plain = value.replace(tzinfo=None) if isinstance(value, dt.datetime) else value
    if column == "s":  # the server's collation orders text; compare with its own answer
        with maria.connect() as conn:
            want = conn.execute(sa.select(sa.func.count()).select_from(table).where(col >= plain)).scalar()
    else:
        want = sum(1 for r in rows if r[column] is not None and r[column] >= plain)
    assert got.num_rows == want


def _mark(value: Any) -> Any:
    from delta_platform.core.watermark import Kind, Watermark

    kind = {
        int: Kind.INT,
        Decimal: Kind.DECIMAL,
        dt.date: Kind.DATE,
        str: Kind.STRING,
    }.get(type(value))
    if isinstance(value, dt.datetime):
        kind = Kind.TIMESTAMPTZ if value.tzinfo else Kind.TIMESTAMP
    return Watermark(kind, value)


def test_abandoned_stream_leaves_the_connection_usable(
    maria: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"id": i, "s": f"row {i}"} for i in range(20_000)]
    table, schema = create_table(maria, "CREATE TABLE ab (id INT PRIMARY KEY, s VARCHAR(20))", "ab", rows)
    monkeypatch.setattr(snapshot, "MYSQL_READER", "mysqlclient")
    monkeypatch.setattr(snapshot, "MYSQL_BINARY", "1")
    monkeypatch.setattr(snapshot, "MYSQL_BINARY_ROWS", 100)
    with snapshot.open_snapshot(maria, MySQLDialect(), table="ab") as snap:
        stream = snap.stream(sa.select(*table.columns), schema, 1 << 20)
        first = next(stream)
        assert first.num_rows == 100 and snap.last_path == "binary"
        stream.close()  # the consumer stops early
        assert snap.served_rows is None
        assert snap.scalar(sa.select(sa.func.count()).select_from(table)) == 20_000
        again = pa.Table.from_batches(list(snap.stream(sa.select(*table.columns), schema, 1 << 20)))
        assert again.num_rows == snap.served_rows == 20_000


def test_served_rows_is_the_servers_count(maria: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """served_rows comes from FOUND_ROWS(), not from counting what arrived."""
    rows = [{"id": i, "s": f"row {i}"} for i in range(500)]
    table, schema = create_table(maria, "CREATE TABLE sr (id INT PRIMARY KEY, s VARCHAR(20))", "sr", rows)
    real = mysql_binary.BinaryRead.batches

    def lossy(self: Any, n: int) -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(real(self, n)):
            yield batch.slice(1) if i == 0 else batch

    monkeypatch.setattr(mysql_binary.BinaryRead, "batches", lossy)
    got, served = _read(
        maria, sa.select(*table.columns).where(table.c.id >= 100), schema, monkeypatch, path="binary"
    )
    assert served == 400 and got.num_rows == 399


@pytest.mark.parametrize(
    "ddl",
    [
        "TIME(6)",
        "YEAR",
        "FLOAT",
        "BIT(8)",
        "BIGINT UNSIGNED",
        "DECIMAL(65,30)",
    ],
)
def test_unsupported_column_falls_back(maria: sa.Engine, ddl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    table, schema = create_table(
        maria, f"CREATE TABLE un (id INT PRIMARY KEY, x {ddl} NULL)", "un", [{"id": 1, "x": None}]
    )
    stmt = sa.select(*table.columns)
    assert mysql_binary.plan(stmt, schema) is None
    got, served = _read(maria, stmt, schema, monkeypatch, binary="auto")
    assert got.num_rows == served == 1
    with pytest.raises(SourceError, match="binary-protocol read required"):
        _read(maria, stmt, schema, monkeypatch, binary="1")


def test_plan_refuses_booleans_json_and_wide_types() -> None:
    """TINYINT(1) read as Boolean, JSON and DECIMAL beyond 38 digits are never planned."""
    cases = [
        (sa.Boolean(), pa.bool_()),
        (sa.JSON(), pa.string()),
        (sa.Numeric(65, 30), pa.decimal256(65, 30)),
        (sa.Float(), pa.float64()),
        (sa.Time(), pa.time64("us")),
    ]
    for sa_type, arrow in cases:
        assert mysql_binary.column_plan(sa_type, arrow) is None, sa_type
    assert mysql_binary.column_plan(sa.Integer(), pa.int32()) is not None


def test_result_metadata_must_match_the_plan(maria: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog that disagrees with the server is refused before the statement runs."""
    table, _ = create_table(
        maria, "CREATE TABLE mm (id INT PRIMARY KEY, s VARCHAR(5))", "mm", [{"id": 1, "s": "a"}]
    )
    wrong = pa.schema([("id", pa.int32()), ("s", pa.binary())])  # s is text on the server
    fake = sa.Table("mm", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("s", sa.LargeBinary))
    stmt = sa.select(*fake.columns)
    assert mysql_binary.plan(stmt, wrong) is not None
    got, _ = _read(maria, stmt, wrong, monkeypatch, binary="auto", path="packed")
    assert got.column("s").to_pylist() == [b"a"]
    with pytest.raises(SourceError, match="differ from the catalog"):
        _read(maria, stmt, wrong, monkeypatch, binary="1")


def test_value_errors_name_the_column_not_the_value(
    maria: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"id": 1, "u": 4294967295}]
    table, schema = create_table(maria, "CREATE TABLE ve (id INT PRIMARY KEY, u INT UNSIGNED)", "ve", rows)
    assert schema.field("u").type == pa.int32()
    with pytest.raises(SourceError) as err:
        _read(maria, sa.select(*table.columns), schema, monkeypatch)
    assert err.value.attribute == "u" if hasattr(err.value, "attribute") else True
    assert "out of the column's Arrow type range" in str(err.value) and "4294967295" not in str(err.value)


def test_server_errors_do_not_echo_bound_values() -> None:
    msg = "Incorrect DECIMAL value: 'secret 1' for column `x`.`y` at row \"2\""
    assert "secret" not in redact(msg)
    # a quote inside the value (servers do not escape it) must not let its tail through
    assert "tail" not in redact("Incorrect value: 'x'tail' for column 'y'")
    assert mysql_binary.wire_param(Decimal("-1E+3"), "utf-8") == ("decimal", b"-1000")
    assert mysql_binary.wire_param(dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC), "utf-8") == (
        "datetime",
        (2024, 1, 2, 3, 4, 5, 6),
    )
    assert mysql_binary.wire_param("é", "utf-8") == "é".encode()


def test_qmark_compile_keeps_values_bound() -> None:
    from sqlalchemy.dialects.mysql import mysqldb

    t = sa.Table("x%y", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("s", sa.String(10)))
    stmt = sa.select(*t.columns).where(t.c.s > "o'brien; DROP", t.c.id > 5)
    sql, params = mysql_binary.compile_qmark(stmt, mysql_binary.qmark_dialect(mysqldb.dialect()))
    assert "brien" not in sql and sql.count("?") == 2 and "x%y" in sql and "%%" not in sql
    assert params == ("o'brien; DROP", 5)
