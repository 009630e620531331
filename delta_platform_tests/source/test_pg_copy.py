"""PostgreSQL windows read as a binary COPY decoded in C (`pg_copy`): exact, counted, in the snapshot.

Every kind the C reader decodes round-trips exactly and equals the ADBC path; a value it cannot
hold exactly fails naming the column, never the value; a type it does not decode is refused
before any row (the snapshot then reads through ADBC); the COPY's tag is the window's count; the
read sees the exporting snapshot only; an abandoned read closes its connection.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import struct
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from delta_platform.core.watermark import Kind, Watermark
from delta_platform.errors import SourceError
from delta_platform.source import pg_copy, snapshot
from delta_platform.source.dialects import PostgresDialect
from delta_platform_tests.source.extremes import BYTES, DATES, DATETIMES, TEXTS
from delta_platform_tests.source.pg import (
    copy_read,
    create_table,
    engine_for,
    exported,
    read_all,
    reader_backends,
    reader_queries,
    stream,
    wait_no_reader_backends,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not pg_copy.available(), reason="C extension _pg_copy not built"),
]

#: PostgreSQL text cannot hold NUL.
PG_TEXTS = [t for t in TEXTS if t is None or "\x00" not in t]


@pytest.fixture
def pg(pg_admin: sa.Engine) -> sa.Engine:
    engine = engine_for(pg_admin)
    yield engine
    engine.dispose()


# ---- 1. every kind, exactly -----------------------------------------------------------------

KINDS_DDL = """
  id integer PRIMARY KEY, b boolean, i2 smallint, i4 integer, i8 bigint, r real, d double precision,
  n12 numeric(12,2), n38 numeric(38,10), nu numeric, n4 numeric(10,4), n382 numeric(38,2),
  n380 numeric(38,0), n5 numeric(15,5), dt date, ts timestamp, tz timestamptz, tm time,
  t text, vc varchar(100), ch char(6), nm name, j json, jb jsonb, u uuid, by bytea
