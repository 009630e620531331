"""Shared helpers for the scenario suite: a real source database, a local store and lake, a task.

A `Db` wraps one source database (SQLite file, PostgreSQL schema or MariaDB database) with DDL
per dialect; `Rig` builds the DeltaTask over a LocalStore and a local Lake in `tmp_path`.
"""

from __future__ import annotations

import atexit
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from delta_platform.delta_task import DeltaTask, LoadResult, PartitionSpec
from delta_platform.engine import StreamingEngine
from delta_platform.engine.base import Engine
from delta_platform.lake import Lake
from delta_platform.source import Source
from delta_platform.store import LocalStore

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
DIALECTS = ("sqlite", "postgresql", "mariadb")

# Column types per dialect, by role.
TYPES: dict[str, dict[str, str]] = {
    "sqlite": {"id": "INTEGER", "pk": "INTEGER PRIMARY KEY", "serial": "INTEGER PRIMARY KEY",
               "int": "INTEGER", "ts": "DATETIME", "tstz": "DATETIME", "text": "TEXT",
               "bin": "BLOB", "date": "DATE", "bool": "BOOLEAN"},
    "postgresql": {"id": "BIGINT", "pk": "BIGINT PRIMARY KEY", "serial": "BIGSERIAL PRIMARY KEY",
                   "int": "BIGINT", "ts": "TIMESTAMP(6)", "tstz": "TIMESTAMPTZ(6)", "text": "TEXT",
                   "bin": "BYTEA", "date": "DATE", "bool": "BOOLEAN"},
    "mariadb": {"id": "BIGINT", "pk": "BIGINT PRIMARY KEY",
                "serial": "BIGINT PRIMARY KEY AUTO_INCREMENT", "int": "BIGINT",
                "ts": "DATETIME(6)", "tstz": "TIMESTAMP(6) NULL", "text": "TEXT",
                "bin": "LONGBLOB", "date": "DATE", "bool": "BOOLEAN"},
}


@dataclass
class Db:
    """One source database under test; writes go through `engine` (pooled off for SQLite)."""

    name: str  # sqlite | postgresql | mariadb
    url: str
    schema: str
    engine: sa.Engine
    path: str | None = None  # the SQLite file

    def q(self, ident: str) -> str:
        """Quote an identifier for this dialect."""
        return self.engine.dialect.identifier_preparer.quote_identifier(ident)

    def qualified(self, table: str) -> str:
        if self.name == "sqlite":
            return self.q(table)
        return f"{self.q(self.schema)}.{self.q(table)}"

    def t(self, role: str) -> str:
        """The DDL type for a column role ('pk', 'ts', 'tstz', ...)."""
        return TYPES[self.name][role]

    def execute(self, sql: str, params: Iterable[dict[str, Any]] | dict[str, Any] | None = None) -> None:
        """Run one statement (executemany for a list of params) in its own committed transaction."""
        with self.engine.begin() as conn:
            if isinstance(params, dict) or params is None:
                conn.execute(sa.text(sql), params or {})
            else:
                rows = list(params)
                if rows:
                    conn.execute(sa.text(sql), rows)

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params or {}).scalar()

    def create(self, table: str, columns: dict[str, str]) -> None:
        """CREATE TABLE with {column: role or literal type}."""
        cols = ", ".join(f"{self.q(c)} {TYPES[self.name].get(r, r)}" for c, r in columns.items())
        suffix = " ENGINE=InnoDB" if self.name == "mariadb" else ""
        self.execute(f"CREATE TABLE {self.qualified(table)} ({cols}){suffix}")

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        cols = list(rows[0])
        names = ", ".join(self.q(c) for c in cols)
        binds = ", ".join(f":{_bind_name(c)}" for c in cols)
        self.execute(f"INSERT INTO {self.qualified(table)} ({names}) VALUES ({binds})",
                     [{_bind_name(k): v for k, v in r.items()} for r in rows])

    def table_exists(self, table: str) -> bool:
        return sa.inspect(self.engine).has_table(table, schema=None if self.name == "sqlite" else self.schema)


def _bind_name(col: str) -> str:
    return "c_" + "".join(ch if ch.isalnum() else "_" for ch in col) + f"_{abs(hash(col)) % 10_000}"


_PG_DB: dict[str, str] = {}


def _pg_scenario_url(admin: sa.Engine) -> str:
    """A database of our own on the PostgreSQL server, created once per test process.

    The fence waits for open transactions of its own database only; a private database keeps
    other users of a shared server (benchmarks, other suites) from stalling these scenarios.
    """
    if "url" not in _PG_DB:
        name = f"delta_scen_{uuid.uuid4().hex[:8]}"
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        _PG_DB["url"] = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

        def drop() -> None:
            engine = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            engine.dispose()

        atexit.register(drop)
    return _PG_DB["url"]


