"""The embedded control store: one SQLite file, for `dagster dev` and tests.

Dagster runs steps in subprocesses, so every operation opens its own connection (nothing is
shared across threads or a fork) and every conditional write runs inside `BEGIN IMMEDIATE`:
the condition is checked and the write done while holding SQLite's single write lock, which
is what makes the check-then-write atomic across processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from delta_platform.errors import DeltaError, LeaseHeld, StoreError, WatermarkConflict
from delta_platform.store.base import (
    PARTITION_KEY,
    SEQ,
    Lease,
    apply_changes,
    check_changes,
    check_item,
    entry_key,
    lease_held_message,
    mismatches,
    normalize,
    prepare_ledger_entry,
    sort_ledger,
    to_ms,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (name TEXT PRIMARY KEY, item TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
    name TEXT NOT NULL, partition_key TEXT NOT NULL, seq INTEGER NOT NULL, item TEXT NOT NULL,
    PRIMARY KEY (name, partition_key));
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, token TEXT NOT NULL, expires_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS intents (name TEXT PRIMARY KEY, token TEXT NOT NULL, item TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seqs (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""
_PAGE = 200


# JSON has no Decimal: tag it. A user dict with "$"-keys is wrapped so it can't be misread.
def _enc(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$d": str(value)}
    if isinstance(value, list):
        return [_enc(v) for v in value]
    if isinstance(value, dict):
        body = {k: _enc(v) for k, v in value.items()}
        return {"$m": body} if any(k.startswith("$") for k in value) else body
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, list):
        return [_dec(v) for v in value]
    if isinstance(value, dict):
        if value.keys() == {"$d"}:
            return Decimal(value["$d"])
        if value.keys() == {"$m"}:
            return {k: _dec(v) for k, v in value["$m"].items()}
        return {k: _dec(v) for k, v in value.items()}
    return value


def dumps(item: dict[str, Any]) -> str:
    """Item -> JSON text; ints stay exact (Python's json never rounds them)."""
    return json.dumps(_enc(item), separators=(",", ":"), allow_nan=False)


def loads(text: str) -> dict[str, Any]:
    """JSON text -> item, numbers in the canonical form both stores return."""
    return normalize(_dec(json.loads(text, parse_float=Decimal)))


class LocalStore:
    """ControlStore in one SQLite file (WAL), safe across threads and processes."""

    def __init__(
        self, path: str, *, clock: Callable[[], float] = time.time, busy_timeout_s: float = 30.0
    ):
        self.path = os.fspath(path)
        self.clock = clock
        self.busy_timeout_s = busy_timeout_s

    def __repr__(self) -> str:
        return f"LocalStore({self.path!r})"

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _tx(self, write: bool = False, table: str | None = None) -> Iterator[sqlite3.Connection]:
        """One connection, one transaction; writes take the write lock up front."""
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}", table=table) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            hint = " (was init() called?)" if "no such table" in str(exc) else ""
            raise StoreError(f"{self.path}: {exc}{hint}", table=table) from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _held(self, conn: sqlite3.Connection, lease: Lease) -> None:
        """Raise LeaseHeld unless `lease` is still the table's live lease."""
        row = conn.execute(
            "SELECT owner, token, expires_ms FROM leases WHERE name = ?", (lease.table,)
        ).fetchone()
        if row is None:
            raise LeaseHeld("lease lost: no lease is held", table=lease.table)
        owner, token, expires_ms = row
        if token != lease.token:
            msg = "lease lost: " + lease_held_message(owner, expires_ms)
            raise LeaseHeld(msg, table=lease.table)
        if expires_ms <= to_ms(self.clock()):
            raise LeaseHeld("lease lost: it expired", table=lease.table)

    @staticmethod
    def _entry(conn: sqlite3.Connection, table: str) -> dict[str, Any] | None:
        row = conn.execute("SELECT item FROM entries WHERE name = ?", (table,)).fetchone()
        return loads(row[0]) if row else None

    # ------------------------------------------------------------------ control items
    def init(self) -> None:
        """Create the file and tables; idempotent. WAL lets readers run beside a writer."""
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot initialise {self.path}: {exc}") from exc

    def put_entry(self, item: dict[str, Any]) -> None:
        name = entry_key(item)
        text = dumps(check_item(item, table=name))
        with self._tx(write=True, table=name) as conn:
            conn.execute("INSERT OR REPLACE INTO entries (name, item) VALUES (?, ?)", (name, text))

    def get_entry(self, table: str) -> dict[str, Any] | None:
        with self._tx(table=table) as conn:
            return self._entry(conn, table)

    def scan_entries(self) -> Iterator[dict[str, Any]]:
        """Page by key, one short read per page, so no transaction stays open while iterating."""
        after = ""
        while True:
            with self._tx() as conn:
                rows = conn.execute(
                    "SELECT name, item FROM entries WHERE name > ? ORDER BY name LIMIT ?",
                    (after, _PAGE),
                ).fetchall()
            for _, text in rows:
                yield loads(text)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    def update_entry(
        self, table: str, changes: dict[str, Any], *, expected: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        changes = check_changes(table, changes)
        with self._tx(write=True, table=table) as conn:
            item = self._entry(conn, table)
            if item is None:
                raise StoreError("no control entry to update", table=table)
            problems = mismatches(item, expected or {})
            if problems:
                raise WatermarkConflict("condition failed: " + "; ".join(problems), table=table)
            new = apply_changes(item, changes)
            conn.execute("UPDATE entries SET item = ? WHERE name = ?", (dumps(new), table))
        return normalize(new)

    def delete_entry(self, table: str) -> None:
        with self._tx(write=True, table=table) as conn:
            conn.execute("DELETE FROM entries WHERE name = ?", (table,))

    # ------------------------------------------------------------------ leases and intents
    def acquire_lease(self, table: str, owner: str, ttl_seconds: float) -> Lease:
        with self._tx(write=True, table=table) as conn:
            now = self.clock()
            row = conn.execute(
                "SELECT owner, expires_ms FROM leases WHERE name = ?", (table,)
            ).fetchone()
            if row is not None and row[1] > to_ms(now):
                raise LeaseHeld(lease_held_message(*row), table=table)
            expires_ms = to_ms(now + ttl_seconds)
            token = uuid.uuid4().hex
            conn.execute(
                "INSERT OR REPLACE INTO leases (name, owner, token, expires_ms) VALUES (?,?,?,?)",
                (table, owner, token, expires_ms),
            )
        return Lease(table, owner, token, expires_ms / 1000)

    def renew_lease(self, lease: Lease, ttl_seconds: float) -> Lease:
        with self._tx(write=True, table=lease.table) as conn:
            self._held(conn, lease)
            expires_ms = to_ms(self.clock() + ttl_seconds)
            conn.execute(
                "UPDATE leases SET expires_ms = ? WHERE name = ?", (expires_ms, lease.table)
            )
        return Lease(lease.table, lease.owner, lease.token, expires_ms / 1000)

    def release_lease(self, lease: Lease) -> None:
        with self._tx(write=True, table=lease.table) as conn:
            conn.execute(
                "DELETE FROM leases WHERE name = ? AND token = ?", (lease.table, lease.token)
            )

    def set_intent(self, lease: Lease, intent: dict[str, Any]) -> None:
        text = dumps(check_item(intent, table=lease.table))
        with self._tx(write=True, table=lease.table) as conn:
            self._held(conn, lease)
            conn.execute(
                "INSERT OR REPLACE INTO intents (name, token, item) VALUES (?, ?, ?)",
                (lease.table, lease.token, text),
            )

    def get_intent(self, table: str) -> dict[str, Any] | None:
        with self._tx(table=table) as conn:
            row = conn.execute("SELECT item FROM intents WHERE name = ?", (table,)).fetchone()
        return loads(row[0]) if row else None

    def clear_intent(self, lease: Lease) -> None:
        with self._tx(write=True, table=lease.table) as conn:
            self._held(conn, lease)
            conn.execute("DELETE FROM intents WHERE name = ?", (lease.table,))

    # ------------------------------------------------------------------ the commit and ledger
    def commit_window(
        self,
        lease: Lease,
        ledger_entry: dict[str, Any],
        *,
        entry_changes: dict[str, Any],
        expected: dict[str, Any],
    ) -> None:
        """Lease check, entry condition, entry update, ledger put, seq, intent clear: one txn."""
        table = lease.table
        changes = check_changes(table, entry_changes)
        try:
            with self._tx(write=True, table=table) as conn:
                entry = prepare_ledger_entry(lease, ledger_entry, self.clock())
                self._held(conn, lease)
                item = self._entry(conn, table)
                problems = mismatches(item, expected)
                if problems:
                    raise WatermarkConflict(
                        "commit refused: " + "; ".join(problems), table=table
                    )
                row = conn.execute("SELECT seq FROM seqs WHERE name = ?", (table,)).fetchone()
                seq = (row[0] if row else 0) + 1
                entry[SEQ] = seq
                conn.execute("INSERT OR REPLACE INTO seqs (name, seq) VALUES (?, ?)", (table, seq))
                if changes:
                    new = apply_changes(item, changes)
                    conn.execute("UPDATE entries SET item = ? WHERE name = ?", (dumps(new), table))
                conn.execute(
                    "INSERT OR REPLACE INTO ledger (name, partition_key, seq, item) "
                    "VALUES (?, ?, ?, ?)",
                    (table, entry[PARTITION_KEY], seq, dumps(entry)),
                )
                conn.execute("DELETE FROM intents WHERE name = ?", (table,))
        except DeltaError:
            raise
        except Exception as exc:  # anything else mid-commit: rolled back, reported as ours
            raise StoreError(f"commit failed: {exc}", table=table) from exc

    def ledger(self, table: str) -> list[dict[str, Any]]:
        with self._tx(table=table) as conn:
            rows = conn.execute("SELECT item FROM ledger WHERE name = ?", (table,)).fetchall()
        return sort_ledger([loads(r[0]) for r in rows])

    def ledger_entry(self, table: str, partition_key: str) -> dict[str, Any] | None:
        with self._tx(table=table) as conn:
            row = conn.execute(
                "SELECT item FROM ledger WHERE name = ? AND partition_key = ?",
                (table, partition_key),
            ).fetchone()
        return loads(row[0]) if row else None

    def last_committed(self, table: str) -> dict[str, Any] | None:
        with self._tx(table=table) as conn:
            row = conn.execute(
                "SELECT item FROM ledger WHERE name = ? ORDER BY seq DESC LIMIT 1", (table,)
            ).fetchone()
        return loads(row[0]) if row else None


__all__ = ["LocalStore"]