"""

NINES = Decimal("9" * 28 + "." + "9" * 10)
NUMS = [
    # n12, n38, nu, n4, n382, n380, n5
    (
        Decimal("-9999999999.99"),
        Decimal("-" + str(NINES)),
        Decimal("123.456"),
        Decimal("0.0001"),
        Decimal(10) ** 20,
        Decimal("9" * 38),
        Decimal("12345.67891"),
    ),
    (
        Decimal("9999999999.99"),
        NINES,
        Decimal("-0.01"),
        Decimal("-0.0001"),
        Decimal("-1" + "0" * 20),
        Decimal("-" + "9" * 38),
        Decimal("-0.00001"),
    ),
    (
        Decimal("-0.01"),
        Decimal("0.0000000001"),
        Decimal(0),
        Decimal("123456.7891"),
        Decimal(10) ** 35,
        Decimal(10) ** 37,
        Decimal("1.1"),
    ),
    (
        Decimal("0.00"),
        Decimal("-0.0000000001"),
        NINES,
        Decimal("999999.9999"),
        Decimal("9" * 36 + ".99"),
        Decimal(10000),
        Decimal("9999999999.99999"),
    ),
    (
        Decimal("1234.50"),
        Decimal(0),
        Decimal("1E-10"),
        Decimal(0),
        Decimal("0.01"),
        Decimal(0),
        Decimal("100000"),
    ),
    (
        Decimal("0.10"),
        Decimal("1E+27"),
        Decimal(10) ** 20,
        Decimal("0.5000"),
        Decimal("-1.5"),
        Decimal(-1),
        Decimal("0.00100"),
    ),
    (None,) * 7,
]
INTS = [
    (-(2**15), -(2**31), -(2**63)),
    (2**15 - 1, 2**31 - 1, 2**63 - 1),
    (0, 0, 0),
    (-1, 1, 9_007_199_254_740_993),
    (None, None, None),
]
REALS = [1.5, -0.0, 3.4028234663852886e38, 1e-45, float("inf"), float("-inf"), 0.1, None]
DOUBLES = [0.1, 1 / 3, 1e308, 5e-324, -2.2250738585072014e-308, float("-inf"), -0.0, None]
GOLDEN = 0x9E3779B97F4A7C15_F39CC0605CEDC834
TIMES = [dt.time(0), dt.time(23, 59, 59, 999999), dt.time(12, 34, 56, 789), None]


def _f32(x: float | None) -> float | None:
    return None if x is None else struct.unpack("f", struct.pack("f", x))[0]


def _kinds_rows() -> list[dict[str, Any]]:
    rows = []
    for i, text in enumerate(PG_TEXTS):
        n12, n38, nu, n4, n382, n380, n5 = NUMS[i % len(NUMS)]
        i2, i4, i8 = INTS[i % len(INTS)]
        ts = DATETIMES[i % len(DATETIMES)]
        rows.append(
            {
                "id": i,
                "b": [True, False, None][i % 3],
                "i2": i2,
                "i4": i4,
                "i8": i8,
                "r": REALS[i % len(REALS)],
                "d": DOUBLES[i % len(DOUBLES)],
                "n12": n12,
                "n38": n38,
                "nu": nu,
                "n4": n4,
                "n382": n382,
                "n380": n380,
                "n5": n5,
                "dt": DATES[i % len(DATES)],
                "ts": ts,
                "tz": None if ts is None else ts.replace(tzinfo=dt.UTC),
                "tm": TIMES[i % len(TIMES)],
                "t": text,
                "vc": None if text is None else text[::-1],
                "ch": None if text is None else text[:6],
                "nm": text,
                "j": None if text is None else {"t": text, "i": i},  # json keeps its text as sent
                "jb": None if text is None else {"t": text},
                "u": None if i % 5 == 4 else uuid.UUID(int=(i * GOLDEN) % 2**128),
                "by": BYTES[i % len(BYTES)],
            }
        )
    rows.append({k: (1000 if k == "id" else None) for k in rows[0]})  # NULL in every column
    return rows


def _expected(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """The rows as the catalog types them: what the lake must hold."""
    out = []
    for r in sorted(rows, key=lambda r: r["id"]):
        e = dict(r)
        e["r"] = _f32(r["r"])
        e["ch"] = None if r["ch"] is None else r["ch"].ljust(6)  # char(n) is blank-padded
        # jsonb is stored parsed: its text is PostgreSQL's own rendering (keys ordered, ", " / ": ")
        e["jb"] = None if r["jb"] is None else json.dumps(r["jb"], ensure_ascii=False)
        e["j"] = None if r["j"] is None else json.dumps(r["j"])  # as SQLAlchemy sent it
        e["u"] = None if r["u"] is None else str(r["u"])
        out.append(e)
    return pa.Table.from_pylist(out, schema=schema)


def test_every_kind_round_trips_exactly_and_equals_adbc(
    pg: sa.Engine, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _kinds_rows()
    table, schema = create_table(pg, pg_schema, "kinds", KINDS_DDL, rows)
    assert schema.field("nu").type == pa.decimal128(38, 10)
    assert schema.field("n380").type == pa.decimal128(38, 0)
    assert schema.field("tz").type == pa.timestamp("us", tz="UTC")
    assert schema.field("r").type == pa.float64()  # real widened exactly
    want = _expected(rows, schema)

    # the C reader on its own (a CopyRead over the exported snapshot) ...
    cols = ", ".join(f'"{c}"' for c in schema.names)
    with exported(pg) as (_, snapshot_id):
        read = copy_read(pg, snapshot_id, f'SELECT {cols} FROM "{pg_schema}".kinds ORDER BY id', schema)
        got, sizes = read_all(read, rows=4)  # several batches
        assert read.served == len(rows) == got.num_rows
    assert len(sizes) > 1
    got.validate(full=True)
    assert got.schema == schema
    for name in schema.names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    assert got.equals(want)

    # ... and through the snapshot's stream, equal to what ADBC produces for the same SELECT
    stmt = sa.select(*table.columns).order_by(table.c.id)
    fast, reader, copied = stream(pg, stmt, schema, monkeypatch, mode="1", batch_rows=5)
    assert reader == "pg-copy-binary" and copied == len(rows)
    assert fast.equals(want)
    # ADBC cannot convert uuid (fixed_size_binary) to the catalog's string: compare without it
    no_uuid = sa.select(*[c for c in table.columns if c.name != "u"]).order_by(table.c.id)
    adbc_schema = pa.schema([f for f in schema if f.name != "u"])
    slow, reader, copied = stream(pg, no_uuid, adbc_schema, monkeypatch, mode="0", batch_rows=5)
    assert reader == "adbc-postgresql-copy" and copied is None
    assert slow.equals(want.drop_columns(["u"]))


def test_widths_asked_for_by_hand(pg: sa.Engine, pg_schema: str) -> None:
    """real as float32 (NaN too), int2/int4 widened to int64, int2 into int32, a NaN double."""
    create_table(pg, pg_schema, "w", "id int PRIMARY KEY, r real, i2 smallint, i4 int, d float8", [])
    with pg.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO \"{pg_schema}\".w VALUES (1, 'NaN', -32768, -2147483648, 'NaN'), "
            f"(2, 1.1, 32767, 2147483647, 2.5), (3, NULL, NULL, NULL, NULL)"
        )
    schema = pa.schema(
        [("id", pa.int64()), ("r", pa.float32()), ("i2", pa.int32()), ("i4", pa.int64()), ("d", pa.float64())]
    )
    with exported(pg) as (_, snapshot_id):
        got, _ = read_all(copy_read(pg, snapshot_id, f'SELECT * FROM "{pg_schema}".w ORDER BY id', schema))
    rows = got.to_pylist()
    assert math.isnan(rows[0]["r"]) and math.isnan(rows[0]["d"])
    assert rows[1]["r"] == _f32(1.1) and rows[1]["d"] == 2.5
    assert [r["i2"] for r in rows] == [-32768, 32767, None]
    assert [r["i4"] for r in rows] == [-(2**31), 2**31 - 1, None]
    assert rows[2] == {"id": 3, "r": None, "i2": None, "i4": None, "d": None}


def test_null_and_empty_stay_distinct(pg: sa.Engine, pg_schema: str) -> None:
    rows = [
        {"id": 1, "s": "", "b": b"", "j": ""},
        {"id": 2, "s": None, "b": None, "j": None},
        {"id": 3, "s": "x", "b": None, "j": sa.JSON.NULL},
        {"id": 4, "s": None, "b": b"y", "j": None},
    ]
    _, schema = create_table(pg, pg_schema, "ne", "id int PRIMARY KEY, s text, b bytea, j jsonb", rows)
    for fetch in (1, 2, 3, 10):
        with exported(pg) as (_, snapshot_id):
            read = copy_read(pg, snapshot_id, f'SELECT * FROM "{pg_schema}".ne ORDER BY id', schema)
            got, _ = read_all(read, rows=fetch)
        assert got.column("s").to_pylist() == ["", None, "x", None]
        assert got.column("b").to_pylist() == [b"", None, None, b"y"]
        assert got.column("j").to_pylist() == ['""', None, "null", None]  # JSON null is not SQL NULL


# ---- 2. errors name the column, never the value ---------------------------------------------


@pytest.mark.parametrize(
    ("ddl", "value", "target", "secret"),
    [
        ("numeric", "1.12345678901", pa.decimal128(38, 10), "12345678901"),  # 11 decimals
        ("numeric", "123456789012345678901234567890", pa.decimal128(38, 10), "1234567890123"),
        ("numeric(12,2)", "8765432109.87", pa.decimal128(11, 2), "8765432109"),  # above precision
        ("numeric(12,2)", "0.05", pa.decimal128(12, 1), "0.05"),  # more places than the scale
        ("numeric", "NaN", pa.decimal128(38, 10), None),
        ("numeric", "-Infinity", pa.decimal128(38, 10), None),
        ("timestamptz", "infinity", pa.timestamp("us", tz="UTC"), "infinity"),
        ("timestamp", "-infinity", pa.timestamp("us"), "infinity"),
        ("date", "infinity", pa.date32(), "infinity"),
        ("date", "-infinity", pa.date32(), "infinity"),
        ("bigint", "2147483648", pa.int32(), "2147483648"),
        ("bigint", "-9223372036854775808", pa.int32(), "922337203685"),
        ("integer", "40000", pa.int16(), "40000"),
    ],
)
def test_value_errors_name_the_column_not_the_value(
    pg: sa.Engine,
    pg_schema: str,
    ddl: str,
    value: str,
    target: pa.DataType,
    secret: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _ = create_table(pg, pg_schema, "ve", f"id int PRIMARY KEY, x {ddl}", [])
    with pg.begin() as conn:
        conn.execute(
            sa.text(f'INSERT INTO "{pg_schema}".ve VALUES (1, NULL), (2, CAST(:v AS {ddl}))'), {"v": value}
        )
    schema = pa.schema([("id", pa.int32()), ("x", target)])
    with exported(pg) as (_, snapshot_id):
        read = copy_read(
            pg, snapshot_id, f'SELECT id, x FROM "{pg_schema}".ve ORDER BY id', schema, table="ve"
        )
        with pytest.raises(SourceError) as caught:
            read_all(read)
        assert read.served is None  # the read never reached its end
    err = caught.value
    assert err.attribute == "x" and err.table == "ve"
    if secret is not None:
        assert secret not in str(err)
    # the snapshot's stream says the same (and never falls back on a value error)
    table = sa.Table("ve", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("x"), schema=pg_schema)
    with pytest.raises(SourceError) as caught:
        stream(pg, sa.select(table.c.id, table.c.x), schema, monkeypatch, mode="auto", table="ve")
    assert caught.value.attribute == "x"
    if secret is not None:
        assert secret not in str(caught.value)


def test_server_errors_leave_out_bound_values(pg: sa.Engine) -> None:
    schema = pa.schema([("x", pa.int32())])
    sql = "SELECT current_setting('delta_platform.p1')::int AS x"
    with exported(pg) as (_, snapshot_id), pytest.raises(SourceError, match="SQLSTATE 22P02") as caught:
        read_all(copy_read(pg, snapshot_id, sql, schema, [("delta_platform.p1", "s3cr3t value")]))
    assert "s3cr3t" not in str(caught.value)


def test_server_errors_leave_out_bound_values_with_quotes(pg: sa.Engine) -> None:
    schema = pa.schema([("x", pa.int32())])
    sql = "SELECT current_setting('delta_platform.p1')::int AS x"
    with exported(pg) as (_, snapshot_id), pytest.raises(SourceError) as caught:
        read_all(copy_read(pg, snapshot_id, sql, schema, [("delta_platform.p1", 'x"s3cr3t')]))
    assert "s3cr3t" not in str(caught.value)


# ---- 3. types it does not decode ------------------------------------------------------------


@pytest.mark.parametrize(
    ("ddl", "literal", "want"),
    [
        ("mood", "'sad'", "sad"),  # an enum type of this schema
        ("int4range", "'[1,5)'", "[1,5)"),
        ("interval", "'1 day 02:00:00'", "1 day 02:00:00"),
        ("timetz", "'12:00:00+02'", "12:00:00+02"),
    ],
)
def test_undecoded_types_are_refused_before_any_row(
    pg: sa.Engine, pg_schema: str, ddl: str, literal: str, want: str
) -> None:
    with pg.begin() as conn:
        conn.exec_driver_sql(f"CREATE TYPE \"{pg_schema}\".mood AS ENUM ('ok', 'sad')")
        conn.exec_driver_sql(f'SET search_path TO "{pg_schema}"')
        conn.exec_driver_sql(f"CREATE TABLE un (id int PRIMARY KEY, x {ddl})")
        conn.exec_driver_sql(f"INSERT INTO un VALUES (1, {literal}), (2, NULL)")
    schema = pa.schema([("id", pa.int32()), ("x", pa.string())])  # what the catalog gives an enum
    sql = f'SELECT id, x FROM "{pg_schema}".un ORDER BY id'
    with exported(pg) as (_, snapshot_id):
        with pytest.raises(pg_copy.Unsupported):
            copy_read(pg, snapshot_id, sql, schema)
        assert wait_no_reader_backends(pg, pg_schema) == 0  # its connection is closed
        # the text rendering reads fine in the same snapshot
        text = f'SELECT id, x::text AS x FROM "{pg_schema}".un ORDER BY id'
        got, _ = read_all(copy_read(pg, snapshot_id, text, schema))
    assert got.column("x").to_pylist() == [want, None]


@pytest.mark.parametrize(
    ("ddl", "literal", "want", "reader"),
    [
        # an enum's OID is the database's own: ADBC reads it
        ("mood", "'sad'", "sad", "adbc-postgresql-copy"),
        # a range lands as text: the window's SELECT reads it as x::text (`Source.read_columns`),
        # which the binary COPY decodes (ADBC would hand over its binary form as bytes)
        ("int4range", "'[1,5)'", "[1,5)", "pg-copy-binary"),
    ],
)
def test_a_full_load_of_an_undecoded_type_is_exact(
    pg_admin: sa.Engine,
    ddl: str,
    literal: str,
    want: str,
    reader: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from delta_platform_tests.scenarios.harness import Rig, make_db

    db = make_db("postgresql", request, tmp_path)
    db.execute(f"CREATE TYPE {db.qualified('mood')} AS ENUM ('ok', 'sad')")
    db.execute(
        f"CREATE TABLE {db.qualified('fb')} "
        f"(id bigint PRIMARY KEY, x {ddl.replace('mood', db.qualified('mood'))})"
    )
    db.execute(f"INSERT INTO {db.qualified('fb')} VALUES (1, {literal}), (2, NULL)")
    monkeypatch.setattr(snapshot, "PG_COPY", "auto")
    rig = Rig(db, tmp_path)
    try:
        rig.entry("fb", "fb", "id", "0")
        result = rig.run("fb", "p1")
        assert result.engine_details["reader"] == reader
        assert result.rows == result.source_count == 2
        assert sorted((r["id"], r["x"]) for r in rig.partition("fb", "p1")) == [(1, want), (2, None)]

        # forced, the binary read is an error naming why, not a silent fallback
        monkeypatch.setattr(snapshot, "PG_COPY", "1")
        table = sa.Table("fb", sa.MetaData(), schema=db.schema, autoload_with=db.engine)
        schema = pa.schema([("id", pa.int64()), ("x", pa.string())])
        with pytest.raises(SourceError, match="binary COPY read required but not possible"):
            stream(db.engine, sa.select(*table.columns), schema, monkeypatch, mode="1", table="fb")
    finally:
        rig.close()


def test_a_full_load_reads_the_binary_copy(
    pg_admin: sa.Engine, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from delta_platform_tests.scenarios.harness import Rig, make_db

    db = make_db("postgresql", request, tmp_path)
    db.execute(f"CREATE TABLE {db.qualified('ok')} (id bigint PRIMARY KEY, n numeric(12,2), s text)")
    db.execute(
        f"INSERT INTO {db.qualified('ok')} SELECT i, i / 100.0, 'r' || i FROM generate_series(1, 500) i"
    )
    monkeypatch.setattr(snapshot, "PG_COPY", "auto")
    rig = Rig(db, tmp_path)
    try:
        rig.entry("ok", "ok", "id", "100")
        result = rig.run("ok", "p1")
        assert result.engine_details["reader"] == "pg-copy-binary"
        assert result.rows == result.source_count == 401
        got = sorted((r["id"], r["n"], r["s"]) for r in rig.partition("ok", "p1"))
        assert got == [(i, Decimal(i) / 100, f"r{i}") for i in range(100, 501)]
    finally:
        rig.close()


@pytest.mark.parametrize("mode", ["0", "auto"])
def test_types_that_land_as_text_are_read_as_text_by_both_readers(
    pg_admin: sa.Engine,
    mode: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uuid, ranges and network types land as their text, through ADBC as through the COPY
    (ADBC alone hands a range over as its binary form, a uuid as 16 bytes)."""
    from delta_platform_tests.scenarios.harness import Rig, make_db

    db = make_db("postgresql", request, tmp_path)
    db.execute(
        f"CREATE TABLE {db.qualified('tx')} (id bigint PRIMARY KEY, u uuid, r int4range, a inet, b macaddr)"
    )
    db.execute(
        f"INSERT INTO {db.qualified('tx')} VALUES "
        "(1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '[1,5)', '10.0.0.1/8', '08:00:2b:01:02:03'), "
        "(2, NULL, NULL, NULL, NULL)"
    )
    monkeypatch.setattr(snapshot, "PG_COPY", mode)
    rig = Rig(db, tmp_path)
    try:
        rig.entry("tx", "tx", "id", "0")
        result = rig.run("tx", "p1")
        want = "adbc-postgresql-copy" if mode == "0" else "pg-copy-binary"
        assert result.engine_details["reader"] == want
        got = sorted(rig.partition("tx", "p1"), key=lambda r: r["id"])
        assert got == [
            {"id": 1, "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "r": "[1,5)", "a": "10.0.0.1/8",
             "b": "08:00:2b:01:02:03"},
            {"id": 2, "u": None, "r": None, "a": None, "b": None},
        ]
    finally:
        rig.close()


