"""Watermarks are exact: full precision, explicit zone, no floats, canonical text round-trips."""

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from delta_platform.core.watermark import Kind, Watermark
from delta_platform.errors import ControlEntryError


@pytest.mark.parametrize(
    ("kind", "raw", "text"),
    [
        (Kind.INT, "42", "42"),
        (Kind.INT, 9223372036854775807, "9223372036854775807"),
        (Kind.INT, Decimal("17"), "17"),
        (Kind.DECIMAL, "12345678901234567890.1234567890", "12345678901234567890.1234567890"),
        (Kind.DATE, "2024-02-29", "2024-02-29"),
        (Kind.TIMESTAMP, "2024-01-01 00:00:00.000001", "2024-01-01 00:00:00.000001"),
        (Kind.TIMESTAMPTZ, "2024-01-01T02:00:00.123456+02:00", "2024-01-01T00:00:00.123456+00:00"),
        (Kind.TIMESTAMPTZ, "2024-01-01 00:00:00", "2024-01-01T00:00:00.000000+00:00"),
        (Kind.STRING, "abc", "abc"),
    ],
)
def test_parse_encode_round_trip(kind: Kind, raw: object, text: str) -> None:
    mark = Watermark.parse(kind, raw)
    assert mark.encode() == text
    assert Watermark.parse(kind, mark.encode()) == mark
    assert Watermark.from_json(mark.to_json()) == mark


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (Kind.INT, 1.5),
        (Kind.INT, "1.5"),
        (Kind.INT, "1; DROP TABLE x; --"),
        (Kind.DECIMAL, "NaN"),
        (Kind.DECIMAL, 0.1),
        (Kind.TIMESTAMP, "2024-01-01T00:00:00+00:00"),
        (Kind.DATE, "yesterday"),
        (Kind.INT, True),
    ],
)
def test_bad_values_are_refused_with_table_and_attribute(kind: Kind, raw: object) -> None:
    with pytest.raises(ControlEntryError) as err:
        Watermark.parse(kind, raw, table="orders", attribute="startvalue")
    assert "orders" in str(err.value) and "startvalue" in str(err.value)


def test_microseconds_and_zone_are_kept() -> None:
    a = Watermark.parse(
        Kind.TIMESTAMPTZ, datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=timezone(timedelta(hours=5)))
    )
    assert a.value == datetime(2023, 12, 31, 19, 0, 0, 1, tzinfo=UTC)
    assert a.encode().endswith(".000001+00:00")
    assert Watermark.parse(Kind.TIMESTAMPTZ, a.encode()) > Watermark.parse(
        Kind.TIMESTAMPTZ, "2023-12-31T19:00:00Z"
    )


def test_floor_to_grid_rounds_down_only_timestamps() -> None:
    ts = Watermark.parse(Kind.TIMESTAMP, "2024-01-01 10:20:30.999999")
    assert ts.floor(timedelta(seconds=1)).encode() == "2024-01-01 10:20:30.000000"
    assert ts.floor(None) == ts
    assert Watermark(Kind.INT, 5).floor(timedelta(seconds=1)) == Watermark(Kind.INT, 5)


def test_kinds_never_compare_across() -> None:
    with pytest.raises(TypeError):
        _ = Watermark(Kind.INT, 1) < Watermark(Kind.DATE, date(2024, 1, 1))
