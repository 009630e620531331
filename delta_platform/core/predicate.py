"""One window, two spellings: a bound SQLAlchemy predicate and the equivalent DMS source filter."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from delta_platform.core.operators import Operator
from delta_platform.core.watermark import Kind, Watermark
from delta_platform.core.window import Window
from delta_platform.errors import ControlEntryError

Binder = Callable[[Watermark], Any]


def _raw(mark: Watermark) -> Any:
    return mark.value


def sql_predicate(
    column: sa.ColumnElement[Any], window: Window, bind: Binder = _raw
) -> sa.ColumnElement[bool]:
    """The WHERE clause for a window; values are bound parameters, never SQL text.

    `bind` turns a watermark into what the driver binds (a raw value, or text cast to the
    column's type for ADBC).
    """
    if window.empty:
        return sa.false()
    op = window.operator.canonical
    lo, hi = window.low, window.high
    if op is Operator.GTE:
        parts = []
        if lo is not None:
            parts.append(column >= bind(lo.value) if lo.inclusive else column > bind(lo.value))
        if hi is not None:
            parts.append(column <= bind(hi.value) if hi.inclusive else column < bind(hi.value))
        return sa.and_(sa.true(), *parts)
    if op is Operator.LTE:
        return column <= bind(_mark(hi, window))
    if op is Operator.EQ:
        return column == bind(_mark(lo, window))
    if op is Operator.NOTEQ:
        return column != bind(_mark(lo, window))
    if op is Operator.NULL:
        return column.is_(None)
    if op is Operator.NOTNULL:
        return column.is_not(None)
    if op is Operator.BETWEEN:
        return column.between(bind(_mark(lo, window)), bind(_mark(hi, window)))
    # NOT BETWEEN spelled out so NULLs are excluded the same way DMS excludes them.
    return sa.or_(column < bind(_mark(lo, window)), column > bind(_mark(hi, window)))


def dms_value(mark: Watermark) -> str:
    """DMS filter values are text; dates and timestamps use `YYYY-MM-DD[ HH:MM:SS]`."""
    v = mark.value
    if mark.kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        assert isinstance(v, datetime)
        if v.microsecond:
            raise ControlEntryError(
                f"DMS filters take whole seconds; {mark.encode()} must be floored to the grid first"
            )
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if mark.kind is Kind.DATE:
        assert isinstance(v, date)
        return v.isoformat()
    return mark.encode()


def dms_filters(column_name: str, window: Window) -> list[dict[str, Any]]:
    """DMS source filters: conditions inside one filter are ORed, separate filters are ANDed.

    DMS has no strict `>`/`<`, so an exclusive bound becomes an inclusive range plus a
    separate `noteq` filter on the same column.
    """
    if window.empty:
        raise ControlEntryError("an empty window runs no DMS task")

    def one(*conditions: dict[str, str]) -> dict[str, Any]:
        return {"filter-type": "source", "column-name": column_name, "filter-conditions": list(conditions)}

    op = window.operator.canonical
    lo, hi = window.low, window.high
    if op is Operator.GTE:
        filters = []
        if lo is not None and hi is not None:
            filters.append(
                one(
                    {
                        "filter-operator": "between",
                        "start-value": dms_value(lo.value),
                        "end-value": dms_value(hi.value),
                    }
                )
            )
        elif lo is not None:
            filters.append(one({"filter-operator": "gte", "value": dms_value(lo.value)}))
        elif hi is not None:
            filters.append(one({"filter-operator": "ste", "value": dms_value(hi.value)}))
        for bound in (lo, hi):
            if bound is not None and not bound.inclusive:
                filters.append(one({"filter-operator": "noteq", "value": dms_value(bound.value)}))
        return filters
    if op is Operator.LTE:
        return [one({"filter-operator": "ste", "value": dms_value(_mark(hi, window))})]
    if op in (Operator.EQ, Operator.NOTEQ):
        return [one({"filter-operator": op.value, "value": dms_value(_mark(lo, window))})]
    if op in (Operator.NULL, Operator.NOTNULL):
        return [one({"filter-operator": op.value})]
    return [
        one(
            {
                "filter-operator": op.value,
                "start-value": dms_value(_mark(lo, window)),
                "end-value": dms_value(_mark(hi, window)),
            }
        )
    ]


def _mark(bound: Any, window: Window) -> Watermark:
    if bound is None:
        raise ControlEntryError(f"operator {window.operator.value} needs an operand")
    return bound.value


def dms_table_mapping(
    source_schema: str, source_table: str, column_name: str, window: Window
) -> dict[str, Any]:
    """A complete DMS table mapping selecting one table with the window's filters."""
    return {
        "rules": [
            {
                "rule-type": "selection",
                "rule-id": "1",
                "rule-name": "delta-window",
                "object-locator": {"schema-name": source_schema, "table-name": source_table},
                "rule-action": "include",
                "filters": dms_filters(column_name, window),
            }
        ]
    }