def test_a_forced_read_of_an_unproducible_arrow_type_is_an_error(
    pg: sa.Engine, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table, schema = create_table(
        pg, pg_schema, "iv", "id int PRIMARY KEY, x interval", [{"id": 1, "x": None}]
    )
    assert schema.field("x").type == pa.duration("us") and not pg_copy.may_read(schema)
    with pytest.raises(SourceError, match="binary COPY read required"):
        stream(pg, sa.select(*table.columns), schema, monkeypatch, mode="1")


def test_a_catalog_that_disagrees_with_the_result_is_refused(pg: sa.Engine, pg_schema: str) -> None:
    """int8 read as float64, text as binary, timestamptz as naive, a missing column: Unsupported."""
    create_table(pg, pg_schema, "mm", "id bigint PRIMARY KEY, s text, tz timestamptz", [{"id": 1, "s": "a"}])
    sql = f'SELECT id, s, tz FROM "{pg_schema}".mm'
    wrong = [
        pa.schema([("id", pa.float64()), ("s", pa.string()), ("tz", pa.timestamp("us", tz="UTC"))]),
        pa.schema([("id", pa.int64()), ("s", pa.binary()), ("tz", pa.timestamp("us", tz="UTC"))]),
        pa.schema([("id", pa.int64()), ("s", pa.string()), ("tz", pa.timestamp("us"))]),
        pa.schema([("id", pa.int64()), ("s", pa.string())]),
    ]
    with exported(pg) as (_, snapshot_id):
        for schema in wrong:
            with pytest.raises(pg_copy.Unsupported):
                copy_read(pg, snapshot_id, sql, schema)
    assert wait_no_reader_backends(pg, pg_schema) == 0


# ---- 4. the count, empty windows, bound values ----------------------------------------------


def test_served_is_the_copy_tag_once_read_to_the_end(pg: sa.Engine, pg_schema: str) -> None:
    rows = [{"id": i, "s": f"row {i}"} for i in range(20)]
    _, schema = create_table(pg, pg_schema, "sv", "id int PRIMARY KEY, s text", rows)
    with exported(pg) as (_, snapshot_id):
        read = copy_read(pg, snapshot_id, f'SELECT id, s FROM "{pg_schema}".sv WHERE id >= 3', schema)
        try:
            assert read.served is None
            batches = read.batches(7)
            assert next(batches).num_rows == 7
            assert read.served is None  # not before the end
            rest = list(batches)
            assert [b.num_rows for b in rest] == [7, 3]
            assert read.served == 17
        finally:
            read.close()
        read.close()  # idempotent
        assert read.served == 17

        empty = copy_read(pg, snapshot_id, f'SELECT id, s FROM "{pg_schema}".sv WHERE id < 0', schema)
        got, sizes = read_all(empty)
        assert sizes == [] and got.num_rows == 0 and empty.served == 0


def test_copied_rows_is_the_servers_count_not_what_arrived(
    pg: sa.Engine, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"id": i, "s": f"row {i}"} for i in range(500)]
    table, schema = create_table(pg, pg_schema, "sr", "id int PRIMARY KEY, s text", rows)
    real = pg_copy.CopyRead.batches

    def lossy(self: Any, n: int) -> Any:
        for i, batch in enumerate(real(self, n)):
            yield batch.slice(1) if i == 0 else batch

    monkeypatch.setattr(pg_copy.CopyRead, "batches", lossy)
    got, reader, copied = stream(
        pg, sa.select(*table.columns).where(table.c.id >= 100), schema, monkeypatch, mode="1"
    )
    assert reader == "pg-copy-binary" and copied == 400 and got.num_rows == 399


