"""The fenced high mark: the lowest of its terms, recorded, and never silently past open writers."""

from datetime import UTC, datetime, timedelta

import pytest

from delta_platform.core.fence import FenceInputs, fence_high
from delta_platform.core.watermark import Kind, Watermark
from delta_platform.errors import FenceError


def ts(text: str) -> Watermark:
    return Watermark(Kind.TIMESTAMPTZ, datetime.fromisoformat(text).replace(tzinfo=UTC))


def test_max_wins_for_integer_cursor() -> None:
    fence = fence_high(FenceInputs(Kind.INT, Watermark(Kind.INT, 41), wait_seconds=0.5))
    assert fence.high is not None and fence.high.value.value == 41 and fence.high.inclusive
    assert fence.term == "max" and fence.wait_seconds == 0.5


def test_clock_minus_lag_caps_future_application_timestamps() -> None:
    fence = fence_high(
        FenceInputs(
            Kind.TIMESTAMPTZ,
            ts("2024-01-01 12:00:00"),
            clock=ts("2024-01-01 11:00:00"),
            safety_lag=timedelta(minutes=5),
        )
    )
    assert fence.term == "clock" and fence.high.value == ts("2024-01-01 10:55:00")


def test_partition_end_is_exclusive() -> None:
    fence = fence_high(
        FenceInputs(
            Kind.TIMESTAMPTZ,
            ts("2024-01-01 12:00:00"),
            clock=ts("2024-01-01 13:00:00"),
            partition_end=ts("2024-01-01 06:00:00"),
        )
    )
    assert fence.term == "partition_end" and not fence.high.inclusive
    assert fence.high.value == ts("2024-01-01 06:00:00")


def test_exclusive_bound_sorts_below_inclusive_at_same_value() -> None:
    fence = fence_high(
        FenceInputs(Kind.TIMESTAMPTZ, ts("2024-01-01 06:00:00"), partition_end=ts("2024-01-01 06:00:00"))
    )
    assert fence.term == "partition_end" and not fence.high.inclusive


def test_open_transactions_fall_back_below_oldest_for_timestamps() -> None:
    fence = fence_high(
        FenceInputs(
            Kind.TIMESTAMPTZ,
            ts("2024-01-01 12:00:00"),
            clock=ts("2024-01-01 12:00:01"),
            open_txns_drained=False,
            oldest_open_txn_start=ts("2024-01-01 11:30:00"),
            wait_seconds=60,
        )
    )
    assert (
        fence.term == "open_txn"
        and fence.high.value == ts("2024-01-01 11:30:00")
        and not fence.high.inclusive
    )


def test_open_transactions_fail_integer_window_loudly() -> None:
    with pytest.raises(FenceError, match="filtercolumn"):
        fence_high(FenceInputs(Kind.INT, Watermark(Kind.INT, 10), open_txns_drained=False, table="t"))


def test_grid_floors_high_and_keeps_it_inclusive() -> None:
    fence = fence_high(
        FenceInputs(Kind.TIMESTAMPTZ, ts("2024-01-01 12:00:00.700000"), grid=timedelta(seconds=1))
    )
    assert fence.high.value == ts("2024-01-01 12:00:00") and fence.high.inclusive
    assert fence.term == "max+grid"


def test_empty_source_has_no_high() -> None:
    assert fence_high(FenceInputs(Kind.INT, None)).high is None


def test_date_cursor_closes_only_past_days() -> None:
    from datetime import date

    fence = fence_high(
        FenceInputs(
            Kind.DATE, Watermark(Kind.DATE, date(2024, 1, 5)), clock=Watermark(Kind.DATE, date(2024, 1, 5))
        )
    )
    assert fence.term == "clock" and not fence.high.inclusive
