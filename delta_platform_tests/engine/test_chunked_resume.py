"""Resuming an interrupted chunked load in a LATER run, on real SQLite, PostgreSQL and MariaDB.

A chunk fails beyond its retries (or the process is killed between chunks): nothing is visible
and the watermark stays. The next run of the same partition reuses the recorded window and
attempt, reads only the chunks the checkpoint does not list, and publishes every row once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from delta_platform.engine import ChunkedEngine
from delta_platform.engine.chunked import CHECKPOINT, Chunk
from delta_platform.errors import EngineError
from delta_platform.manifest import STAGING
from delta_platform_tests.scenarios.harness import Db, Rig, db_fixture, rig_fixture  # noqa: F401

T0 = datetime(2024, 3, 1, 12, 0, 0)
ROWS = 4000
LATER = T0 + timedelta(seconds=10 * ROWS)  # above any fenced high of the first window


def _stamp(db: Db, value: datetime) -> object:
    """SQLite keeps timestamps as canonical microsecond text; the servers take datetimes."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if db.name == "sqlite" else value


class Counting(ChunkedEngine):
    """Counts chunk reads (one per attempt) and fails the chunks in `fail` on every attempt."""

    def __init__(self, fail: frozenset[int] = frozenset(), **kw: Any):
        kw = {"chunks": 4, "workers": 1, "min_rows_per_chunk": 500, "batch_rows": 300, **kw}
        super().__init__(**kw)
        self.fail = fail
        self.reads: Counter[int] = Counter()

    def _chunk_started(self, chunk: Chunk, attempt: int) -> None:
        self.reads[chunk.index] += 1

    def _chunk_batch(self, chunk: Chunk, attempt: int, rows: int) -> None:
        if chunk.index in self.fail:
            raise ConnectionError(f"injected failure in chunk {chunk.index}")


def _setup(db: Db, rig: Rig, primary_key: str, start: str = "2024-03-01 00:00:00") -> None:
    db.create("t", {"id": "pk", "version": "int", "at": "ts"})
    db.insert(
        "t",
        [{"id": i, "version": 1, "at": _stamp(db, T0 + timedelta(seconds=i))} for i in range(1, ROWS + 1)],
    )
    rig.entry("t", "t", "at", start, primaryKey=primary_key)