def test_an_empty_window_through_the_snapshot(
    pg: sa.Engine, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table, schema = create_table(
        pg, pg_schema, "em", "id int PRIMARY KEY, n numeric(10,2)", [{"id": 1, "n": 1}]
    )
    got, reader, copied = stream(
        pg, sa.select(*table.columns).where(table.c.id > 5), schema, monkeypatch, mode="1"
    )
    assert reader == "pg-copy-binary" and copied == 0 and got.num_rows == 0


def test_hostile_text_bounds_are_bound_not_inlined(
    pg: sa.Engine, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [t for t in PG_TEXTS if t is not None]
    rows = [{"id": i, "k": t} for i, t in enumerate(texts)]
    table, schema = create_table(pg, pg_schema, "hb", 'id int PRIMARY KEY, k text COLLATE "C"', rows)
    for i, text in enumerate(texts):
        bound = PostgresDialect().bind(Watermark(Kind.STRING, text), table.c.k)
        got, reader, copied = stream(
            pg, sa.select(*table.columns).where(table.c.k == bound), schema, monkeypatch, mode="1"
        )
        assert reader == "pg-copy-binary"
        assert got.to_pylist() == [{"id": i, "k": text}], repr(text)
        assert copied == 1
        got, _, copied = stream(
            pg, sa.select(*table.columns).where(table.c.k >= bound), schema, monkeypatch, mode="1"
        )
        want = sorted(r["id"] for r in rows if r["k"].encode() >= text.encode())  # COLLATE "C": bytes
        assert sorted(got.column("id").to_pylist()) == want and copied == len(want), repr(text)
    # the window's value never enters the SQL text the COPY's session runs
    marker = "'); SELECT 1; -- 🎉 \\"
    bound = PostgresDialect().bind(Watermark(Kind.STRING, marker), table.c.k)
    monkeypatch.setattr(snapshot, "PG_COPY", "1")
    with snapshot.open_snapshot(pg, PostgresDialect(), table="hb") as snap:
        batches = snap.stream(sa.select(*table.columns).where(table.c.k != bound), schema, 1000)
        assert next(batches).num_rows == len(texts)
        queries = reader_queries(pg, pg_schema)
        batches.close()
    assert len(queries) == 1 and queries[0].startswith("COPY (SELECT")
    assert "current_setting('delta_platform.p1')" in queries[0]
    assert "🎉" not in queries[0] and "SELECT 1" not in queries[0]


# ---- 5. the exporting snapshot ---------------------------------------------------------------


def test_the_read_sees_the_exporting_snapshot_only(
    pg: sa.Engine, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"id": i, "s": f"row {i}"} for i in range(100)]
    table, schema = create_table(pg, pg_schema, "iso", "id int PRIMARY KEY, s text", rows)
    later = [{"id": 1000 + i, "s": "late"} for i in range(25)]
    # a CopyRead importing a snapshot exported before another connection's commit
    with exported(pg) as (_, snapshot_id):
        with pg.begin() as conn:
            conn.execute(table.insert(), later)
            conn.execute(table.delete().where(table.c.id < 10))
            conn.execute(table.update().where(table.c.id == 50).values(s="changed"))
        read = copy_read(pg, snapshot_id, f'SELECT id, s FROM "{pg_schema}".iso ORDER BY id', schema)
        got, _ = read_all(read)
        assert read.served == 100
    assert got.to_pylist() == rows
    # the snapshot's stream: exported at its start, the other commit after
    monkeypatch.setattr(snapshot, "PG_COPY", "1")
    with snapshot.open_snapshot(pg, PostgresDialect(), table="iso") as snap:
        before = snap.snapshot_id()  # type: ignore[attr-defined]
        with pg.begin() as conn:
            conn.execute(table.insert(), [{"id": 5000 + i, "s": "later"} for i in range(7)])
        batches = list(snap.stream(sa.select(*table.columns), schema, 1000))
        assert snap.snapshot_id() == before  # type: ignore[attr-defined]
        assert snap.copied_rows == 100 + 25 - 10 == sum(b.num_rows for b in batches)  # type: ignore[attr-defined]
    ids = {r["id"] for b in batches for r in b.to_pylist()}
    assert not any(i >= 5000 for i in ids) and len(ids) == 115


def test_a_bad_snapshot_id_is_refused(pg: sa.Engine) -> None:
    schema = pa.schema([("x", pa.int32())])
    with pytest.raises(ValueError, match="not an exported snapshot id"):
        copy_read(pg, "1'; DROP TABLE x; --", "SELECT 1 AS x", schema)
    with pytest.raises(SourceError, match="SQLSTATE"):  # well-formed but not exported: the server says
        copy_read(pg, "00000003-0000001B-1", "SELECT 1 AS x", schema)


# ---- 6. an abandoned read ---------------------------------------------------------------------


def test_an_abandoned_stream_closes_the_reader_connection(
    pg: sa.Engine, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = snapshot.PG_COPY_ROWS + 20_000
    table, schema = create_table(pg, pg_schema, "ab", "id int PRIMARY KEY, s text", [])
    with pg.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO \"{pg_schema}\".ab SELECT i, repeat('x', 100) || i FROM generate_series(1, {n}) i"
        )
    monkeypatch.setattr(snapshot, "PG_COPY", "1")
    with snapshot.open_snapshot(pg, PostgresDialect(), table="ab") as snap:
        batches = snap.stream(sa.select(*table.columns), schema, 1 << 20)
        first = next(batches)
        assert first.num_rows == snapshot.PG_COPY_ROWS and snap.reader == "pg-copy-binary"
        assert reader_backends(pg, pg_schema, copying=True) == 1  # the COPY's own session
        batches.close()  # the consumer stops early
        assert snap.copied_rows is None  # type: ignore[attr-defined]
        assert wait_no_reader_backends(pg, pg_schema, copying=True) == 0
        # the exporting snapshot's connection still works, and so does another read
        assert snap.scalar(sa.select(sa.func.count()).select_from(table)) == n
        again = list(snap.stream(sa.select(*table.columns), schema, 1 << 20))
        assert sum(b.num_rows for b in again) == snap.copied_rows == n  # type: ignore[attr-defined]
    assert wait_no_reader_backends(pg, pg_schema, copying=True) == 0


def test_a_dropped_read_closes_its_connection(pg: sa.Engine, pg_schema: str) -> None:
    """A CopyRead lost without close (garbage) still ends its session."""
    _, schema = create_table(pg, pg_schema, "gc", "id int PRIMARY KEY", [{"id": 1}, {"id": 2}])
    with exported(pg) as (_, snapshot_id):
        read = copy_read(pg, snapshot_id, f'SELECT id FROM "{pg_schema}".gc', schema)
        assert reader_backends(pg, pg_schema, copying=True) == 1
        del read
        assert wait_no_reader_backends(pg, pg_schema, copying=True) == 0


def test_close_from_another_thread_during_a_fetch_is_safe(pg: sa.Engine, pg_schema: str) -> None:
    """close() while a fetch decodes without the GIL waits for it: no crash, no row invented,
    no count claimed, and the session ends."""
    import threading

    n = 400_000
    _, schema = create_table(pg, pg_schema, "cl", "id int PRIMARY KEY, s text", [])
    with pg.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO \"{pg_schema}\".cl SELECT i, repeat('y', 50) || i FROM generate_series(1, {n}) i"
        )
    with exported(pg) as (_, snapshot_id):
        read = copy_read(pg, snapshot_id, f'SELECT id, s FROM "{pg_schema}".cl', schema)
        got: list[int] = []
        errors: list[BaseException] = []
        started = threading.Event()

        def consume() -> None:
            try:
                started.set()
                for batch in read.batches(n):  # one long fetch
                    got.append(batch.num_rows)
            except BaseException as exc:  # noqa: BLE001 - looked at below
                errors.append(exc)

        worker = threading.Thread(target=consume)
        worker.start()
        started.wait()
        read.close()  # from this thread, while the worker's fetch may be running
        read.close()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert sum(got) in (0, n)  # the whole batch before the close, or nothing
        assert read.served is None or (read.served == n and sum(got) == n)
        assert all(isinstance(e, (SourceError, RuntimeError)) for e in errors)
        assert wait_no_reader_backends(pg, pg_schema, copying=True) == 0


