"""PAIN 9 (two concurrent loads of one table) and PAIN 10 (crashes between publish and commit)."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from delta_platform.delta_task import PartitionSpec
from delta_platform.engine import StreamingEngine
from delta_platform.errors import LeaseHeld
from delta_platform.manifest import MANIFEST_NAME, STAGING
from delta_platform_tests.scenarios.harness import Db, Rig, db_fixture, pairs, rig_fixture  # noqa: F401


def _table(db: Db, rig: Rig, first: int, last: int, *, create: bool = True) -> None:
    if create:
        db.create("orders", {"id": "pk", "amount": "NUMERIC(12,2)", "note": "text"})
        rig.entry("orders", "orders", "id", "0")
    db.insert("orders", [{"id": i, "amount": f"{i}.25", "note": f"n{i}"} for i in range(first, last + 1)])


class GatedEngine:
    """The streaming engine, held at its start until the test releases it."""

    name = "streaming"
    grid = None

    def __init__(self) -> None:
        self.inner = StreamingEngine(batch_rows=1000)
        self.entered = threading.Event()
        self.release = threading.Event()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        assert self.release.wait(30), "never released"
        return self.inner.run(*args, **kwargs)


class FailingEngine:
    """The streaming engine with batches of 10 rows that dies after the first batch is written."""

    name = "streaming"
    grid = None

    def __init__(self) -> None:
        self.inner = StreamingEngine(batch_rows=10)
        self.rows_before_failure = 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        def progress(rows: int) -> None:
            self.rows_before_failure = rows
            raise RuntimeError("engine died mid-stream")

        kwargs["progress"] = progress
        return self.inner.run(*args, **kwargs)


def _staging_leftovers(rig: Rig, table: str) -> list[str]:
    path = os.path.join(rig.lake.table_root(rig.db.schema, table), STAGING)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _partition_files(rig: Rig, table: str, key: str) -> set[str]:
    pdir = rig.lake.partition_dir(rig.db.schema, table, key)
    return {f for f in os.listdir(pdir) if f != MANIFEST_NAME}


def test_second_concurrent_load_is_refused(rig: Rig, db: Db) -> None:
    """While one run holds the lease, another worker's run of the same table gets LeaseHeld."""
    _table(db, rig, 1, 100)
    gate = GatedEngine()
    first = rig.new_task(owner="worker-a", engine_for=lambda e: gate)
    second = rig.new_task(owner="worker-b")
    outcome: dict[str, Any] = {}

    def run_first() -> None:
        try:
            outcome["result"] = first.run("orders", PartitionSpec("p1"))
        except BaseException as exc:  # reported to the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        assert gate.entered.wait(30)
        for key in ("p1", "p2"):
            with pytest.raises(LeaseHeld):
                second.run("orders", PartitionSpec(key))
        assert rig.startvalue("orders") == "0"
    finally:
        gate.release.set()
        thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].rows == 100
    assert rig.startvalue("orders") == "100"
    ledger = rig.store.ledger("orders")
    assert [(e["partitionKey"], e["advanced"], e["watermarkAfter"]) for e in ledger] == [("p1", True, "100")]
    # The refused worker runs afterwards: nothing new, the watermark advanced exactly once.
    rig.task = second
    assert rig.run("orders", "p2").rows == 0
    assert rig.startvalue("orders") == "100"
    assert pairs(rig.union("orders"), "id") == [(i,) for i in range(1, 101)]


