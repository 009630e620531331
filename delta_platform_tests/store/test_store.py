"""One suite, both control stores: LocalStore (SQLite file) and DynamoStore (moto server).

Every guarantee the platform leans on is asserted so that the test fails if it breaks:
exact numbers, float refusal, conditional updates, one writer per table, and the atomic
window commit (all of it or none of it).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest

from delta_platform.errors import LeaseHeld, StoreError, WatermarkConflict
from delta_platform.store import (
    ControlStore,
    DynamoStore,
    Lease,
    LocalStore,
    store_from_uri,
)

T = "orders"


class FakeClock:
    """Lease expiry without sleeping: tests move time by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def boto_session(moto_server: str) -> boto3.session.Session:
    """One session for every client: creating sessions is the slow part of boto3."""
    return boto3.session.Session()


@pytest.fixture(params=["local", "dynamodb"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Callable[[], ControlStore]:
    """Factory of stores sharing one backend (several clients of the same tables)."""
    if request.param == "local":
        path = str(tmp_path / "control.db")

        def make() -> ControlStore:
            return LocalStore(path, clock=clock)
    else:
        endpoint = request.getfixturevalue("moto_server")
        session = request.getfixturevalue("boto_session")
        suffix = uuid.uuid4().hex[:10]

        def make() -> ControlStore:
            return DynamoStore(
                f"etlConfiguration_{suffix}",
                f"etlLedger_{suffix}",
                endpoint_url=endpoint,
                region_name="us-east-1",
                session=session,
                clock=clock,
            )

    make().init()
    return make


@pytest.fixture
def store(make_store: Callable[[], ControlStore]) -> ControlStore:
    return make_store()


def entry(name: str = T, **extra: Any) -> dict[str, Any]:
    return {
        "targetTableName": name,
        "activeflag": True,
        "sourceSchema": "public",
        "sourceTable": name,
        "filtercolumn": "id",
        "filteroperator": "gte",
        "startvalue": "0",
        "ouputs3Prefix": "s3://lake/raw",
        **extra,
    }


def window(pk: str, high: str, **extra: Any) -> dict[str, Any]:
    return {"targetTableName": T, "partitionKey": pk, "high": high, "rows": 10, **extra}


# ------------------------------------------------------------------ control items


def test_is_a_control_store_and_init_is_idempotent(store: ControlStore) -> None:
    assert isinstance(store, ControlStore)
    store.put_entry(entry())
    store.init()  # again: must neither fail nor wipe anything
    assert store.get_entry(T) == entry()


def test_put_get_replace_delete(store: ControlStore) -> None:
    assert store.get_entry(T) is None
    store.put_entry(entry(endvalue="9", note=None))
    assert store.get_entry(T) == entry(endvalue="9")  # a top-level None is "absent"
    store.put_entry(entry(startvalue="5"))  # full replace: endvalue is gone
    assert store.get_entry(T) == entry(startvalue="5")
    store.delete_entry(T)
    assert store.get_entry(T) is None
    store.delete_entry(T)  # deleting nothing is fine


def test_put_requires_key(store: ControlStore) -> None:
    with pytest.raises(StoreError):
        store.put_entry({"activeflag": True})


def test_scan_returns_every_item_past_one_megabyte(store: ControlStore) -> None:
    payload = "x" * 4000
    names = {f"t{i:04d}" for i in range(400)}  # ~1.6 MB: DynamoDB needs at least two pages
    for name in names:
        store.put_entry(entry(name, payload=payload))
    seen = [item["targetTableName"] for item in store.scan_entries()]
    assert len(seen) == len(names)
    assert set(seen) == names
    assert all(item["payload"] == payload for item in store.scan_entries())


def test_numbers_round_trip_exactly(store: ControlStore) -> None:
    dec = Decimal("12345678901234567890.1234567890")
    big = 2**120  # 37 digits, far beyond float and int64
    store.put_entry(
        entry(
            startvalue=dec,
            big=big,
            neg=-big,
            whole=Decimal("5.000"),
            flag=False,
            nested={"d": Decimal("-0.000001"), "l": [1, Decimal("2.5"), None, True, "s"]},
        )
    )
    got = store.get_entry(T)
    assert got is not None
    assert got["startvalue"] == dec and isinstance(got["startvalue"], Decimal)
    assert str(got["startvalue"]) == "12345678901234567890.123456789"  # trailing zero trimmed
    assert got["big"] == big and type(got["big"]) is int
    assert got["neg"] == -big and type(got["neg"]) is int
    assert got["whole"] == 5 and type(got["whole"]) is int
    assert got["flag"] is False
    assert got["nested"] == {"d": Decimal("-0.000001"), "l": [1, Decimal("2.5"), None, True, "s"]}
    assert got["nested"]["l"][3] is True  # a bool never turns into 1


def test_dicts_that_look_like_codec_tags_stay_dicts(store: ControlStore) -> None:
    odd = {"$d": "1.5", "$m": {"$d": "2"}, "x": [{"$d": "3"}]}
    store.put_entry(entry(odd=odd))
    assert store.get_entry(T)["odd"] == odd


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (1.5, "floats lose precision"),
        ({"a": [0.1]}, "floats lose precision"),
        (float("nan"), "floats lose precision"),
        (10**40, "38 significant digits"),
        (Decimal("Infinity"), "not finite"),
        (b"bytes", "unsupported type"),
        ({1: "x"}, "not a str"),
    ],
)
def test_unexact_or_unsupported_values_refused(store: ControlStore, bad: Any, why: str) -> None:
    store.put_entry(entry())
    with pytest.raises(StoreError, match=why):
        store.put_entry(entry(startvalue=bad))
    with pytest.raises(StoreError, match=why):
        store.update_entry(T, {"startvalue": bad})
    lease = store.acquire_lease(T, "run-1", 60)
    with pytest.raises(StoreError, match=why):
        store.set_intent(lease, {"attempt": bad})
    with pytest.raises(StoreError, match=why):
        store.commit_window(lease, window("p1", "1", stats=bad), entry_changes={}, expected={})
    with pytest.raises(StoreError, match=why):
        store.commit_window(lease, window("p1", "1"), entry_changes={"x": bad}, expected={})
    assert store.get_entry(T) == entry()
    assert store.ledger(T) == []
    assert store.get_intent(T) is None