def _versions(rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return sorted((int(r["id"]), int(r["version"])) for r in rows)


def _staging(rig: Rig) -> list[str]:
    root = Path(rig.lake.table_root(rig.db.schema, "t")) / STAGING
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _fail_first_run(rig: Rig, engine: Counting) -> dict[str, Any]:
    """Run once with a chunk failing for good; check the crash rule; return the resume intent."""
    before = rig.startvalue("t")
    with pytest.raises(EngineError, match="chunk 2 failed after 3 attempts"):
        rig.new_task(engine_for=lambda e: engine).run("t", _spec("p1"))
    assert engine.reads[0] == engine.reads[1] == 1 and engine.reads[2] == 3
    assert rig.startvalue("t") == before
    assert rig.lake.list_partitions(rig.db.schema, "t") == []
    intent = rig.store.get_intent("t")
    assert intent is not None and "resume" in intent and intent["partitionKey"] == "p1"
    doc = rig.lake.read_staged_json(rig.db.schema, "t", intent["attemptId"], CHECKPOINT)
    # Chunk 3 may have finished or been cancelled while chunk 2's failure was noticed.
    assert isinstance(doc, dict) and {"0", "1"} <= set(doc["done"]) and "2" not in doc["done"]
    intent["done"] = sorted(int(i) for i in doc["done"])
    intent["plan"] = [int(c["index"]) for c in doc["plan"]]  # 4 ranges (+ a NULL-key chunk)
    kept = [f["name"] for c in doc["done"].values() for f in c["files"]]
    assert sorted(_staging(rig)) == sorted(
        [f"{intent['attemptId']}/{CHECKPOINT}"] + [f"{intent['attemptId']}/{n}" for n in kept]
    )  # the failed chunk's partial files are gone, the finished chunks' files stay
    return intent


def _spec(key: str) -> Any:
    from delta_platform.delta_task import PartitionSpec

    return PartitionSpec(key)


@pytest.mark.parametrize("primary_key", ["id", "id, version"])
def test_next_run_reads_only_unfinished_chunks(db: Db, rig: Rig, primary_key: str) -> None:
    """Value ranges (integer key) and rank ranges of (cursor, key...): the union is the window."""
    _setup(db, rig, primary_key)
    intent = _fail_first_run(rig, Counting(fail=frozenset({2})))
    # Between the runs: a finished chunk's row and an unfinished chunk's row are updated (their
    # cursor moves beyond the fenced high: next window), one unfinished row is deleted, one added.
    t = db.qualified("t")
    db.execute(f"UPDATE {t} SET version = 2, at = :at WHERE id IN (10, 3500)", {"at": _stamp(db, LATER)})
    db.execute(f"DELETE FROM {t} WHERE id = 3000")
    db.insert("t", [{"id": 5000, "version": 1, "at": _stamp(db, LATER)}])

    engine = Counting()
    loaded = rig.new_task(engine_for=lambda e: engine).run("t", _spec("p1"))
    assert engine.reads == {i: 1 for i in intent["plan"] if i not in intent["done"]}, (
        "a finished chunk was re-read"
    )
    assert loaded.attempt_id == intent["attemptId"]
    assert loaded.window.to_json() == intent["resume"]["window"]  # the recorded window, high included
    expected = [(i, 1) for i in range(1, ROWS + 1) if i not in (3000, 3500)]
    assert _versions(rig.partition("t", "p1")) == expected
    assert loaded.rows == loaded.source_count == len(expected)
    assert loaded.ledger_entry["resumed"] is True
    assert rig.startvalue("t") == loaded.watermark_after != loaded.watermark_before
    assert len(rig.store.ledger("t")) == 1 and rig.store.get_intent("t") is None
    assert _staging(rig) == []
    # The moved rows arrive with the next window, once.
    nxt = rig.new_task(engine_for=lambda e: Counting()).run("t", _spec("p2"))
    assert _versions(rig.partition("t", "p2")) == [(10, 2), (3500, 2), (5000, 1)]
    assert nxt.window.low is not None and nxt.window.low.value == loaded.window.high.value  # type: ignore[union-attr]


def test_checkpoint_for_a_changed_entry_is_discarded(db: Db, rig: Rig) -> None:
    """startvalue edited by hand: the old checkpoint no longer applies; the load starts over."""
    _setup(db, rig, "id")
    intent = _fail_first_run(rig, Counting(fail=frozenset({2})))
    item = rig.store.get_entry("t")
    assert item is not None
    rig.store.put_entry({**item, "startvalue": "2024-03-01 12:16:40"})  # T0 + 1000 s
    engine = Counting()
    loaded = rig.new_task(engine_for=lambda e: engine).run("t", _spec("p1"))
    assert loaded.recovered is not None and "discarded the chunk checkpoint" in loaded.recovered
    assert loaded.attempt_id != intent["attemptId"]
    assert set(engine.reads) == set(intent["plan"]) and set(engine.reads.values()) == {1}
    assert _versions(rig.partition("t", "p1")) == [(i, 1) for i in range(1000, ROWS + 1)]
    assert _staging(rig) == [] and rig.store.get_intent("t") is None


def test_resume_that_fails_again_keeps_every_finished_chunk(db: Db, rig: Rig) -> None:
    """Two interrupted runs in a row: each later run reads only what no earlier run finished."""
    _setup(db, rig, "id")
    intent = _fail_first_run(rig, Counting(fail=frozenset({2})))
    second = Counting(fail=frozenset({2}), retries=0)
    with pytest.raises(EngineError):
        rig.new_task(engine_for=lambda e: second).run("t", _spec("p1"))
    doc = rig.lake.read_staged_json(db.schema, "t", intent["attemptId"], CHECKPOINT)
    assert isinstance(doc, dict) and set(intent["done"]) <= {int(i) for i in doc["done"]}
    assert not set(second.reads) & set(intent["done"])
    third = Counting()
    loaded = rig.new_task(engine_for=lambda e: third).run("t", _spec("p1"))
    assert not set(third.reads) & {int(i) for i in doc["done"]}
    assert loaded.attempt_id == intent["attemptId"]
    assert _versions(rig.partition("t", "p1")) == [(i, 1) for i in range(1, ROWS + 1)]
    assert _staging(rig) == [] and len(rig.store.ledger("t")) == 1


def test_another_partitions_checkpoint_is_dropped(db: Db, rig: Rig) -> None:
    """A run of another partition replaces the resume record and removes the old staging."""
    _setup(db, rig, "id")
    intent = _fail_first_run(rig, Counting(fail=frozenset({2})))
    loaded = rig.new_task(engine_for=lambda e: Counting()).run("t", _spec("p9"))
    assert loaded.attempt_id != intent["attemptId"]
    assert _versions(rig.partition("t", "p9")) == [(i, 1) for i in range(1, ROWS + 1)]
    assert _staging(rig) == [] and rig.store.get_intent("t") is None


_CHILD = r"""
import os, signal, sys
from datetime import timedelta
from delta_platform.delta_task import DeltaTask, PartitionSpec
from delta_platform.engine import ChunkedEngine
from delta_platform.lake import Lake
from delta_platform.source import Source
from delta_platform.store import LocalStore

class KilledBetweenChunks(ChunkedEngine):
    def _chunk_started(self, chunk, attempt):
        if chunk.index == 2:
            os.kill(os.getpid(), signal.SIGKILL)

url, store_path, lake_path = sys.argv[1:4]
pg = url.startswith("postgresql")
kw = {"connect_args": {"application_name": "delta_platform_scenarios"}} if pg else {}
source = Source(url, **kw)
engine = KilledBetweenChunks(chunks=4, workers=1, min_rows_per_chunk=500, batch_rows=300)
task = DeltaTask(LocalStore(store_path), lambda e: source, lambda e: Lake(lake_path), lambda e: engine,
                 owner="child", lease_ttl=timedelta(seconds=2))
task.run("t", PartitionSpec("p1"))
"""


def test_process_killed_between_chunks_resumes(db: Db, rig: Rig) -> None:
    _setup(db, rig, "id")
    before = rig.startvalue("t")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, db.url, str(rig.root / "control.db"), str(rig.root / "lake")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr
    assert rig.startvalue("t") == before and rig.lake.list_partitions(db.schema, "t") == []
    intent = rig.store.get_intent("t")
    assert intent is not None and "resume" in intent
    doc = rig.lake.read_staged_json(db.schema, "t", intent["attemptId"], CHECKPOINT)
    assert isinstance(doc, dict) and sorted(doc["done"]) == ["0", "1"]
    todo = {int(c["index"]): 1 for c in doc["plan"] if int(c["index"]) >= 2}
    time.sleep(2.5)  # the killed child's lease expires
    engine = Counting()
    loaded = rig.new_task(engine_for=lambda e: engine).run("t", _spec("p1"))
    assert engine.reads == todo  # killed as chunk 2 started: 0 and 1 were finished
    assert loaded.attempt_id == intent["attemptId"]
    assert _versions(rig.partition("t", "p1")) == [(i, 1) for i in range(1, ROWS + 1)]
    assert rig.startvalue("t") == loaded.watermark_after != before
    assert _staging(rig) == [] and len(rig.store.ledger("t")) == 1