# ---- 7. large values --------------------------------------------------------------------------


def test_a_batch_ends_early_on_bytes_and_still_round_trips(pg: sa.Engine, pg_schema: str) -> None:
    rows, repeat = 40, 65536  # 40 values of 2 MiB: 80 MiB in one column
    _, schema = create_table(pg, pg_schema, "big", "id int PRIMARY KEY, s text, b bytea", [])
    with pg.begin() as conn:
        conn.exec_driver_sql(
            f'INSERT INTO "{pg_schema}".big SELECT i, repeat(md5(i::text), {repeat}), '
            f"decode(md5(i::text), 'hex') FROM generate_series(1, {rows}) i"
        )
    with exported(pg) as (_, snapshot_id):
        read = copy_read(pg, snapshot_id, f'SELECT id, s, b FROM "{pg_schema}".big ORDER BY id', schema)
        got, sizes = read_all(read)
        assert read.served == rows
    assert len(sizes) > 1 and sizes[0] < rows and sum(sizes) == rows
    assert sizes[0] * 32 * repeat > 64 * 1024 * 1024 >= (sizes[0] - 1) * 32 * repeat
    got.validate(full=True)
    for i, (s, b) in enumerate(zip(got.column("s").to_pylist(), got.column("b").to_pylist(), strict=True)):
        digest = hashlib.md5(str(i + 1).encode()).hexdigest()
        assert s == digest * repeat and b == bytes.fromhex(digest), i


# ---- PostgreSQL 15's numeric scales outside 0..precision ------------------------------------


@pytest.mark.parametrize(
    ("ddl", "literal", "want"),
    [("numeric(5,-2)", "12300", Decimal("1.23E+4")), ("numeric(3,5)", "0.00123", Decimal("0.00123"))],
)
def test_numeric_scales_outside_the_precision_read_exactly_or_fall_back(
    pg: sa.Engine, pg_schema: str, ddl: str, literal: str, want: Decimal, monkeypatch: pytest.MonkeyPatch
) -> None:
    table, schema = create_table(pg, pg_schema, "ns", f"id int PRIMARY KEY, x {ddl}", [])
    with pg.begin() as conn:
        conn.exec_driver_sql(f'INSERT INTO "{pg_schema}".ns VALUES (1, {literal}), (2, NULL)')
    stmt = sa.select(*table.columns).order_by(table.c.id)
    adbc, _, _ = stream(pg, stmt, schema, monkeypatch, mode="0")
    assert adbc.column("x").to_pylist() == [want, None]
    got, _, _ = stream(pg, stmt, schema, monkeypatch, mode="auto")
    assert got.equals(adbc)