def _crash_before_first_commit(rig: Rig, monkeypatch: pytest.MonkeyPatch, partition: str) -> None:
    """Run `partition` and kill it after publish, before the watermark write (the first commit)."""
    real_commit = rig.store.commit_window
    calls = {"n": 0}

    def dying_commit(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("killed between publish and the watermark write")
        real_commit(*args, **kwargs)

    monkeypatch.setattr(rig.store, "commit_window", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        rig.run("orders", partition)


def test_crash_between_publish_and_commit_rolls_forward(
    rig: Rig, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the manifest, before the watermark write: the rerun loads the window once."""
    _table(db, rig, 1, 60)
    _crash_before_first_commit(rig, monkeypatch, "p1")
    assert rig.startvalue("orders") == "0"
    assert rig.store.ledger("orders") == []
    assert rig.store.get_intent("orders") is not None
    # A new worker picks the table up: roll-forward, then the same window, exactly once.
    rig.task = rig.new_task(owner="worker-b")
    result = rig.run("orders", "p1")
    assert result.recovered and "rolled forward" in result.recovered
    assert rig.startvalue("orders") == "60"
    assert pairs(rig.union("orders"), "id") == [(i,) for i in range(1, 61)]
    manifest = rig.lake.read_manifest(db.schema, "orders", "p1")
    assert manifest is not None
    assert _partition_files(rig, "orders", "p1") == {f.name for f in manifest.files}  # no stale part
    assert _staging_leftovers(rig, "orders") == []
    assert rig.store.get_intent("orders") is None


# Found by this suite (regression guard): a replay used to overwrite the ledger entry that
# advanced the watermark, so the next window re-included the old high.
# (the bug: a replay overwrote that entry with advanced=False and the next window was planned
# as FIRST with an inclusive low, loading the old high twice).


def test_window_after_crash_recovery_is_contiguous(rig: Rig, db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the roll-forward rerun (a replay of p1), the next window starts strictly after 60."""
    _table(db, rig, 1, 60)
    _crash_before_first_commit(rig, monkeypatch, "p1")
    rig.task = rig.new_task(owner="worker-b")
    rig.run("orders", "p1")
    _table(db, rig, 61, 70, create=False)
    assert rig.run("orders", "p2").rows == 10
    assert pairs(rig.union("orders"), "id") == [(i,) for i in range(1, 71)]
    assert [e["partitionKey"] for e in rig.store.ledger("orders") if e["advanced"]] == ["p1", "p2"]


def test_engine_failure_mid_stream_leaves_nothing(rig: Rig, db: Db) -> None:
    """An engine dying after writing some rows: nothing visible, staging gone, watermark unchanged.

    Regression guard (found here): on MariaDB with the mysqlclient reader, the abandoned streaming
    result made the snapshot's rollback fail ("commands out of sync"), masking the real error.
    """
    _table(db, rig, 1, 50)
    failing = FailingEngine()
    rig.task = rig.new_task(engine_for=lambda e: failing)
    with pytest.raises(RuntimeError, match="mid-stream"):
        rig.run("orders", "p1")
    assert failing.rows_before_failure > 0  # a batch really was written before the failure
    assert rig.startvalue("orders") == "0"
    assert rig.store.ledger("orders") == []
    assert rig.store.get_intent("orders") is None
    assert rig.lake.list_partitions(db.schema, "orders") == []
    assert rig.union("orders") == []
    assert _staging_leftovers(rig, "orders") == []
    rig.task = rig.new_task()
    assert rig.run("orders", "p1").rows == 50
    assert pairs(rig.union("orders"), "id") == [(i,) for i in range(1, 51)]
    assert rig.startvalue("orders") == "50"


_CHILD = r"""
import os, sys
from datetime import timedelta
from delta_platform.delta_task import DeltaTask, PartitionSpec
from delta_platform.engine import StreamingEngine
from delta_platform.lake import Lake
from delta_platform.source import Source
from delta_platform.store import LocalStore

url, root, dialect = sys.argv[1:4]
kwargs = {"connect_args": {"application_name": "delta_platform_scenarios"}} if dialect == "postgresql" else {}
source = Source(url, **kwargs)
store = LocalStore(os.path.join(root, "control.db"))
lake = Lake(os.path.join(root, "lake"))
task = DeltaTask(store, lambda e: source, lambda e: lake, lambda e: StreamingEngine(),
                 owner="doomed", lease_ttl=timedelta(seconds=600))
store.commit_window = lambda *a, **k: os._exit(137)  # the process dies after publish
task.run("orders", PartitionSpec("p1"))
os._exit(0)
"""


def test_killed_process_after_publish_is_rolled_forward(
    rig: Rig, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real process death between publish and the watermark write: lease expires, rerun loads once."""
    import subprocess
    import sys
    import time

    _table(db, rig, 1, 40)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": repo}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, db.url, str(rig.root), db.name],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert rig.startvalue("orders") == "0"
    assert rig.store.get_intent("orders") is not None
    with pytest.raises(LeaseHeld):  # the dead worker's lease is still live
        rig.run("orders", "p1")
    # The dead worker's lease (10 minutes) runs out: move the store's clock past it.
    monkeypatch.setattr(rig.store, "clock", lambda: time.time() + 601)
    result = rig.run("orders", "p1")
    assert result.recovered and "rolled forward" in result.recovered
    assert rig.startvalue("orders") == "40"
    assert pairs(rig.union("orders"), "id") == [(i,) for i in range(1, 41)]
    manifest = rig.lake.read_manifest(db.schema, "orders", "p1")
    assert manifest is not None
    assert _partition_files(rig, "orders", "p1") == {f.name for f in manifest.files}
    assert _staging_leftovers(rig, "orders") == []
    _table(db, rig, 41, 45, create=False)
    rig.run("orders", "p2")
    assert pairs(rig.partition("orders", "p2"), "id") == [(i,) for i in range(41, 46)]


def test_crash_then_hand_edited_startvalue_withdraws_the_uncommitted_window(
    rig: Rig, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The roll-forward must not commit a window whose low no longer matches a hand-edited startvalue."""
    _table(db, rig, 1, 60)
    _crash_before_first_commit(rig, monkeypatch, "p1")
    assert rig.lake.read_manifest(db.schema, "orders", "p1") is not None  # published, not committed
    rig.store.update_entry("orders", {"startvalue": "30"})  # an operator rewinds by hand meanwhile
    rig.task = rig.new_task(owner="worker-b")
    result = rig.run("orders", "p1")
    assert result.recovered and "withdrew" in result.recovered
    assert result.mode.value == "first" or result.mode.value == "reset"
    assert pairs(rig.union("orders"), "id") == [(i,) for i in range(30, 61)]  # [30, 60], once each
    assert rig.startvalue("orders") == "60"
    assert rig.store.get_intent("orders") is None
    assert _staging_leftovers(rig, "orders") == []


def test_a_reader_that_loses_a_row_publishes_nothing(
    rig: Rig, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source's own count catches a row lost between the server and the writer.

    The loss is injected after the driver (the first batch is short by one row), so only a count
    taken by the server — COUNT(*) in the snapshot, or MySQL's tally of the rows it sent — can
    tell; a count made from what the client received would agree with the loss.
    """
    from delta_platform.errors import VerificationError

    _table(db, rig, 1, 50)
    dropped = _lose_one_row(monkeypatch)
    with pytest.raises(VerificationError, match="read 49, source count 50"):
        rig.run("orders", "p1")
    assert dropped and rig.startvalue("orders") == "0"
    assert rig.lake.list_partitions(db.schema, "orders") == []
    monkeypatch.undo()
    rig.run("orders", "p1")
    assert pairs(rig.partition("orders", "p1"), "id") == [(i,) for i in range(1, 51)]


def test_a_chunk_that_loses_a_row_is_read_again_or_nothing_lands(
    rig: Rig, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunked: the chunk's own count (COUNT(*), the leader's, or MySQL's tally of the rows it
    sent) catches the loss and the chunk is re-read alone; a loss in a chunk counted only with
    the whole window fails verification. Either way no partition lands short of a row."""
    from delta_platform.errors import VerificationError

    db.create("orders", {"id": "pk", "amount": "NUMERIC(12,2)", "note": "text"})
    rig.entry("orders", "orders", "id", "0", chunkRows="10", primaryKey="id", chunkWorkers="2")
    db.insert("orders", [{"id": i, "amount": f"{i}.25", "note": f"n{i}"} for i in range(1, 51)])
    dropped = _lose_one_row(monkeypatch)
    try:
        rig.run("orders", "p1")
    except VerificationError:
        assert rig.lake.list_partitions(db.schema, "orders") == [] and rig.startvalue("orders") == "0"
        monkeypatch.undo()
        rig.run("orders", "p1")
    assert dropped
    assert pairs(rig.partition("orders", "p1"), "id") == [(i,) for i in range(1, 51)]


def _lose_one_row(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make the readers lose the first row of the first non-empty batch, after the driver.

    Every path is covered: Arrow readers pass their batches through `conform`, the value-by-value
    path through `DbapiSnapshot.stream`. Returns the list that receives the lost row's id.
    """
    from delta_platform.source import snapshot

    real, dropped = snapshot.conform, []

    def lossy(batch: Any, schema: Any, *, table: str) -> Any:
        out = real(batch, schema, table=table)
        if not dropped and out.num_rows:
            dropped.append(out.slice(0, 1).to_pylist()[0]["id"])
            return out.slice(1)
        return out

    monkeypatch.setattr(snapshot, "conform", lossy)
    dbapi_stream = _lossy_dbapi_stream(snapshot.DbapiSnapshot.stream, dropped)
    monkeypatch.setattr(snapshot.DbapiSnapshot, "stream", dbapi_stream)
    return dropped


def _lossy_dbapi_stream(real: Any, dropped: list[Any]) -> Any:
    """The value-by-value path (no `conform`) losing the first row of its first batch."""

    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        for batch in real(self, *args, **kwargs):
            if not dropped and batch.num_rows:
                dropped.append(batch.slice(0, 1).to_pylist()[0]["id"])
                batch = batch.slice(1)
            yield batch

    return stream
