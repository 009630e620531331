"""PAIN 2/3 ties at the boundary, PAIN 5 microsecond timestamps, PAIN 6 session time zones."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from delta_platform_tests.scenarios.harness import (  # noqa: F401
    Db,
    Rig,
    db_fixture,
    make_source,
    pairs,
    rig_fixture,
)


def _param(db: Db, value: datetime) -> object:
    """SQLite keeps timestamps as text in the canonical microsecond form; servers take datetimes."""
    if db.name == "sqlite":
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if db.name == "mariadb" and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)  # TIMESTAMP written in a UTC session
    return value


def _rows(rig: Rig, db: Db, table: str, values: list[tuple[int, datetime]]) -> None:
    db.insert(table, [{"id": i, "at": _param(db, v)} for i, v in values])


def test_ties_at_high_are_loaded_once_and_never_reloaded(rig: Rig, db: Db) -> None:
    """20 rows share the high value: all land in window 1; an unchanged rerun loads 0 rows."""
    db.create("t", {"id": "pk", "at": "ts"})
    high = datetime(2024, 2, 2, 2, 2, 2, 222222)
    _rows(rig, db, "t", [(i, high - timedelta(seconds=i)) for i in range(1, 11)]
          + [(i, high) for i in range(11, 31)])
    rig.entry("t", "t", "at", "2024-01-01 00:00:00")
    r1 = rig.run("t", "p1")
    assert r1.rows == 30
    assert rig.startvalue("t") == "2024-02-02 02:02:02.222222"
    assert {i for (i,) in pairs(rig.partition("t", "p1"), "id")} == set(range(1, 31))
    for k in (2, 3):  # PAIN 3: `>=` would reload the 20 boundary rows on every run
        r = rig.run("t", f"p{k}")
        assert r.rows == 0 and r.window.low is not None and not r.window.low.inclusive
    _rows(rig, db, "t", [(31, high + timedelta(microseconds=1))])
    rig.run("t", "p4")
    assert pairs(rig.partition("t", "p4"), "id") == [(31,)]
    assert pairs(rig.union("t"), "id") == [(i,) for i in range(1, 32)]


def test_late_ties_with_safety_lag_are_not_lost(rig: Rig, db: Db) -> None:
    """Application-stamped rows at 'now': the lag fences the high below them until they settle."""
    db.create("t", {"id": "pk", "at": "ts"})
    now = datetime.now(UTC).replace(tzinfo=None)  # naive UTC, as the fence compares it
    tie = now + timedelta(milliseconds=200)
    _rows(rig, db, "t", [(1, now - timedelta(hours=1))] + [(i, tie) for i in range(2, 12)])
    rig.entry("t", "t", "at", "2000-01-01 00:00:00", safetyLagSeconds="1.5")
    r1 = rig.run("t", "p1")
    assert r1.fence is not None and r1.fence.term in ("clock", "open_txn"), r1.fence
    assert pairs(rig.partition("t", "p1"), "id") == [(1,)]
    # More rows with the very same value arrive after the first load.
    _rows(rig, db, "t", [(i, tie) for i in range(12, 22)])
    time.sleep(max(0.0, (tie + timedelta(seconds=1.6) - datetime.now(UTC).replace(tzinfo=None))
                   .total_seconds()))
    rig.run("t", "p2")
    assert pairs(rig.partition("t", "p2"), "id") == [(i,) for i in range(2, 22)]
    assert pairs(rig.union("t"), "id") == [(i,) for i in range(1, 22)]
    assert rig.run("t", "p3").rows == 0


@pytest.mark.parametrize("aware", [False, True], ids=["naive", "aware"])
def test_microsecond_neighbours_around_high(rig: Rig, db: Db, aware: bool) -> None:
    """Rows 1 µs apart across a day boundary: nothing lost, nothing twice, 6 decimals kept."""
    if aware and db.name == "sqlite":
        pytest.skip("SQLite has no time-zone-aware column type")
    db.create("t", {"id": "pk", "at": "tstz" if aware else "ts"})
    tz = UTC if aware else None
    high = datetime(2024, 6, 30, 23, 59, 59, 999999, tzinfo=tz)
    us = timedelta(microseconds=1)
    _rows(rig, db, "t", [(1, high - 2 * us), (2, high - us), (3, high)])
    start = "2024-06-30T00:00:00+00:00" if aware else "2024-06-30 00:00:00"
    rig.entry("t", "t", "at", start)
    r1 = rig.run("t", "p1")
    assert pairs(rig.partition("t", "p1"), "id") == [(1,), (2,), (3,)]
    wm = rig.startvalue("t")
    assert wm == ("2024-06-30T23:59:59.999999+00:00" if aware else "2024-06-30 23:59:59.999999")
    assert r1.watermark_after == wm
    _rows(rig, db, "t", [(4, high + us), (5, high + 2 * us)])
    rig.run("t", "p2")
    assert pairs(rig.partition("t", "p2"), "id") == [(4,), (5,)]
    assert rig.startvalue("t") == ("2024-07-01T00:00:00.000001+00:00" if aware
                                   else "2024-07-01 00:00:00.000001")
    got = sorted((r["id"], r["at"]) for r in rig.union("t"))
    want = [(i + 1, high + (i - 2) * us) for i in range(5)]
    assert got == want


@pytest.fixture
def pg_tz_role(db: Db) -> Iterator[str]:
    """A PostgreSQL role whose sessions default to a non-UTC zone (+05:30), dropped afterwards."""
    role = f"tz_{uuid.uuid4().hex[:8]}"
    stmts = [f'CREATE ROLE "{role}" LOGIN', f'ALTER ROLE "{role}" SET timezone = \'Asia/Kolkata\'',
             f'GRANT USAGE ON SCHEMA "{db.schema}" TO "{role}"',
             f'GRANT SELECT ON ALL TABLES IN SCHEMA "{db.schema}" TO "{role}"',
             f'GRANT pg_read_all_stats TO "{role}"']
    for s in stmts:
        db.execute(s)
    try:
        yield role
    finally:
        db.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{db.schema}" FROM "{role}"')
        db.execute(f'REVOKE ALL ON SCHEMA "{db.schema}" FROM "{role}"')
        db.execute(f'DROP ROLE "{role}"')


def test_session_time_zone_does_not_shift_the_bound(db: Db, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    """A non-UTC session default (+05:30) leaves windows, values and watermarks unchanged."""
    if db.name == "sqlite":
        pytest.skip("SQLite has no session time zone")
    db.create("t", {"id": "pk", "at": "tstz", "naive": "ts"})
    base = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
    rows = [{"id": i, "at": _param(db, base + timedelta(minutes=30 * i)),
             "naive": (base + timedelta(minutes=30 * i)).replace(tzinfo=None)} for i in range(8)]
    db.insert("t", rows)
    if db.name == "postgresql":
        role = request.getfixturevalue("pg_tz_role")
        url = sa.make_url(db.url).set(username=role)
        with sa.create_engine(url, poolclass=sa.pool.NullPool).connect() as conn:
            assert conn.exec_driver_sql("SHOW timezone").scalar() == "Asia/Kolkata"
        shifted = Db(db.name, url.render_as_string(hide_password=False), db.schema, db.engine)
        other = make_source(shifted)
    else:
        other = make_source(db, connect_args={"init_command": "SET time_zone = '+05:30'"})
        with other.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT @@session.time_zone").scalar() == "+05:30"
    results = {}
    for label, source in (("utc", None), ("shifted", other)):
        rig = Rig(db, tmp_path / label)
        if source is not None:
            rig.source = source
            rig.task = rig.new_task()
        for target, col, start in (("aware", "at", "2024-01-01T11:00:00+00:00"),
                                   ("naive", "naive", "2024-01-01 11:00:00")):
            rig.entry(target, "t", col, start)
            # The partition ends at 12:45 UTC (exclusive): one more fence term for both cursors.
            res = rig.run(target, "p1", start=base, end=datetime(2024, 1, 1, 12, 45, tzinfo=UTC))
            got = sorted((r["id"], r["at"], r["naive"]) for r in rig.partition(target, "p1"))
            results[(label, target)] = (res.window.describe(), rig.startvalue(target), got)
        rig.source.dispose()
    for target in ("aware", "naive"):
        assert results[("shifted", target)] == results[("utc", target)]
    # And the UTC result is the right one: 11:00 <= at < 12:45 UTC -> ids 2, 3, 4, 5.
    window, wm, got = results[("utc", "aware")]
    assert [g[0] for g in got] == [2, 3, 4, 5]
    assert got[0][1] == datetime(2024, 1, 1, 11, 0, tzinfo=UTC)
    assert got[0][2] == datetime(2024, 1, 1, 11, 0)
    assert wm == "2024-01-01T12:45:00.000000+00:00"  # the partition end set the (exclusive) high
    assert window.endswith("12:45:00.000000+00:00)")
    assert [g[0] for g in results[("utc", "naive")][2]] == [2, 3, 4, 5]