def make_db(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """Build the `Db` for one dialect, using the conftest fixtures for the servers."""
    if name == "sqlite":
        path = str(tmp_path / "source.db")
        url = f"sqlite:///{path}"
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        return Db(name, url, "main", engine, path)
    if name == "postgresql":
        url = _pg_scenario_url(request.getfixturevalue("pg_admin"))
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        schema = f"s_{uuid.uuid4().hex[:10]}"
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')

        def drop() -> None:
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            engine.dispose()

        request.addfinalizer(drop)
        return Db(name, url, schema, engine)
    schema = request.getfixturevalue("mariadb_schema")
    return Db(name, MARIADB_URL, schema, sa.create_engine(MARIADB_URL, poolclass=sa.pool.NullPool))


def make_source(db: Db, **engine_kwargs: Any) -> Source:
    """The Source under test. On PostgreSQL its sessions are tagged like the platform's reader.

    The fence ignores sessions named `delta_platform%`; tagging every session of ours (the core
    tags its probe since 63d6599) keeps this suite from stalling other users of a shared server.
    """
    if db.name == "postgresql":
        engine_kwargs.setdefault("connect_args", {"application_name": "delta_platform_scenarios"})
    return Source(db.url, **engine_kwargs)


@dataclass
class Rig:
    """A DeltaTask over a LocalStore and a local Lake, loading tables of one `Db`."""

    db: Db
    root: Path
    engine_for: Callable[[Any], Engine] = field(default=lambda e: StreamingEngine(batch_rows=1000))
    store: LocalStore = field(init=False)
    lake: Lake = field(init=False)
    source: Source = field(init=False)
    task: DeltaTask = field(init=False)

    def __post_init__(self) -> None:
        self.store = LocalStore(str(self.root / "control.db"))
        self.store.init()
        self.lake = Lake(str(self.root / "lake"))
        self.source = make_source(self.db)
        self.task = self.new_task()

    def new_task(self, owner: str | None = None,
                 engine_for: Callable[[Any], Engine] | None = None) -> DeltaTask:
        """Another task (another worker) over the same store, lake and source."""
        ef = engine_for or (lambda e: self.engine_for(e))
        return DeltaTask(self.store, lambda e: self.source, lambda e: self.lake, ef, owner=owner)

    def entry(self, target: str, table: str, column: str, start: Any = "0", *, operator: str = "gte",
              end: Any = None, **extra: Any) -> dict[str, Any]:
        """Put a control-table entry and return it."""
        item: dict[str, Any] = {
            "targetTableName": target, "activeflag": "true", "sourceSchema": self.db.schema,
            "sourceTable": table, "filtercolumn": column, "filteroperator": operator,
            "ouputs3Prefix": str(self.root / "lake"),
            # Bounded: a shared server may have other sessions' transactions open.
            "maxTxnWaitSeconds": "10",
        }
        if start is not None:
            item["startvalue"] = start
        if end is not None:
            item["endvalue"] = end
        item.update(extra)
        self.store.put_entry(item)
        return item

    def run(self, target: str, key: str, **kw: Any) -> LoadResult:
        start, end = kw.pop("start", None), kw.pop("end", None)
        return self.task.run(target, PartitionSpec(key, start, end), **kw)

    def startvalue(self, target: str) -> Any:
        item = self.store.get_entry(target)
        assert item is not None
        return item.get("startvalue")

    def partition(self, target: str, key: str) -> list[dict[str, Any]]:
        return self.lake.read_partition(self.db.schema, target, key).to_pylist()

    def partitions(self, target: str) -> dict[str, list[dict[str, Any]]]:
        return {k: self.partition(target, k) for k in self.lake.list_partitions(self.db.schema, target)}

    def union(self, target: str) -> list[dict[str, Any]]:
        """Every published row of the table (manifest-listed files only), as dicts."""
        dataset = self.lake.dataset(self.db.schema, target)
        return dataset.to_table().to_pylist() if dataset.files else []

    def table(self, target: str) -> pa.Table:
        return self.lake.dataset(self.db.schema, target).to_table()

    def close(self) -> None:
        self.source.dispose()
        self.db.engine.dispose()


def pairs(rows: Iterable[dict[str, Any]], *cols: str) -> list[tuple[Any, ...]]:
    """Sorted list of column tuples (duplicates kept, so a row loaded twice shows)."""
    return sorted(tuple(r[c] for c in cols) for r in rows)


@pytest.fixture(name="db", params=DIALECTS)
def db_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """The source database, once per dialect."""
    d = make_db(request.param, request, tmp_path)
    try:
        yield d
    finally:
        d.engine.dispose()


@pytest.fixture(name="rig")
def rig_fixture(db: Db, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(db, tmp_path)
    try:
        yield r
    finally:
        r.close()


_SQLITE_HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
conn.execute(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
conn.close()
print("committed", flush=True)
"""


class OpenTxn:
    """A write transaction held open on its own session; SQLite's lives in a subprocess.

    For SQLite the statement must be literal SQL (it runs in the child process).
    """

    def __init__(self, db: Db, sql: str, params: dict[str, Any] | None = None):
        self.db = db
        self.first: Any = None  # the first statement's scalar result (server databases)
        self.then: list[tuple[str, dict[str, Any]]] = []  # run just before the commit
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self.done = False
        if db.name == "sqlite":
            assert db.path is not None and not params
            self.proc = subprocess.Popen([sys.executable, "-c", _SQLITE_HOLDER, db.path, sql],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().strip()
            assert line == "ready", f"holder failed: {line!r}"
        else:
            self.conn = db.engine.connect()
            result = self.conn.execute(sa.text(sql), params or {})
            self.first = result.scalar() if result.returns_rows else None

    def commit(self) -> None:
        with self._lock:
            if self.done:
                return
            self.done = True
            if self.db.name == "sqlite":
                assert self.proc.stdin is not None and self.proc.stdout is not None
                self.proc.stdin.write("commit\n")
                self.proc.stdin.flush()
                assert self.proc.stdout.readline().strip() == "committed"
                self.proc.wait(timeout=30)
            else:
                for sql, params in self.then:
                    self.conn.execute(sa.text(sql), params)
                self.conn.commit()
                self.conn.close()

    def commit_after(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self.commit)
        self._timer.start()

    def join(self) -> None:
        if self._timer is not None:
            self._timer.join()
        self.commit()
