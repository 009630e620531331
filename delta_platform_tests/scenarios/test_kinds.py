"""Other cursor kinds and edges: date and decimal cursors, an empty source, a start above the data."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from delta_platform_tests.scenarios.harness import Db, Rig, db_fixture, pairs, rig_fixture  # noqa: F401


def test_date_cursor_closes_only_past_days(rig: Rig, db: Db) -> None:
    """A date cursor: today's rows wait (the day may still grow); past days load once."""
    today = datetime.now(UTC).date()
    db.create("d", {"id": "pk", "day": "date"})

    def value(d: date) -> object:
        return d.isoformat() if db.name == "sqlite" else d

    days = {1: today - timedelta(days=2), 2: today - timedelta(days=1), 3: today - timedelta(days=1),
            4: today, 5: today}
    db.insert("d", [{"id": i, "day": value(d)} for i, d in days.items()])
    rig.entry("d", "d", "day", "2000-01-01")
    first = rig.run("d", "p1")
    assert first.fence is not None and first.fence.term == "clock"
    assert pairs(rig.partition("d", "p1"), "id") == [(1,), (2,), (3,)]
    assert rig.startvalue("d") == today.isoformat()
    assert first.window.high is not None and not first.window.high.inclusive
    db.insert("d", [{"id": 6, "day": value(today - timedelta(days=1))}])  # a late row for a closed day
    second = rig.run("d", "p2")
    assert second.rows == 0  # a closed day is closed: the window is [today, today) (documented)
    assert pairs(rig.union("d"), "id") == [(1,), (2,), (3,)]


def test_decimal_cursor_compares_numerically(rig: Rig, db: Db) -> None:
    """A numeric(10,2) cursor: 9.90 < 10.50 numerically (not as text); exact watermark text."""
    db.create("n", {"id": "pk", "score": "NUMERIC(10,2)"})

    def value(v: str) -> object:
        return v if db.name == "sqlite" else Decimal(v)

    db.insert("n", [{"id": i, "score": value(v)} for i, v in enumerate(["1.10", "9.90", "10.50"], 1)])
    rig.entry("n", "n", "score", "1.10")
    rig.run("n", "p1")
    assert pairs(rig.partition("n", "p1"), "id") == [(1,), (2,), (3,)]
    assert Decimal(rig.startvalue("n")) == Decimal("10.50")
    db.insert("n", [{"id": 4, "score": value("10.51")}, {"id": 5, "score": value("100.00")},
                    {"id": 6, "score": value("10.50")}])
    # id 6 ties the old high after it was loaded: a non-monotonic cursor, documented as missed.
    rig.run("n", "p2")
    assert pairs(rig.partition("n", "p2"), "id") == [(4,), (5,)]
    assert [r["score"] for r in sorted(rig.union("n"), key=lambda r: r["id"])] == [
        Decimal("1.10"), Decimal("9.90"), Decimal("10.50"), Decimal("10.51"), Decimal("100.00")]


def test_empty_source_then_rows(rig: Rig, db: Db) -> None:
    """An empty table loads nothing and keeps the watermark; the first rows then load once."""
    db.create("e", {"id": "pk"})
    rig.entry("e", "e", "id", "0")
    first = rig.run("e", "p1")
    assert first.rows == 0 and first.window.empty and rig.startvalue("e") == "0"
    db.insert("e", [{"id": i} for i in range(1, 4)])
    rig.run("e", "p2")
    assert pairs(rig.union("e"), "id") == [(1,), (2,), (3,)]
    assert rig.startvalue("e") == "3"


def test_start_above_the_data_skips_on_purpose(rig: Rig, db: Db) -> None:
    """startvalue above every row: nothing loads, the watermark is not pulled back to MAX."""
    db.create("e", {"id": "pk"})
    db.insert("e", [{"id": i} for i in range(1, 4)])
    rig.entry("e", "e", "id", "100")
    result = rig.run("e", "p1")
    assert result.rows == 0 and result.window.empty
    assert rig.startvalue("e") == "100"
    db.insert("e", [{"id": 100}, {"id": 101}])
    rig.run("e", "p2")
    assert pairs(rig.union("e"), "id") == [(100,), (101,)]  # [100, H]: the first window includes 100
