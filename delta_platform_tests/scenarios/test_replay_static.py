"""Replay of a committed partition, a manual rewind of startvalue, and the static operators."""

from __future__ import annotations

import os

from delta_platform.manifest import MANIFEST_NAME
from delta_platform_tests.scenarios.harness import Db, Rig, db_fixture, pairs, rig_fixture  # noqa: F401


def _orders(db: Db, first: int, last: int) -> None:
    db.insert("o", [{"id": i, "v": 1} for i in range(first, last + 1)])


def _files(rig: Rig, key: str) -> set[str]:
    pdir = rig.lake.partition_dir(rig.db.schema, "o", key)
    return {f for f in os.listdir(pdir) if f != MANIFEST_NAME}


def test_replay_reloads_the_recorded_window_and_replaces_files(rig: Rig, db: Db) -> None:
    """Re-materializing p1 reloads exactly (0, 50] as it is now; the live watermark stays."""
    db.create("o", {"id": "pk", "v": "int"})
    _orders(db, 1, 50)
    rig.entry("o", "o", "id", "0")
    rig.run("o", "p1")
    _orders(db, 51, 60)
    rig.run("o", "p2")
    old_files = _files(rig, "p1")
    db.execute(f"UPDATE {db.qualified('o')} SET v = 2 WHERE id IN (5, 50, 55)")
    _orders(db, 61, 65)
    replay = rig.run("o", "p1")
    assert replay.mode.value == "replay"
    assert replay.window.describe() == "[0, 50]"
    assert pairs(rig.partition("o", "p1"), "id", "v") == sorted(
        [(i, 1) for i in range(1, 51) if i not in (5, 50)] + [(5, 2), (50, 2)])
    assert _files(rig, "p1").isdisjoint(old_files)  # replaced, no stale part left behind
    assert len(_files(rig, "p1")) == len(replay.files)
    assert rig.startvalue("o") == "60"  # replays never move the live watermark
    assert rig.store.ledger_entry("o", "p1")["mode"] == "replay"  # type: ignore[index]
    # The live sequence continues after p2, untouched by the replay.
    rig.run("o", "p3")
    assert pairs(rig.partition("o", "p3"), "id") == [(i,) for i in range(61, 66)]
    ids = pairs(rig.union("o"), "id")
    assert ids == [(i,) for i in range(1, 66)]  # each id once across p1, p2, p3


def test_manual_rewind_reloads_from_the_new_value(rig: Rig, db: Db) -> None:
    """A hand-edited startvalue: the next window is [new value, H], recorded as mode reset."""
    db.create("o", {"id": "pk", "v": "int"})
    _orders(db, 1, 40)
    rig.entry("o", "o", "id", "0")
    rig.run("o", "p1")
    item = rig.store.get_entry("o")
    assert item is not None
    rig.store.put_entry({**item, "startvalue": "30"})
    _orders(db, 41, 45)
    reset = rig.run("o", "p2")
    assert reset.mode.value == "reset"
    assert reset.window.describe() == "[30, 45]"
    assert pairs(rig.partition("o", "p2"), "id") == [(i,) for i in range(30, 46)]
    entry = rig.store.ledger_entry("o", "p2")
    assert entry is not None and entry["mode"] == "reset" and entry["watermarkBefore"] == "30"
    assert any("reset by hand" in n for n in entry["window"]["notes"])
    assert rig.startvalue("o") == "45"
    _orders(db, 46, 47)
    nxt = rig.run("o", "p3")
    assert nxt.mode.value == "next" and nxt.window.describe() == "(45, 47]"


def test_replay_of_newest_partition_keeps_next_window_exclusive(rig: Rig, db: Db) -> None:
    """Replaying the newest committed partition must not make the next window re-include its high."""
    db.create("o", {"id": "pk", "v": "int"})
    _orders(db, 1, 20)
    rig.entry("o", "o", "id", "0")
    rig.run("o", "p1")
    rig.run("o", "p1")  # replay of the newest committed partition
    _orders(db, 21, 25)
    rig.run("o", "p2")
    assert pairs(rig.union("o"), "id") == [(i,) for i in range(1, 26)]  # id 20 exactly once


STATIC = [
    ("lte", "5", None, lambda v: v is not None and v <= 5),
    ("ste", "5", None, lambda v: v is not None and v <= 5),
    ("eq", "7", None, lambda v: v == 7),
    ("noteq", "7", None, lambda v: v is not None and v != 7),
    ("null", None, None, lambda v: v is None),
    ("notnull", None, None, lambda v: v is not None),
    ("between", "3", "8", lambda v: v is not None and 3 <= v <= 8),
    ("notbetween", "3", "8", lambda v: v is not None and not 3 <= v <= 8),
]


def test_static_operators_select_a_filtered_snapshot(rig: Rig, db: Db) -> None:
    """Every static operator: exactly its rows, twice in a row, and startvalue never moves."""
    db.create("s", {"id": "pk", "val": "int"})
    vals = {i: (None if i % 6 == 0 else i % 10) for i in range(1, 31)}
    db.insert("s", [{"id": i, "val": v} for i, v in vals.items()])
    for op, start, end, keep in STATIC:
        target = f"s_{op}"
        rig.entry(target, "s", "val", start, operator=op, end=end)
        expected = sorted((i,) for i, v in vals.items() if keep(v))
        for key in ("p1", "p2"):
            result = rig.run(target, key)
            assert result.mode.value == "static", op
            assert pairs(rig.partition(target, key), "id") == expected, op
            assert result.rows == len(expected)
            assert rig.startvalue(target) == start, op
            assert not result.ledger_entry["advanced"]