def test_update_entry_sets_removes_and_checks(store: ControlStore) -> None:
    store.put_entry(entry(endvalue="9"))
    new = store.update_entry(T, {"startvalue": "7", "endvalue": None, "lastLoadRows": 3})
    assert new == store.get_entry(T)
    assert new["startvalue"] == "7" and new["lastLoadRows"] == 3 and "endvalue" not in new

    new = store.update_entry(T, {"startvalue": "8"}, expected={"startvalue": "7", "endvalue": None})
    assert new["startvalue"] == "8"
    with pytest.raises(WatermarkConflict, match="startvalue"):
        store.update_entry(T, {"startvalue": "9"}, expected={"startvalue": "7"})
    with pytest.raises(WatermarkConflict):
        store.update_entry(T, {"startvalue": "9"}, expected={"lastLoadRows": None})  # present
    with pytest.raises(WatermarkConflict):
        store.update_entry(T, {}, expected={"startvalue": "7"})
    assert store.get_entry(T)["startvalue"] == "8"
    assert store.update_entry(T, {}, expected={"startvalue": "8"})["startvalue"] == "8"


def test_update_entry_numeric_expected_and_refusals(store: ControlStore) -> None:
    store.put_entry(entry(startvalue=Decimal("1.50")))
    store.update_entry(T, {"startvalue": 2}, expected={"startvalue": Decimal("1.5")})
    with pytest.raises(WatermarkConflict):
        store.update_entry(T, {"startvalue": 3}, expected={"startvalue": "2"})  # str is not 2
    with pytest.raises(StoreError):
        store.update_entry(T, {"targetTableName": "other"})
    with pytest.raises(StoreError):
        store.update_entry("missing", {"startvalue": "1"})
    assert store.get_entry("missing") is None  # an update never creates an entry
    assert store.get_entry(T)["startvalue"] == 2


