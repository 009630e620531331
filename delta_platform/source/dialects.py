"""What differs per database: the clock, open transactions, bound values and the snapshot reader."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from delta_platform.core.watermark import Kind, Watermark

READER_APP = "delta_platform_reader"  # our own read-only sessions, ignored by the fence


@dataclass(frozen=True)
class Drain:
    """How waiting out the transactions open at T0 went."""

    drained: bool
    open_at_start: int
    waited_seconds: float
    oldest_start: datetime | None  # UTC; set when not drained and the database shows it
    supported: bool = True


class SourceDialect:
    """Base: the statements a dialect needs; subclasses override only what differs."""

    name = "generic"

    def clock(self) -> sa.ColumnElement[Any]:
        return sa.func.current_timestamp()

    def parse_clock(self, value: Any) -> datetime:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def session_setup(self) -> list[str]:
        return []

    def open_transactions(self, conn: sa.Connection) -> dict[Any, datetime | None]:
        """Transactions that may still write, keyed so that a later poll can recognise them."""
        raise NotImplementedError

    def drain(self, conn: sa.Connection, max_wait: float, poll: float = 0.2) -> Drain:
        """Wait (bounded) until every transaction open now has ended."""
        started = time.monotonic()
        conn.rollback()  # poll in fresh transactions: PostgreSQL freezes pg_stat_activity per transaction
        at_start = self.open_transactions(conn)
        pending = dict(at_start)
        while pending:
            waited = time.monotonic() - started
            if waited >= max_wait:
                starts = [s for s in pending.values() if s is not None]
                return Drain(False, len(at_start), waited, min(starts) if starts else None)
            time.sleep(min(poll, max(0.0, max_wait - waited)))
            conn.rollback()
            now = self.open_transactions(conn)
            pending = {k: v for k, v in pending.items() if k in now}
        return Drain(True, len(at_start), time.monotonic() - started, None)

    def bind(self, mark: Watermark, column: sa.ColumnElement[Any]) -> Any:
        """How a watermark value is bound for this driver (always a parameter, never SQL text)."""
        return mark.value


class PostgresDialect(SourceDialect):
    name = "postgresql"

    def clock(self) -> sa.ColumnElement[Any]:
        return sa.func.clock_timestamp()

    def session_setup(self) -> list[str]:
        return ["SET TIME ZONE 'UTC'"]

    def open_transactions(self, conn: sa.Connection) -> dict[Any, datetime | None]:
        # Every open client transaction, written yet or not: now() is the transaction's start,
        # so one that has not inserted yet can still add rows stamped before T0.
        rows = conn.execute(
            sa.text(
                "SELECT pid, xact_start FROM pg_stat_activity WHERE xact_start IS NOT NULL "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND datname = current_database() "
                "AND coalesce(application_name, '') NOT LIKE 'delta_platform%'"
            )
        ).all()
        return {(r[0], r[1]): r[1] for r in rows}

    def bind(self, mark: Watermark, column: sa.ColumnElement[Any]) -> Any:
        # ADBC binds text; the cast gives the comparison the column's exact type. Text to
        # timestamp casts are only STABLE, so PostgreSQL would re-run them for every row of a
        # scan; as a scalar subquery (an InitPlan) the cast runs once per query.
        return sa.select(sa.cast(sa.literal(mark.encode(), sa.Text), column.type)).scalar_subquery()


#: INFORMATION_SCHEMA.INNODB_TRX is served from a cache that is refilled only when its last fill
#: is over 0.1 s old (trx0i_s.cc, MySQL and MariaDB alike). A read right after T0 may return a
#: fill from before T0 that misses a writer which took its AUTO_INCREMENT value just before T0:
#: its row, below the fenced MAX, would then commit after the snapshot and be lost (seen in CI:
#: test_sequence_late_commit_lands_once[mariadb], with another test polling the table). Waiting
#: this long after T0 makes the first read's fill later than T0.
INNODB_TRX_CACHE_S = 0.12


class MySQLDialect(SourceDialect):
    name = "mysql"

    def clock(self) -> sa.ColumnElement[Any]:
        return sa.func.utc_timestamp(6)

    def session_setup(self) -> list[str]:
        return ["SET SESSION time_zone = '+00:00'"]

    def open_transactions(self, conn: sa.Connection) -> dict[Any, datetime | None]:
        rows = conn.execute(
            sa.text(
                # Only transactions that have written or locked: AUTO_INCREMENT and NOW() values
                # are assigned at statement time, so one that has not written yet can only add
                # rows above MAX at T0. Consistent reads (other loads' probes) never block.
                "SELECT trx_id, trx_started FROM information_schema.innodb_trx "
                "WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_is_read_only = 0 "
                "AND (trx_rows_modified > 0 OR trx_lock_structs > 0)"
            )
        ).all()
        return {r[0]: (r[1].replace(tzinfo=UTC) if r[1] else None) for r in rows}

    def drain(self, conn: sa.Connection, max_wait: float, poll: float = 0.2) -> Drain:
        """As every dialect's, after the INNODB_TRX cache can no longer predate T0 (the MAX read
        the caller has just made)."""
        time.sleep(INNODB_TRX_CACHE_S)
        drain = super().drain(conn, max(0.0, max_wait - INNODB_TRX_CACHE_S), poll)
        return replace(drain, waited_seconds=drain.waited_seconds + INNODB_TRX_CACHE_S)

    def bind(self, mark: Watermark, column: sa.ColumnElement[Any]) -> Any:
        if mark.kind is Kind.TIMESTAMPTZ:
            return mark.value.astimezone(UTC).replace(tzinfo=None)  # session is UTC
        return mark.value


class SQLiteDialect(SourceDialect):
    name = "sqlite"

    def clock(self) -> sa.ColumnElement[Any]:
        return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now")

    def open_transactions(self, conn: sa.Connection) -> dict[Any, datetime | None]:
        return {}

    def drain(self, conn: sa.Connection, max_wait: float, poll: float = 0.2) -> Drain:
        # SQLite has one writer at a time: taking the write lock waits out the current one.
        path = conn.engine.url.database
        if not path or path == ":memory:":
            return Drain(True, 0, 0.0, None, supported=False)
        started = time.monotonic()
        probe = sqlite3.connect(path, timeout=max_wait, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return Drain(True, 0, time.monotonic() - started, None)
        except sqlite3.OperationalError:
            return Drain(False, 1, time.monotonic() - started, None)
        finally:
            probe.close()

    def bind(self, mark: Watermark, column: sa.ColumnElement[Any]) -> Any:
        if mark.kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.DATE, Kind.DECIMAL):
            return mark.encode()  # compared as SQLite stores them: ISO text, decimal text
        return mark.value


class OracleDialect(SourceDialect):
    name = "oracle"

    def clock(self) -> sa.ColumnElement[Any]:
        return sa.func.sys_extract_utc(sa.literal_column("SYSTIMESTAMP"))

    def session_setup(self) -> list[str]:
        return ["ALTER SESSION SET TIME_ZONE = 'UTC'"]

    def open_transactions(self, conn: sa.Connection) -> dict[Any, datetime | None]:
        rows = conn.execute(
            sa.text("SELECT xidusn || '.' || xidslot || '.' || xidsqn, start_date FROM v$transaction")
        ).all()
        return {r[0]: (r[1].replace(tzinfo=UTC) if r[1] else None) for r in rows}


DIALECTS: dict[str, type[SourceDialect]] = {
    "postgresql": PostgresDialect,
    "mysql": MySQLDialect,
    "mariadb": MySQLDialect,
    "sqlite": SQLiteDialect,
    "oracle": OracleDialect,
}


def dialect_for(engine: sa.Engine) -> SourceDialect:
    return DIALECTS.get(engine.dialect.name, SourceDialect)()


@contextmanager
def timed() -> Iterator[list[float]]:
    box = [0.0]
    t0 = time.monotonic()
    yield box
    box[0] = time.monotonic() - t0


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)
