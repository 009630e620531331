"""Consecutive windows with inserts and updates between them: the union is exactly what §3 promises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from delta_platform_tests.scenarios.harness import Db, Rig, db_fixture, pairs, rig_fixture  # noqa: F401

BASE = datetime(2024, 3, 1, 12, 0, 0)


def _ts(db: Db, seconds: float) -> datetime:
    """A cursor timestamp `seconds` after BASE, as the column stores it."""
    return BASE + timedelta(seconds=seconds)


def _ts_param(db: Db, value: datetime) -> object:
    # SQLite compares ISO text: store exactly the canonical form the bound is encoded in.
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if db.name == "sqlite" else value


@pytest.mark.parametrize("cursor", ["id", "updated_at"])
def test_consecutive_windows_union_is_exact(rig: Rig, db: Db, cursor: str) -> None:
    """Four windows, inserts and updates between them; each window holds exactly its rows."""
    db.create("items", {"id": "pk", "version": "int", "updated_at": "ts", "note": "text"})
    model: dict[int, tuple[int, datetime]] = {}  # id -> (version, updated_at)
    clock = [0]

    def tick() -> datetime:
        clock[0] += 1
        return _ts(db, clock[0] + 0.000001 * (clock[0] % 7))

    def insert(ids: range) -> None:
        rows = []
        for i in ids:
            model[i] = (1, tick())
            rows.append({"id": i, "version": 1, "updated_at": _ts_param(db, model[i][1]), "note": f"n{i}"})
        db.insert("items", rows)

    def update(ids: list[int]) -> None:
        for i in ids:
            model[i] = (model[i][0] + 1, tick())
            db.execute(f"UPDATE {db.qualified('items')} SET version = :v, updated_at = :u WHERE id = :i",
                       {"v": model[i][0], "u": _ts_param(db, model[i][1]), "i": i})

    start = "0" if cursor == "id" else "2024-01-01 00:00:00"
    rig.entry("items", "items", cursor, start)
    high: object = None  # the previous window's high in the cursor's domain
    loaded: list[tuple[int, int]] = []
    steps = [(range(1, 51), []), (range(51, 81), [3, 10, 60]), (range(81, 82), [1, 2, 3, 80]),
             (range(82, 82), [50, 81])]
    for k, (new, changed) in enumerate(steps):
        insert(new)
        update(changed)
        if cursor == "id":
            expected = sorted((i, v) for i, (v, _) in model.items() if high is None or i > high)
            top: object = max(model)
        else:
            expected = sorted((i, v) for i, (v, u) in model.items() if high is None or u > high)
            top = max(u for _, u in model.values())
        result = rig.run("items", f"p{k:03d}")
        assert result.rows == len(expected)
        assert pairs(rig.partition("items", f"p{k:03d}"), "id", "version") == expected, f"window {k}"
        loaded.extend(expected)
        high = top
        wm = rig.startvalue("items")
        if cursor == "id":
            assert wm == str(top)
        else:
            assert wm == top.strftime("%Y-%m-%d %H:%M:%S.%f")  # type: ignore[union-attr]
    union = pairs(rig.union("items"), "id", "version")
    assert union == sorted(loaded)
    if cursor == "id":
        # An id cursor loads each row once, as of the window it first appeared in.
        assert sorted(i for i, _ in union) == sorted(model)
    else:
        # An update-timestamp cursor: every version seen at a load, once; the latest wins.
        assert len(set(union)) == len(union)
        latest = {i: max(v for j, v in union if j == i) for i, _ in union}
        assert latest == {i: v for i, (v, _) in model.items()}
    # Nothing changed since: the next window is empty, the watermark stays.
    before = rig.startvalue("items")
    assert rig.run("items", "p999").rows == 0
    assert rig.startvalue("items") == before
    assert pairs(rig.union("items"), "id", "version") == sorted(loaded)


def test_timestamptz_windows_postgres_and_mariadb(rig: Rig, db: Db) -> None:
    """An aware cursor (timestamptz / MariaDB TIMESTAMP): windows contiguous in UTC."""
    if db.name == "sqlite":
        pytest.skip("SQLite has no time-zone-aware column type")
    db.create("ev", {"id": "pk", "at": "tstz"})
    t0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    rows = [{"id": i, "at": t0 + timedelta(microseconds=i)} for i in range(1, 11)]
    if db.name == "mariadb":
        for r in rows:
            r["at"] = r["at"].replace(tzinfo=None)  # MariaDB TIMESTAMP in a UTC session
    with db.engine.begin() as conn:
        if db.name == "mariadb":
            conn.exec_driver_sql("SET time_zone = '+00:00'")
        conn.execute(sa.text(
            f"INSERT INTO {db.qualified('ev')} (id, at) VALUES (:id, :at)"), rows[:6])
    rig.entry("ev", "ev", "at", "2024-05-01T00:00:00+00:00")
    rig.run("ev", "p1")
    assert pairs(rig.partition("ev", "p1"), "id") == [(i,) for i in range(1, 7)]
    with db.engine.begin() as conn:
        if db.name == "mariadb":
            conn.exec_driver_sql("SET time_zone = '+00:00'")
        conn.execute(sa.text(
            f"INSERT INTO {db.qualified('ev')} (id, at) VALUES (:id, :at)"), rows[6:])
    rig.run("ev", "p2")
    assert pairs(rig.partition("ev", "p2"), "id") == [(i,) for i in range(7, 11)]
    assert rig.startvalue("ev") == "2024-05-01T10:00:00.000010+00:00"
    got = sorted(r["at"] for r in rig.union("ev"))
    assert got == [t0 + timedelta(microseconds=i) for i in range(1, 11)]