# ------------------------------------------------------------------ leases and intents


def test_lease_is_exclusive_and_expires(store: ControlStore, clock: FakeClock) -> None:
    first = store.acquire_lease(T, "run-A", 30)
    assert isinstance(first, Lease) and first.owner == "run-A"
    assert first.expires_at == pytest.approx(clock.now + 30, abs=0.01)
    with pytest.raises(LeaseHeld, match="run-A") as err:
        store.acquire_lease(T, "run-B", 30)
    assert err.value.table == T
    with pytest.raises(LeaseHeld):
        store.acquire_lease(T, "run-A", 30)  # not re-entrant: a new acquisition is a new writer
    store.acquire_lease("other", "run-B", 30)  # leases are per table

    clock.advance(31)
    second = store.acquire_lease(T, "run-B", 30)  # expired: taken over
    assert second.token != first.token
    with pytest.raises(LeaseHeld):
        store.renew_lease(first, 30)
    store.release_lease(first)  # not ours any more: no error, no effect
    with pytest.raises(LeaseHeld, match="run-B"):
        store.acquire_lease(T, "run-C", 30)
    store.release_lease(second)
    store.acquire_lease(T, "run-C", 30)


def test_renew_extends_and_expired_renew_fails(store: ControlStore, clock: FakeClock) -> None:
    lease = store.acquire_lease(T, "run-A", 10)
    clock.advance(8)
    renewed = store.renew_lease(lease, 10)
    assert renewed.token == lease.token and renewed.expires_at > lease.expires_at
    clock.advance(8)  # past the first expiry, inside the renewed one
    with pytest.raises(LeaseHeld):
        store.acquire_lease(T, "run-B", 10)
    clock.advance(3)
    with pytest.raises(LeaseHeld):
        store.renew_lease(renewed, 10)  # expired is lost, even if nobody took it yet


def test_intent_needs_the_lease(store: ControlStore, clock: FakeClock) -> None:
    lease = store.acquire_lease(T, "run-A", 10)
    intent = {"attemptId": "a1", "partitionKey": "2024-01-01-00:00", "window": {"high": "10"}}
    assert store.get_intent(T) is None
    store.set_intent(lease, intent)
    assert store.get_intent(T) == intent
    store.clear_intent(lease)
    assert store.get_intent(T) is None

    store.set_intent(lease, intent)
    clock.advance(11)
    thief = store.acquire_lease(T, "run-B", 10)
    with pytest.raises(LeaseHeld):
        store.set_intent(lease, {"attemptId": "stale"})
    with pytest.raises(LeaseHeld):
        store.clear_intent(lease)
    assert store.get_intent(T) == intent  # the new holder finds it and recovers
    store.clear_intent(thief)
    assert store.get_intent(T) is None


# ------------------------------------------------------------------ the window commit


def snapshot(store: ControlStore) -> tuple[Any, ...]:
    return store.get_entry(T), store.ledger(T), store.get_intent(T), store.last_committed(T)


def test_commit_window_applies_all_of_it(store: ControlStore) -> None:
    store.put_entry(entry())
    lease = store.acquire_lease(T, "run-A", 60)
    store.set_intent(lease, {"attemptId": "a1"})
    store.commit_window(
        lease,
        window("p1", "10"),
        entry_changes={"startvalue": "10", "startvalueType": "int", "lastLoadRows": 10},
        expected={"startvalue": "0", "startvalueType": None},
    )
    got = store.get_entry(T)
    assert got["startvalue"] == "10" and got["startvalueType"] == "int"
    ledger_entry = store.ledger_entry(T, "p1")
    assert ledger_entry is not None
    assert ledger_entry["high"] == "10" and ledger_entry["seq"] == 1
    assert isinstance(ledger_entry["committedAt"], str)
    assert store.ledger(T) == [ledger_entry]
    assert store.last_committed(T) == ledger_entry
    assert store.get_intent(T) is None
    assert store.ledger_entry(T, "p2") is None


