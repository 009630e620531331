"""Oracle without a server: the window, count and probe statements compiled by SQLAlchemy's dialect."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

from delta_platform.control_entry import ControlEntry
from delta_platform.core.operators import Operator
from delta_platform.core.watermark import Kind, Watermark
from delta_platform.core.window import Bound, Window
from delta_platform.source import Source, TableInfo
from delta_platform.source.catalog import arrow_type
from delta_platform.source.dialects import OracleDialect

URL = "oracle+oracledb://scott:tiger@127.0.0.1:1/?service_name=none"  # never connected


@pytest.fixture(name="ora")
def ora_fixture() -> tuple[Source, sa.Table]:
    source = Source(URL)
    meta = sa.MetaData()
    table = sa.Table(
        'order "lines"; --', meta,
        sa.Column("Id", oracle.NUMBER(12, 0), primary_key=True),
        sa.Column("amount", oracle.NUMBER(38, 10)),
        sa.Column("raw_number", oracle.NUMBER()),
        sa.Column("updated_at", oracle.TIMESTAMP(timezone=True)),
        sa.Column("note", oracle.VARCHAR2(200)),
        schema="app",
    )
    return source, table


def _info(source: Source, table: sa.Table, column: str, kind: Kind, **item: Any) -> TableInfo:
    entry = ControlEntry.from_item({
        "targetTableName": "ora", "activeflag": "true", "sourceSchema": "app",
        "sourceTable": table.name, "filtercolumn": column, "filteroperator": "gte",
        "startvalue": "0", "ouputs3Prefix": "/tmp/unused", **item})
    schema = pa.schema([pa.field(c.name, arrow_type(c.type, "oracle", table="ora", column=c.name))
                        for c in table.columns])
    return TableInfo(table, schema, table.c[column], kind, entry)


def _sql(source: Source, stmt: sa.Select[Any]) -> tuple[str, dict[str, Any]]:
    compiled = stmt.compile(dialect=source.engine.dialect)
    return str(compiled), compiled.params


def _binds(sql: str, *prefixes: str) -> list[str]:
    """The Oracle named bind (`:name`) that follows each regex prefix; fails if one is inlined."""
    names = []
    for prefix in prefixes:
        match = re.search(prefix + r":([A-Za-z_][A-Za-z0-9_]*)", sql)
        assert match, f"no named bind after {prefix!r} in {sql}"
        names.append(match.group(1))
    return names


def test_oracle_types_are_exact(ora: tuple[Source, sa.Table]) -> None:
    """NUMBER(p,0) -> int64, NUMBER(38,10) exact, bare NUMBER -> decimal(38,10), TSTZ -> UTC µs."""
    source, table = ora
    info = _info(source, table, "Id", Kind.INT)
    assert info.schema.field("Id").type == pa.int64()
    assert info.schema.field("amount").type == pa.decimal128(38, 10)
    assert info.schema.field("raw_number").type == pa.decimal128(38, 10)
    assert info.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert source.dialect_name == "oracle" and isinstance(source.dialect, OracleDialect)


def test_oracle_window_select_and_count(ora: tuple[Source, sa.Table]) -> None:
    """Quoted identifiers, `:param_N` binds, values never inlined, no FETCH/ROWNUM."""
    source, table = ora
    info = _info(source, table, "Id", Kind.INT)
    window = Window(Operator.GTE, Bound(Watermark(Kind.INT, 987654), False),
                    Bound(Watermark(Kind.INT, 1234567), True))
    sql, params = _sql(source, source.select_window(info, window))
    assert 'FROM app."order ""lines""; --"' in sql
    lo, hi = _binds(sql, r'app\."order ""lines""; --"\."Id" > ', r'app\."order ""lines""; --"\."Id" <= ')
    assert params == {lo: 987654, hi: 1234567}
    assert "987654" not in sql and "1234567" not in sql
    assert not re.search(r"FETCH|ROWNUM|LIMIT|OFFSET", sql, re.IGNORECASE)
    assert re.search(r'"Id", .*amount, .*raw_number, .*updated_at, .*note', sql, re.DOTALL)
    sql, params = _sql(source, source.count_window(info, window))
    assert sql.startswith("SELECT count(*) AS count_1 \nFROM app.")
    assert sorted(params.values()) == [987654, 1234567] and "987654" not in sql
    sql, params = _sql(source, source.count_nulls(info))
    assert sql.endswith('."Id" IS NULL') and params == {}


def test_oracle_timestamp_and_static_predicates(ora: tuple[Source, sa.Table]) -> None:
    """An aware bound is a bound datetime; notbetween excludes NULLs; decimals stay Decimal."""
    source, table = ora
    info = _info(source, table, "updated_at", Kind.TIMESTAMPTZ)
    hi = datetime(2024, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)
    window = Window(Operator.GTE, Bound(Watermark(Kind.TIMESTAMPTZ, datetime(2024, 1, 1, tzinfo=UTC)), True),
                    Bound(Watermark(Kind.TIMESTAMPTZ, hi), False))
    sql, params = _sql(source, source.select_window(info, window))
    lo_name, hi_name = _binds(sql, "updated_at >= ", "updated_at < ")
    assert params[hi_name] == hi and params[lo_name] == datetime(2024, 1, 1, tzinfo=UTC)
    assert "2024" not in sql
    info = _info(source, table, "amount", Kind.DECIMAL)
    lo, up = Decimal("0.0000000001"), Decimal("1234567890123456789012345678.0123456789")
    window = Window(Operator.NOTBETWEEN, Bound(Watermark(Kind.DECIMAL, lo), True),
                    Bound(Watermark(Kind.DECIMAL, up), True))
    sql, params = _sql(source, source.select_window(info, window))
    a, b = _binds(sql, "amount < ", "amount > ")
    assert f"amount < :{a} OR" in sql
    assert params == {a: lo, b: up}
    assert all(isinstance(v, Decimal) for v in params.values())


def test_oracle_probe_statement(ora: tuple[Source, sa.Table]) -> None:
    """MAX(cursor) and the UTC clock in one statement; the clock is SQL, not a bound value.

    Regression guard (found here): the clock once bound the Python object `sa.func.systimestamp`.
    """
    source, table = ora
    info = _info(source, table, "Id", Kind.INT)
    stmt = sa.select(sa.func.max(info.cursor), source.dialect.clock())
    sql, params = _sql(source, stmt)
    assert 'max(app."order ""lines""; --"."Id")' in sql
    assert params == {}, params
    assert re.search(r"sys_extract_utc\(systimestamp\)", sql, re.IGNORECASE)
    assert source.dialect.session_setup() == ["ALTER SESSION SET TIME_ZONE = 'UTC'"]
