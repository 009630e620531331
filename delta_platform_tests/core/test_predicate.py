"""Each operator means the same in SQL and in the DMS source filter built from it."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from delta_platform.core.operators import Operator
from delta_platform.core.predicate import dms_filters, dms_table_mapping, sql_predicate
from delta_platform.core.watermark import Kind, Watermark
from delta_platform.core.window import Bound, Window

VALUES: list[int | None] = [None, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, None]


def w(v: int) -> Watermark:
    return Watermark(Kind.INT, v)


def dms_matches(filters: list[dict[str, Any]], value: int | None) -> bool:
    """A model of DMS: conditions in one filter are ORed, filters are ANDed, NULL fails comparisons."""

    def cond(c: dict[str, Any]) -> bool:
        op = c["filter-operator"]
        if op == "null":
            return value is None
        if op == "notnull":
            return value is not None
        if value is None:
            return False
        if op in ("between", "notbetween"):
            lo, hi = int(c["start-value"]), int(c["end-value"])
            inside = lo <= value <= hi
            return inside if op == "between" else not inside
        x = int(c["value"])
        return {"ste": value <= x, "gte": value >= x, "eq": value == x, "noteq": value != x}[op]

    return all(any(cond(c) for c in f["filter-conditions"]) for f in filters)


WINDOWS = [
    Window(Operator.GTE, Bound(w(3), True), Bound(w(7), True)),
    Window(Operator.GTE, Bound(w(3), False), Bound(w(7), True)),
    Window(Operator.GTE, Bound(w(5), False), Bound(w(7), False)),
    Window(Operator.GTE, Bound(w(5), True), Bound(w(5), True)),
    Window(Operator.LTE, None, Bound(w(5), True)),
    Window(Operator.STE, None, Bound(w(5), True)),
    Window(Operator.EQ, Bound(w(5), True), Bound(w(5), True)),
    Window(Operator.NOTEQ, Bound(w(5), True), Bound(w(5), True)),
    Window(Operator.NULL),
    Window(Operator.NOTNULL),
    Window(Operator.BETWEEN, Bound(w(2), True), Bound(w(8), True)),
    Window(Operator.NOTBETWEEN, Bound(w(2), True), Bound(w(8), True)),
]


@pytest.fixture(scope="module")
def table() -> tuple[sa.Engine, sa.Table]:
    engine = sa.create_engine("sqlite://")
    meta = sa.MetaData()
    t = sa.Table("t", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.Integer))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i, "v": v} for i, v in enumerate(VALUES)])
    return engine, t


@pytest.mark.parametrize("window", WINDOWS, ids=lambda win: win.describe())
def test_sql_and_dms_select_the_same_rows(table: tuple[sa.Engine, sa.Table], window: Window) -> None:
    engine, t = table
    with engine.connect() as conn:
        sql_ids = set(conn.execute(sa.select(t.c.id).where(sql_predicate(t.c.v, window))).scalars())
    filters = dms_filters("v", window)
    dms_ids = {i for i, v in enumerate(VALUES) if dms_matches(filters, v)}
    assert sql_ids == dms_ids
    assert sql_ids or window.operator is Operator.NULL  # every window here selects something


def test_every_operator_is_covered() -> None:
    assert {win.operator for win in WINDOWS} == set(Operator)


def test_exclusive_low_bound_adds_a_noteq_filter() -> None:
    filters = dms_filters("id", Window(Operator.GTE, Bound(w(10), False), Bound(w(20), True)))
    assert filters == [
        {
            "filter-type": "source",
            "column-name": "id",
            "filter-conditions": [{"filter-operator": "between", "start-value": "10", "end-value": "20"}],
        },
        {
            "filter-type": "source",
            "column-name": "id",
            "filter-conditions": [{"filter-operator": "noteq", "value": "10"}],
        },
    ]


def test_values_are_bound_never_inlined() -> None:
    t = sa.table("t", sa.column("v"))
    hostile = Watermark(Kind.STRING, "x'; DROP TABLE t; --")
    pred = sql_predicate(t.c.v, Window(Operator.EQ, Bound(hostile, True), Bound(hostile, True)))
    compiled = pred.compile(dialect=sa.dialects.sqlite.dialect())
    assert "DROP" not in str(compiled) and list(compiled.params.values()) == [hostile.value]


def test_dms_timestamps_take_whole_seconds() -> None:
    from datetime import datetime

    mark = Watermark(Kind.TIMESTAMP, datetime(2024, 1, 1, 10, 0, 0))
    mapping = dms_table_mapping(
        "dwh", "orders", "updated_at", Window(Operator.GTE, Bound(mark, True), Bound(mark, True))
    )
    cond = mapping["rules"][0]["filters"][0]["filter-conditions"][0]
    assert cond["start-value"] == "2024-01-01 10:00:00"
    from delta_platform.errors import ControlEntryError

    with pytest.raises(ControlEntryError):
        dms_filters(
            "u",
            Window(Operator.GTE, Bound(Watermark(Kind.TIMESTAMP, datetime(2024, 1, 1, 0, 0, 0, 5)), True)),
        )


def test_empty_window_selects_nothing(table: tuple[sa.Engine, sa.Table]) -> None:
    engine, t = table
    empty = Window(Operator.GTE, Bound(w(5), False)).with_high(Bound(w(5), True))
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.id).where(sql_predicate(t.c.v, empty))).all() == []