def test_commit_with_wrong_expected_changes_nothing(store: ControlStore) -> None:
    store.put_entry(entry())
    lease = store.acquire_lease(T, "run-A", 60)
    store.set_intent(lease, {"attemptId": "a1"})
    before = snapshot(store)
    for expected in ({"startvalue": "5"}, {"startvalue": None}, {"endvalue": "x"}):
        with pytest.raises(WatermarkConflict):
            store.commit_window(
                lease, window("p1", "10"), entry_changes={"startvalue": "10"}, expected=expected
            )
        assert snapshot(store) == before
    # the failed attempts consumed no sequence number
    store.commit_window(lease, window("p1", "10"), entry_changes={}, expected={"startvalue": "0"})
    assert store.last_committed(T)["seq"] == 1


def test_commit_with_lost_lease_changes_nothing(store: ControlStore, clock: FakeClock) -> None:
    store.put_entry(entry())
    lease = store.acquire_lease(T, "run-A", 10)
    store.set_intent(lease, {"attemptId": "a1"})
    before = snapshot(store)

    def commit(with_lease: Lease) -> None:
        store.commit_window(
            with_lease, window("p1", "10"), entry_changes={"startvalue": "10"},
            expected={"startvalue": "0"},
        )

    clock.advance(11)
    with pytest.raises(LeaseHeld):
        commit(lease)  # expired, not yet taken
    assert snapshot(store) == before
    store.acquire_lease(T, "run-B", 10)
    with pytest.raises(LeaseHeld, match="run-B"):
        commit(lease)  # stolen
    assert snapshot(store) == before
    forged = Lease(T, "run-A", "not-a-token", clock.now + 100)
    with pytest.raises(LeaseHeld):
        commit(forged)
    assert snapshot(store) == before


def test_commit_refuses_missing_entry_and_foreign_ledger(store: ControlStore) -> None:
    lease = store.acquire_lease(T, "run-A", 60)
    with pytest.raises(WatermarkConflict):
        store.commit_window(lease, window("p1", "1"), entry_changes={}, expected={})
    store.put_entry(entry())
    with pytest.raises(StoreError):
        store.commit_window(
            lease, {**window("p1", "1"), "targetTableName": "other"}, entry_changes={}, expected={}
        )
    with pytest.raises(StoreError):
        store.commit_window(
            lease, {"targetTableName": T, "high": "1"}, entry_changes={}, expected={}
        )
    assert store.ledger(T) == [] and store.get_entry(T) == entry()


def test_ledger_order_replay_and_last_committed(store: ControlStore) -> None:
    store.put_entry(entry())
    lease = store.acquire_lease(T, "run-A", 60)
    stamps = {"p2": "2024-01-01T02:00Z", "p1": "2024-01-01T01:00Z", "p3": "2024-01-01T03:00Z"}
    watermark = "0"
    for pk in ("p1", "p2", "p3"):
        store.commit_window(
            lease, window(pk, pk, committedAt=stamps[pk], replays=0),
            entry_changes={"startvalue": pk}, expected={"startvalue": watermark},
        )
        watermark = pk
    assert [e["partitionKey"] for e in store.ledger(T)] == ["p1", "p2", "p3"]
    assert store.last_committed(T)["partitionKey"] == "p3"

    # replay p1: replaced, never moves the watermark, and is now the last commit
    replay = window("p1", "p1", committedAt="2024-01-01T04:00Z", replays=1)
    store.commit_window(lease, replay, entry_changes={}, expected={})
    ledger = store.ledger(T)
    assert [e["partitionKey"] for e in ledger] == ["p2", "p3", "p1"]
    assert [e["seq"] for e in ledger] == [2, 3, 4]
    assert store.ledger_entry(T, "p1")["replays"] == 1
    assert store.last_committed(T) == store.ledger_entry(T, "p1")
    assert store.get_entry(T)["startvalue"] == "p3"
    assert store.ledger("other") == [] and store.last_committed("other") is None


