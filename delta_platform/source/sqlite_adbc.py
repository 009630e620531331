"""ADBC SQLite through adbc_driver_manager's low-level API, with the few DB-API calls we use.

adbc_driver_manager's DB-API module imports pyarrow.dataset at import time (for one ingest
path we never take), and pyarrow.dataset imports pandas when it is installed: ~20-60 MB of
peak RSS for every SQLite load, and more import time. The low-level objects (AdbcDatabase,
AdbcConnection, AdbcStatement) stream the same Arrow batches through the C data interface.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import pyarrow as pa

#: Milliseconds a statement waits for another connection's lock (as Python's sqlite3 does by
#: default) instead of failing at once with "database is locked": a writer's commit briefly
#: locks readers out, and ADBC sets no timeout of its own.
BUSY_TIMEOUT_MS = 5000


class Connection:
    """One ADBC SQLite connection; autocommit off unless told otherwise, as the DB-API's."""

    def __init__(self, path: str):
        import adbc_driver_manager
        import adbc_driver_sqlite

        self._db = adbc_driver_sqlite.connect(path)
        self._cursors: weakref.WeakSet[Cursor] = weakref.WeakSet()
        try:
            self.adbc_connection = adbc_driver_manager.AdbcConnection(self._db)
            with self.cursor() as cur:
                cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}")
                cur.fetchall()
            self.adbc_connection.set_autocommit(False)
        except BaseException:
            self.close()
            raise

    def cursor(self) -> Cursor:
        cur = Cursor(self.adbc_connection)
        self._cursors.add(cur)
        return cur

    def rollback(self) -> None:
        self.adbc_connection.rollback()

    def close(self) -> None:
        """Close its cursors first: a statement left open keeps the connection (and its read
        lock on the database) alive past this call."""
        for cur in list(self._cursors):
            with contextlib.suppress(Exception):
                cur.close()
        try:
            if hasattr(self, "adbc_connection"):
                self.adbc_connection.close()
        finally:
            self._db.close()


class Cursor:
    """A statement: `execute` (values bound as one Arrow row), then fetch rows or batches."""

    def __init__(self, conn: Any):
        import adbc_driver_manager

        self.adbc_statement = adbc_driver_manager.AdbcStatement(conn)
        self._reader: pa.RecordBatchReader | None = None
        self._closed = False

    def execute(self, sql: str, parameters: tuple[Any, ...] | None = None) -> None:
        self._close_reader()
        self.adbc_statement.set_sql_query(sql)
        if parameters:
            names = [str(i) for i in range(len(parameters))]
            self.adbc_statement.bind(pa.record_batch([pa.array([v]) for v in parameters], names=names))
        handle, _ = self.adbc_statement.execute_query()
        self._reader = pa.RecordBatchReader._import_from_c(handle.address)

    def fetch_record_batch(self) -> pa.RecordBatchReader:
        assert self._reader is not None, "execute first"
        return self._reader

    def fetchall(self) -> list[tuple[Any, ...]]:
        table = self.fetch_record_batch().read_all()
        self._close_reader()
        return [tuple(row.values()) for row in table.to_pylist()]

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self.fetchall()
        return rows[0] if rows else None

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._close_reader()
        finally:
            self.adbc_statement.close()

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
