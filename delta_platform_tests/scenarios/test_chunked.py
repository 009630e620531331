"""PAIN 11: a window read in chunks of the total order (cursor, key) splits tie groups exactly."""

from __future__ import annotations

from datetime import datetime, timedelta

from delta_platform.engine import ChunkedEngine, builtin_engine_for
from delta_platform_tests.scenarios.harness import Db, Rig, db_fixture, pairs, rig_fixture  # noqa: F401

T = datetime(2024, 4, 1, 8, 0, 0, 500000)


def _ts(db: Db, v: datetime) -> object:
    return v.strftime("%Y-%m-%d %H:%M:%S.%f") if db.name == "sqlite" else v


def test_tie_groups_larger_than_a_chunk_land_once(rig: Rig, db: Db) -> None:
    """3 cursor values x 20 rows, 4 chunks of ~15 rows: every tie group is cut, no row lost or doubled."""
    db.create("c", {"id": "pk", "at": "ts", "v": "int"})
    db.insert("c", [{"id": i, "at": _ts(db, T + timedelta(microseconds=(i - 1) // 20)), "v": 1}
                    for i in range(1, 61)])
    engine = ChunkedEngine(chunks=4, workers=2, min_rows_per_chunk=5, batch_rows=7)
    rig.task = rig.new_task(engine_for=lambda e: engine)
    rig.entry("c", "c", "at", "2024-01-01 00:00:00", primaryKey="id", chunkRows="5")
    assert isinstance(builtin_engine_for(rig.task.entry("c")), ChunkedEngine)
    first = rig.run("c", "p1")
    assert first.engine == "chunked" and first.rows == 60 and first.source_count == 60
    assert len(first.files) >= 2  # really read in several chunks
    assert pairs(rig.partition("c", "p1"), "id") == [(i,) for i in range(1, 61)]
    # Updates move rows to a newer cursor value; new rows tie with them.
    db.execute(f"UPDATE {db.qualified('c')} SET v = 2, at = :at WHERE id IN (3, 25, 59)",
               {"at": _ts(db, T + timedelta(seconds=1))})
    db.insert("c", [{"id": i, "at": _ts(db, T + timedelta(seconds=1)), "v": 1} for i in range(61, 81)])
    second = rig.run("c", "p2")
    assert second.rows == 23
    assert pairs(rig.partition("c", "p2"), "id", "v") == sorted(
        [(3, 2), (25, 2), (59, 2)] + [(i, 1) for i in range(61, 81)])
    union = pairs(rig.union("c"), "id", "v")
    assert len(union) == len(set(union)) == 83
