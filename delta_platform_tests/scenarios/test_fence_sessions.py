"""Which sessions the fence waits for: never its own probes, never other databases' sessions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from delta_platform.source import Source
from delta_platform_tests.scenarios.harness import PG_URL, Db, Rig, make_db


@pytest.fixture(name="pg")
def pg_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    d = make_db("postgresql", request, tmp_path)
    try:
        yield d
    finally:
        d.engine.dispose()


# Regression guard (found here, fixed in 63d6599):
PROBE_BUG = (
    "was: Source.probe (source/__init__.py) holds its session in a transaction from MAX() "
    "through the whole bounded drain, and that session is indistinguishable from a writer: on "
    "PostgreSQL it has no application_name (only the ADBC snapshot is tagged 'delta_platform_reader', "
    "snapshot.adbc_uri, and PostgresDialect.open_transactions skips only 'delta_platform%'); on "
    "MariaDB its implicit read-only transaction shows in innodb_trx with trx_is_read_only = 0 and "
    "trx_id 0. So two loads of DIFFERENT tables on one server stall each other's fence (integer "
    "cursors: FenceError after maxTxnWaitSeconds) - seen live while the benchmarks ran"
)


@pytest.mark.parametrize("name", ["postgresql", "mariadb"])
def test_concurrent_load_of_another_table_is_not_blocked_by_a_probe(
        name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Load A sits in its fence wait; load B of another table must not wait for A's probe."""
    db = make_db(name, request, tmp_path)
    for table in ("a", "b"):
        db.create(table, {"id": "pk"})
        db.insert(table, [{"id": i} for i in range(1, 6)])
    rig_a, rig_b = Rig(db, tmp_path / "a"), Rig(db, tmp_path / "b")
    for rig in (rig_a, rig_b):  # sources exactly as the platform builds them (no tag of ours)
        rig.source.dispose()
        rig.source = Source(db.url)
        rig.task = rig.new_task()
    real_drain = rig_a.source.dialect.drain
    in_drain = threading.Event()

    def slow_drain(conn: sa.Connection, max_wait: float, poll: float = 0.2) -> Any:
        in_drain.set()
        time.sleep(3)  # A's probe session waits, in its transaction, like a drain with writers
        return real_drain(conn, max_wait, poll)

    rig_a.source.dialect.drain = slow_drain  # type: ignore[method-assign]
    rig_a.entry("a", "a", "id", "0")
    rig_b.entry("b", "b", "id", "0", maxTxnWaitSeconds="1")
    thread = threading.Thread(target=lambda: rig_a.run("a", "p1"))
    thread.start()
    try:
        assert in_drain.wait(30)
        assert rig_b.run("b", "p1").rows == 5
    finally:
        thread.join(60)
        rig_a.close()
        rig_b.close()


def test_transaction_in_another_database_does_not_block(pg: Db, tmp_path: Path) -> None:
    """A session of another database cannot write these tables: the fence must not wait for it.

    Regression guard (found here): open_transactions once listed every database's transactions.
    """
    pg.create("t", {"id": "pk"})
    pg.insert("t", [{"id": i} for i in range(1, 6)])
    rig = Rig(pg, tmp_path)
    rig.entry("t", "t", "id", "0", maxTxnWaitSeconds="1")
    other = sa.create_engine(sa.make_url(PG_URL).set(database="postgres"), poolclass=sa.pool.NullPool)
    conn = other.connect()
    try:
        conn.exec_driver_sql("SELECT txid_current()")  # an open transaction, in database postgres
        result = rig.run("t", "p1")
        assert result.rows == 5, result.fence
    finally:
        conn.rollback()
        conn.close()
        other.dispose()
        rig.close()


def test_mariadb_fence_sees_a_writer_younger_than_the_innodb_trx_cache(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """INFORMATION_SCHEMA.INNODB_TRX is a cache refilled at most every 0.1 s. A writer that
    took its AUTO_INCREMENT value just before T0 must still be in the drain's first read, or
    its row (below the fenced MAX) commits after the snapshot and is lost."""
    from delta_platform_tests.scenarios.harness import OpenTxn

    db = make_db("mariadb", request, tmp_path)
    db.create("w", {"id": "serial", "note": "text"})
    source = Source(db.url)
    first_reads: list[dict[Any, Any]] = []
    real = source.dialect.open_transactions

    def recorded(conn: sa.Connection) -> dict[Any, Any]:
        got = real(conn)
        if not first_reads:
            first_reads.append(got)
        return got

    source.dialect.open_transactions = recorded  # type: ignore[method-assign]
    with db.engine.connect() as filler:  # fill the cache now, before the writer exists
        filler.exec_driver_sql("SELECT COUNT(*) FROM information_schema.innodb_trx").all()
    txn = OpenTxn(db, f"INSERT INTO {db.qualified('w')} (note) VALUES ('late')")
    try:
        with source.engine.connect() as conn:  # T0 is now: the writer is already open
            drain = source.dialect.drain(conn, 0.3)
        with db.engine.connect() as conn:
            time.sleep(0.15)  # a fresh fill of the cache
            writer = conn.exec_driver_sql(
                "SELECT trx_id FROM information_schema.innodb_trx WHERE trx_rows_modified > 0 "
                "AND trx_mysql_thread_id = %s",
                (txn.conn.connection.driver_connection.thread_id(),),
            ).scalar()
        assert writer is not None
        assert writer in first_reads[0]  # seen at the first read, so waited for
        assert not drain.drained
    finally:
        txn.commit()
        source.dispose()
