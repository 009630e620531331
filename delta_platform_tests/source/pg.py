"""PostgreSQL test tables, exported snapshots and reads for the binary COPY reader tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from delta_platform.source import pg_copy, snapshot
from delta_platform.source.catalog import arrow_type
from delta_platform.source.dialects import READER_APP, PostgresDialect

#: Our own test sessions: named like the platform's so another suite's fence ignores them.
TEST_APP = "delta_platform_pg_copy_tests"


def engine_for(admin: sa.Engine) -> sa.Engine:
    """An unpooled engine on the admin's database (nothing stays open after a test)."""
    return sa.create_engine(
        admin.url, poolclass=sa.pool.NullPool, connect_args={"application_name": TEST_APP}
    )


def create_table(
    engine: sa.Engine, schema: str, name: str, columns: str, rows: list[dict[str, Any]]
) -> tuple[sa.Table, pa.Schema]:
    """CREATE TABLE "schema"."name" (columns), insert `rows`, return it reflected and its catalog schema."""
    with engine.begin() as conn:
        conn.exec_driver_sql("SET TIME ZONE 'UTC'")
        conn.exec_driver_sql(f'CREATE TABLE "{schema}"."{name}" ({columns})')
        table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
        for column in table.columns:
            if isinstance(column.type, sa.JSON):
                column.type.none_as_null = True  # None is SQL NULL, not JSON null
        if rows:
            conn.execute(table.insert(), rows)
    return table, catalog_schema(table)


def catalog_schema(table: sa.Table) -> pa.Schema:
    return pa.schema(
        [
            pa.field(c.name, arrow_type(c.type, "postgresql", table=table.name, column=c.name))
            for c in table.columns
        ]
    )


@contextmanager
def exported(engine: sa.Engine) -> Iterator[tuple[sa.Connection, str]]:
    """A repeatable-read transaction and the id of the snapshot it exported (rolled back after)."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        conn.begin()
        snapshot_id = str(conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar())
        try:
            yield conn, snapshot_id
        finally:
            conn.rollback()


def copy_read(
    engine: sa.Engine,
    snapshot_id: str,
    sql: str,
    schema: pa.Schema,
    settings: list[tuple[str, str]] | None = None,
    *,
    table: str = "t",
) -> pg_copy.CopyRead:
    """A binary COPY of `sql` in the exported snapshot, as the snapshot's stream starts it."""
    return pg_copy.CopyRead(
        snapshot.adbc_uri(engine.url), snapshot_id, sql, settings or [], [], schema, table=table
    )


def read_all(read: pg_copy.CopyRead, rows: int = 65536) -> tuple[pa.Table, list[int]]:
    """Every batch of a started read (closed afterwards) and the batches' sizes."""
    try:
        batches = list(read.batches(rows))
    finally:
        read.close()
    table = pa.Table.from_batches(batches, schema=read.schema) if batches else read.schema.empty_table()
    return table, [b.num_rows for b in batches]


def stream(
    engine: sa.Engine,
    stmt: sa.Select[Any],
    schema: pa.Schema,
    monkeypatch: pytest.MonkeyPatch,
    *,
    mode: str,
    batch_rows: int = 1000,
    table: str = "t",
) -> tuple[pa.Table, str, int | None]:
    """The window read by `AdbcSnapshot.stream` with PG_COPY=`mode`: rows, reader, copied_rows."""
    monkeypatch.setattr(snapshot, "PG_COPY", mode)
    with snapshot.open_snapshot(engine, PostgresDialect(), table=table) as snap:
        batches = list(snap.stream(stmt, schema, batch_rows))
        reader, copied = snap.reader, snap.copied_rows  # type: ignore[attr-defined]
    got = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
    return got, reader, copied


def reader_backends(engine: sa.Engine, marker: str, *, copying: bool = False) -> int:
    """Server sessions of the platform's reader whose last statement mentions `marker`."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app "
        "AND pid <> pg_backend_pid() AND position(:marker in query) > 0"
    )
    if copying:
        sql += " AND query LIKE 'COPY (%'"
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), {"app": READER_APP, "marker": marker}).scalar() or 0)


def reader_queries(engine: sa.Engine, marker: str) -> list[str]:
    """The COPY statements the platform's reader sessions run now, those mentioning `marker`."""
    sql = (
        "SELECT query FROM pg_stat_activity WHERE application_name = :app "
        "AND query LIKE 'COPY (%' AND position(:marker in query) > 0"
    )
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), {"app": READER_APP, "marker": marker}).scalars())


def wait_no_reader_backends(engine: sa.Engine, marker: str, *, copying: bool = False) -> int:
    """Reader sessions still there after up to 3 s (a closed connection's backend exits shortly)."""
    deadline = time.monotonic() + 3.0
    while True:
        left = reader_backends(engine, marker, copying=copying)
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