def test_ledger_sorts_ties_by_partition_key(store: ControlStore) -> None:
    store.put_entry(entry())
    lease = store.acquire_lease(T, "run-A", 60)
    for pk in ("b", "c", "a"):
        store.commit_window(
            lease, window(pk, pk, committedAt="2024-01-01T00:00:00Z"), entry_changes={}, expected={}
        )
    assert [e["partitionKey"] for e in store.ledger(T)] == ["a", "b", "c"]
    assert store.last_committed(T)["partitionKey"] == "a"


# ------------------------------------------------------------------ races


def _race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(i) in n threads released together; each result or exception is returned."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - the race outcome is what we assert on
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_racing_commits_exactly_one_wins(make_store: Callable[[], ControlStore]) -> None:
    setup = make_store()
    setup.put_entry(entry())
    lease = setup.acquire_lease(T, "run-A", 60)
    stores = [make_store() for _ in range(8)]  # separate clients/connections

    def commit(i: int) -> str:
        stores[i].commit_window(
            lease, window(f"p{i}", str(i + 1)),
            entry_changes={"startvalue": str(i + 1)}, expected={"startvalue": "0"},
        )
        return f"p{i}"

    results = _race(8, commit)
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1, results
    assert all(isinstance(r, WatermarkConflict) for r in results if not isinstance(r, str))
    ledger = setup.ledger(T)
    assert [e["partitionKey"] for e in ledger] == winners
    assert setup.get_entry(T)["startvalue"] == ledger[0]["high"]


def test_racing_lease_acquisitions_exactly_one_wins(
    make_store: Callable[[], ControlStore],
) -> None:
    stores = [make_store() for _ in range(8)]
    results = _race(8, lambda i: stores[i].acquire_lease(T, f"run-{i}", 60))
    winners = [r for r in results if isinstance(r, Lease)]
    assert len(winners) == 1, results
    assert all(isinstance(r, LeaseHeld) for r in results if not isinstance(r, Lease))


def _commit_in_process(path: str, lease: Lease, i: int, start: Any, out: Any) -> None:
    start.wait()
    try:
        LocalStore(path).commit_window(
            lease, window(f"p{i}", str(i + 1)),
            entry_changes={"startvalue": str(i + 1)}, expected={"startvalue": "0"},
        )
        out.put(("won", i))
    except WatermarkConflict:
        out.put(("lost", i))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out.put((repr(exc), i))


def test_local_store_racing_processes_exactly_one_wins(tmp_path: Path) -> None:
    path = str(tmp_path / "control.db")
    setup = LocalStore(path)
    setup.init()
    setup.put_entry(entry())
    lease = setup.acquire_lease(T, "run-A", 120)
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_commit_in_process, args=(path, lease, i, start, out)) for i in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    outcomes = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert [o for o, _ in outcomes].count("won") == 1, outcomes
    assert [o for o, _ in outcomes].count("lost") == 3, outcomes
    assert len(setup.ledger(T)) == 1


# ------------------------------------------------------------------ configuration


def test_store_from_uri() -> None:
    s = store_from_uri("dynamodb://etlConfiguration?ledger=etlLedger&region=eu-west-1")
    assert isinstance(s, DynamoStore)
    assert (s.control_table, s.ledger_table) == ("etlConfiguration", "etlLedger")
    assert s.client.meta.region_name == "eu-west-1"
    s = store_from_uri("dynamodb://ctl?region=us-east-1&endpoint_url=http://127.0.0.1:5000")
    assert s.ledger_table == "etlLedger" and s.client.meta.endpoint_url == "http://127.0.0.1:5000"
    assert store_from_uri("sqlite:///rel/control.db").path == "rel/control.db"
    assert store_from_uri("sqlite:////abs/control.db").path == "/abs/control.db"
    assert store_from_uri("/tmp/x/control.db").path == "/tmp/x/control.db"
    assert isinstance(store_from_uri("control.db"), LocalStore)
    for bad in ("", "redis://x", "dynamodb://t?bogus=1"):
        with pytest.raises(StoreError):
            store_from_uri(bad)


def test_local_store_without_init_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="init"):
        LocalStore(str(tmp_path / "none.db")).get_entry(T)
