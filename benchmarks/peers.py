"""The peers: tools a data engineer would use instead of delta_platform, one function each.

Each peer reads the window `low < updated_at <= high` and writes Parquet (snappy) under
`ctx.out_dir`; it returns summarize(out_dir), i.e. rows and the exact sum(amount) read back
from its own output, the bytes written and what the output loses.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import (
    BENCH,
    EXACT_SCHEMA,
    ROW_GROUP_ROWS,
    TABLE,
    ParquetSink,
    PeerResult,
    Window,
    mysql_params,
    plain_url,
    select_sql,
    sqlite_path,
    summarize,
)

BATCH_ROWS = 100_000


@dataclass
class Ctx:
    """Everything a peer needs: database, URL, output folder, window."""

    db: str
    url: str
    out_dir: str
    window: Window

    @property
    def out_file(self) -> str:
        """Single-file output path."""
        return os.path.join(self.out_dir, f"{TABLE}.parquet")


@dataclass
class Peer:
    """A benchmark method: its function, the modules to import before the clock starts."""

    name: str
    fn: Callable[[Ctx], PeerResult]
    imports: tuple[str, ...] = ()
    note: str = ""
    wire_limit: bool = False


REGISTRY: dict[str, dict[str, Peer]] = {"postgres": {}, "mariadb": {}, "sqlite": {}}


def peer(
    db: str, name: str, imports: Iterable[str] = (), note: str = "", wire_limit: bool = False
) -> Callable[[Callable[[Ctx], PeerResult]], Callable]:
    """Register a peer function for `db` under `name`."""

    def deco(fn: Callable[[Ctx], PeerResult]) -> Callable[[Ctx], PeerResult]:
        REGISTRY[db][name] = Peer(name, fn, tuple(imports), note, wire_limit)
        return fn

    return deco


# --- helpers ------------------------------------------------------------------------------


def write_stream(batches: Iterable[pa.RecordBatch], path: str, cast: pa.Schema | None = None) -> None:
    """Write batches (optionally cast to `cast`) into one Parquet file with large row groups."""
    sink: ParquetSink | None = None
    try:
        for batch in batches:
            if cast is not None:
                batch = batch.cast(cast)
            if sink is None:
                sink = ParquetSink(path, batch.schema)
            sink.write(batch)
    finally:
        if sink is not None:
            sink.close()


def threaded(batches: Iterator[pa.RecordBatch], depth: int = 4) -> Iterator[pa.RecordBatch]:
    """Run the producer `batches` in a thread so reading overlaps the consumer's work."""
    q: queue.Queue[Any] = queue.Queue(depth)
    done = object()

    def pump() -> None:
        try:
            for b in batches:
                q.put(b)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)
        q.put(done)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
    t.join()


def rows_to_batch(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    """Transpose DB-API rows and build each column with its explicit Arrow type."""
    cols = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays(
        [pa.array(c, f.type) for c, f in zip(cols, schema, strict=True)], schema=schema
    )


def cursor_batches(
    cur: Any,
    schema: pa.Schema,
    size: int = BATCH_ROWS,
    fix: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
) -> Iterator[pa.RecordBatch]:
    """fetchmany loop → Arrow batches."""
    while rows := cur.fetchmany(size):
        batch = rows_to_batch(rows, schema)
        yield fix(batch) if fix else batch


def _pandas_out(df: Any, ctx: Ctx) -> PeerResult:
    df.to_parquet(ctx.out_file, engine="pyarrow", compression="snappy", index=False)
    return summarize(ctx.out_dir)


def _dlt(ctx: Ctx, backend: str, credentials: str, schema: str | None) -> PeerResult:
    """dlt sql_table → filesystem destination (local folder), Parquet, dev mode."""
    import dlt
    from dlt.sources.sql_database import sql_table

    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    low, high = ctx.window.low, ctx.window.high
    if ctx.db == "sqlite":  # SQLAlchemy reads the TEXT column back as naive datetimes
        import datetime as dt

        low, high = dt.datetime.fromisoformat(low), dt.datetime.fromisoformat(high)
    inc = dlt.sources.incremental(
        "updated_at", initial_value=low, end_value=high, range_start="open", range_end="closed"
    )
    source = sql_table(
        credentials=credentials,
        table=TABLE,
        schema=schema,
        backend=backend,
        incremental=inc,
        chunk_size=BATCH_ROWS,
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{backend}",
        pipelines_dir=os.path.join(ctx.out_dir, ".dlt_pipelines"),
        destination=dlt.destinations.filesystem(bucket_url=os.path.join(ctx.out_dir, "lake")),
        dataset_name="bench",
        dev_mode=True,
    )
    pipeline.run(source, loader_file_format="parquet")
    return summarize(os.path.join(ctx.out_dir, "lake"))


# --- PostgreSQL ---------------------------------------------------------------------------


@peer(
    "postgres",
    "copy_binary_discard",
    ["psycopg"],
    wire_limit=True,
    note="wire limit: COPY (SELECT ...) TO STDOUT binary, bytes discarded",
)
def pg_copy_discard(ctx: Ctx) -> PeerResult:
    """Read the window with COPY binary and throw the bytes away: the wire limit."""
    import psycopg

    with psycopg.connect(plain_url(ctx.url)) as conn, conn.cursor() as cur:
        sql = select_sql("postgres", window=ctx.window)
        with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)") as cp:
            total = 0
            for data in cp:
                total += len(data)
        rows = cur.rowcount
    return PeerResult(rows=rows, amount_sum=None, out_bytes=0, loses="no output (wire limit)")


def _adbc_pg_reader(ctx: Ctx) -> tuple[Any, Any, Any]:
    import adbc_driver_postgresql.dbapi as adbc

    conn = adbc.connect(plain_url(ctx.url))
    cur = conn.cursor()
    cur.execute(select_sql("postgres", window=ctx.window))
    return conn, cur, cur.fetch_record_batch()


@peer("postgres", "adbc_stream", ["adbc_driver_postgresql.dbapi"])
def pg_adbc(ctx: Ctx) -> PeerResult:
    """ADBC PostgreSQL record-batch stream written as it arrives."""
    conn, cur, reader = _adbc_pg_reader(ctx)
    try:
        write_stream(reader, ctx.out_file)
    finally:
        cur.close()
        conn.close()
    return summarize(ctx.out_dir)


@peer("postgres", "adbc_cast_thread", ["adbc_driver_postgresql.dbapi"])
def pg_adbc_cast_thread(ctx: Ctx) -> PeerResult:
    """ADBC stream fetched in a thread, cast to the catalog types, large row groups."""
    conn, cur, reader = _adbc_pg_reader(ctx)
    try:
        write_stream(threaded(iter(reader)), ctx.out_file, cast=EXACT_SCHEMA)
    finally:
        cur.close()
        conn.close()
    return summarize(ctx.out_dir)


def _cx(ctx: Ctx, conn: str, *, our_writer: bool = False, **kw: Any) -> PeerResult:
    """connectorx, written with pyarrow's defaults or (`our_writer`) delta_platform's dictionary choice."""
    import connectorx as cx

    sql = select_sql(ctx.db, window=ctx.window)
    if kw.get("return_type") == "arrow_stream":
        write_stream(cx.read_sql(conn, sql, **kw), ctx.out_file)
    else:
        table = cx.read_sql(conn, sql, return_type="arrow", **kw)
        extra: dict[str, Any] = {}
        if our_writer:
            from delta_platform.manifest import dictionary_columns

            extra["use_dictionary"] = dictionary_columns(table)
        pq.write_table(table, ctx.out_file, compression="snappy", row_group_size=ROW_GROUP_ROWS, **extra)
    return summarize(ctx.out_dir)


def _cx_url(ctx: Ctx) -> str:
    if ctx.db == "sqlite":
        return f"sqlite://{sqlite_path(ctx.url)}"
    return plain_url(ctx.url, "postgresql" if ctx.db == "postgres" else "mysql")


def _register_cx(db: str) -> None:
    @peer(db, "connectorx_arrow", ["connectorx"])
    def cx_arrow(ctx: Ctx) -> PeerResult:
        """connectorx into one Arrow table."""
        return _cx(ctx, _cx_url(ctx))

    @peer(db, "connectorx_2_partitions", ["connectorx"])
    def cx_arrow_2p(ctx: Ctx) -> PeerResult:
        """connectorx, two partitions on id."""
        return _cx(ctx, _cx_url(ctx), partition_on="id", partition_num=2)

    @peer(db, "connectorx_2_partitions_our_writer", ["connectorx", "delta_platform.manifest"])
    def cx_arrow_2p_our_writer(ctx: Ctx) -> PeerResult:
        """connectorx, two partitions, Parquet dictionaries chosen as delta_platform chooses them."""
        return _cx(ctx, _cx_url(ctx), our_writer=True, partition_on="id", partition_num=2)


for _db in ("postgres", "mariadb", "sqlite"):
    _register_cx(_db)


@peer("postgres", "connectorx_arrow_stream", ["connectorx"])
def pg_cx_stream(ctx: Ctx) -> PeerResult:
    """connectorx record-batch stream."""
    return _cx(ctx, _cx_url(ctx), return_type="arrow_stream", batch_size=BATCH_ROWS)


@peer("postgres", "psycopg_server_cursor", ["psycopg"])
def pg_psycopg(ctx: Ctx) -> PeerResult:
    """psycopg named (server-side) cursor, fetchmany → column-wise Arrow."""
    import psycopg

    with psycopg.connect(plain_url(ctx.url)) as conn, conn.cursor(name="bench") as cur:
        cur.itersize = BATCH_ROWS
        cur.execute(select_sql("postgres", "%s"), (ctx.window.low, ctx.window.high))
        write_stream(cursor_batches(cur, EXACT_SCHEMA), ctx.out_file)
    return summarize(ctx.out_dir)


@peer("postgres", "pandas", ["pandas", "sqlalchemy", "psycopg"])
def pg_pandas(ctx: Ctx) -> PeerResult:
    """pandas.read_sql over SQLAlchemy, then to_parquet."""
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(ctx.url)
    df = pd.read_sql(sa.text(select_sql("postgres", window=ctx.window)), engine)
    engine.dispose()
    return _pandas_out(df, ctx)


@peer("postgres", "dlt_pyarrow", ["dlt", "dlt.sources.sql_database", "psycopg"])
def pg_dlt_arrow(ctx: Ctx) -> PeerResult:
    """dlt sql_table, pyarrow backend."""
    return _dlt(ctx, "pyarrow", ctx.url, BENCH)


@peer("postgres", "dlt_sqlalchemy", ["dlt", "dlt.sources.sql_database", "psycopg"])
def pg_dlt_sqla(ctx: Ctx) -> PeerResult:
    """dlt sql_table, its default sqlalchemy backend."""
    return _dlt(ctx, "sqlalchemy", ctx.url, BENCH)


# --- SQLite -------------------------------------------------------------------------------


def _sqlite_fix(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Type repair: REAL amount → decimal(12,2), TEXT timestamps → timestamp[us, UTC]."""
    arrays = []
    for col, f in zip(batch.columns, EXACT_SCHEMA, strict=True):
        if pa.types.is_timestamp(f.type) and not pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us")).cast(f.type)
        arrays.append(col.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=EXACT_SCHEMA)


def _adbc_sqlite(ctx: Ctx, batch_rows: int | None, hint: str) -> Iterator[pa.RecordBatch]:
    import adbc_driver_sqlite.dbapi as adbc

    with adbc.connect(sqlite_path(ctx.url)) as conn, conn.cursor() as cur:
        if batch_rows:
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
        cur.execute(select_sql("sqlite", window=ctx.window, hint=hint))
        yield from cur.fetch_record_batch()


@peer("sqlite", "adbc_default", ["adbc_driver_sqlite.dbapi"])
def sqlite_adbc(ctx: Ctx) -> PeerResult:
    """ADBC SQLite as shipped: 1,024-row batches, inferred types."""
    write_stream(_adbc_sqlite(ctx, None, ""), ctx.out_file)
    return summarize(ctx.out_dir)


@peer("sqlite", "adbc_tuned", ["adbc_driver_sqlite.dbapi"])
def sqlite_adbc_tuned(ctx: Ctx) -> PeerResult:
    """ADBC SQLite, 100k-row batches, table scan (NOT INDEXED), type repair, fetch thread."""
    batches = threaded(_adbc_sqlite(ctx, BATCH_ROWS, " NOT INDEXED"))
    write_stream((_sqlite_fix(b) for b in batches), ctx.out_file)
    return summarize(ctx.out_dir)


@peer("sqlite", "sqlite3_cursor", ["sqlite3"])
def sqlite_cursor(ctx: Ctx) -> PeerResult:
    """sqlite3 cursor, fetchmany → column-wise Arrow with explicit types, type repair."""
    import sqlite3

    raw = pa.schema(
        [
            f
            if f.name not in ("amount", "created_at", "updated_at")
            else pa.field(f.name, pa.float64() if f.name == "amount" else pa.string())
            for f in EXACT_SCHEMA
        ]
    )
    conn = sqlite3.connect(sqlite_path(ctx.url))
    try:
        cur = conn.execute(select_sql("sqlite", "?"), (ctx.window.low, ctx.window.high))
        write_stream(cursor_batches(cur, raw, fix=_sqlite_fix), ctx.out_file)
    finally:
        conn.close()
    return summarize(ctx.out_dir)


@peer("sqlite", "pandas", ["pandas", "sqlalchemy"])
def sqlite_pandas(ctx: Ctx) -> PeerResult:
    """pandas.read_sql over SQLAlchemy, then to_parquet."""
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(ctx.url)
    df = pd.read_sql(sa.text(select_sql("sqlite", window=ctx.window)), engine)
    engine.dispose()
    return _pandas_out(df, ctx)


@peer("sqlite", "dlt_pyarrow", ["dlt", "dlt.sources.sql_database"])
def sqlite_dlt(ctx: Ctx) -> PeerResult:
    """dlt sql_table, pyarrow backend."""
    return _dlt(ctx, "pyarrow", ctx.url, None)


# --- MariaDB ------------------------------------------------------------------------------


def _mysqlclient(ctx: Ctx) -> Any:
    import MySQLdb

    p = mysql_params(ctx.url)
    conn = MySQLdb.connect(
        host=p["host"],
        port=p["port"],
        user=p["user"],
        password=p["password"],
        database=p["database"],
        charset="utf8mb4",
    )
    conn.query(b"SET time_zone = '+00:00'")
    return conn


def _naive_utc(schema: pa.Schema) -> pa.Schema:
    """The schema with naive timestamps (what Python drivers hand back for TIMESTAMP)."""
    return pa.schema(
        [pa.field(f.name, pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f for f in schema]
    )


@peer("mariadb", "pymysql_sscursor", ["pymysql"])
def maria_pymysql(ctx: Ctx) -> PeerResult:
    """pymysql SSCursor, fetchmany → column-wise Arrow with explicit types."""
    import pymysql
    import pymysql.cursors

    conn = pymysql.connect(**mysql_params(ctx.url), cursorclass=pymysql.cursors.SSCursor)
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            cur.execute(select_sql("mariadb", "%s"), (ctx.window.low, ctx.window.high))
            write_stream(cursor_batches(cur, _naive_utc(EXACT_SCHEMA)), ctx.out_file, cast=EXACT_SCHEMA)
        conn.commit()
    finally:
        conn.close()
    return summarize(ctx.out_dir)


@peer("mariadb", "mysqlclient_sscursor", ["MySQLdb"])
def maria_mysqlclient(ctx: Ctx) -> PeerResult:
    """mysqlclient SSCursor (default converters), fetchmany → column-wise Arrow."""
    import MySQLdb.cursors

    conn = _mysqlclient(ctx)
    try:
        cur = conn.cursor(MySQLdb.cursors.SSCursor)
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        cur.execute(select_sql("mariadb", "%s"), (ctx.window.low, ctx.window.high))
        write_stream(cursor_batches(cur, _naive_utc(EXACT_SCHEMA)), ctx.out_file, cast=EXACT_SCHEMA)
        cur.close()
        conn.commit()
    finally:
        conn.close()
    return summarize(ctx.out_dir)


def _fast(ctx: Ctx, thread: bool, packed: bool = False) -> PeerResult:
    from benchmarks.mariadb_fast_reader import read_batches

    conn = _mysqlclient(ctx)
    try:
        conn.query(b"START TRANSACTION WITH CONSISTENT SNAPSHOT")
        batches = read_batches(
            conn, select_sql("mariadb", "%s"), (ctx.window.low, ctx.window.high), EXACT_SCHEMA, BATCH_ROWS
        )
        if thread:
            _write_in_thread(batches, ctx.out_file)
        else:
            write_stream(batches, ctx.out_file)
        conn.commit()
    finally:
        conn.close()
    return summarize(ctx.out_dir)


def _write_in_thread(batches: Iterator[pa.RecordBatch], path: str) -> None:
    """Read in this thread, encode Parquet in another (Parquet encoding releases the GIL)."""
    q: queue.Queue[pa.RecordBatch | None] = queue.Queue(4)
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            with ParquetSink(path, EXACT_SCHEMA) as sink:
                while (b := q.get()) is not None:
                    sink.write(b)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
            while q.get() is not None:
                pass

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        for b in batches:
            q.put(b)
    finally:
        q.put(None)
        t.join()
    if errors:
        raise errors[0]


@peer("mariadb", "mysqlclient_raw_conv", ["MySQLdb", "benchmarks.mariadb_fast_reader"])
def maria_fast(ctx: Ctx) -> PeerResult:
    """mysqlclient, raw DECIMAL/TIMESTAMP bytes parsed in Arrow (mariadb_fast_reader)."""
    return _fast(ctx, thread=False)


@peer("mariadb", "mysqlclient_raw_conv_writer_thread", ["MySQLdb", "benchmarks.mariadb_fast_reader"])
def maria_fast_thread(ctx: Ctx) -> PeerResult:
    """As mysqlclient_raw_conv, Parquet encoding in a second thread."""
    return _fast(ctx, thread=True)


@peer("mariadb", "mysqlclient_packed_csv", ["MySQLdb", "benchmarks.mariadb_fast_reader"])
def maria_packed(ctx: Ctx) -> PeerResult:
    """Server renders CSV lines, Arrow's CSV parser types them (mariadb_fast_reader default)."""
    return _fast(ctx, thread=False, packed=True)


@peer("mariadb", "mysqlclient_packed_csv_writer_thread", ["MySQLdb", "benchmarks.mariadb_fast_reader"])
def maria_packed_thread(ctx: Ctx) -> PeerResult:
    """As mysqlclient_packed_csv, Parquet encoding in a second thread."""
    return _fast(ctx, thread=True, packed=True)


@peer("mariadb", "pandas", ["pandas", "sqlalchemy", "pymysql"])
def maria_pandas(ctx: Ctx) -> PeerResult:
    """pandas.read_sql over SQLAlchemy (pymysql), then to_parquet."""
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(ctx.url, connect_args={"init_command": "SET time_zone='+00:00'"})
    df = pd.read_sql(sa.text(select_sql("mariadb", window=ctx.window)), engine)
    engine.dispose()
    return _pandas_out(df, ctx)


@peer("mariadb", "dlt_pyarrow", ["dlt", "dlt.sources.sql_database", "pymysql"])
def maria_dlt(ctx: Ctx) -> PeerResult:
    """dlt sql_table, pyarrow backend (pymysql)."""
    return _dlt(ctx, "pyarrow", ctx.url, None)


# --- delta_platform ---------------------------------------------------------------------


def _delta(ctx: Ctx) -> PeerResult:
    from benchmarks.delta_platform_peer import run_delta_platform

    return run_delta_platform(ctx.db, ctx.url, ctx.out_dir, ctx.window.low, ctx.window.high)


def _delta_chunked(ctx: Ctx) -> PeerResult:
    from benchmarks.delta_platform_peer import run_delta_platform

    return run_delta_platform(
        ctx.db, ctx.url, ctx.out_dir, ctx.window.low, ctx.window.high, chunk_rows=250_000
    )


# Imports excluded from the clock, as for every peer: the modules a delta_platform load uses,
# including the drivers and SQLAlchemy dialects it would otherwise import lazily mid-run.
_DELTA_IMPORTS = (
    "benchmarks.delta_platform_peer",
    "delta_platform.delta_task",
    "delta_platform.engine",
    "delta_platform.lake",
    "delta_platform.source",
    "pyarrow.parquet",
    "pyarrow.dataset",
)
_DRIVERS = {
    "postgres": ("psycopg", "sqlalchemy.dialects.postgresql.psycopg", "adbc_driver_postgresql.dbapi"),
    "mariadb": ("pymysql", "sqlalchemy.dialects.mysql.pymysql"),
    "sqlite": ("sqlite3", "sqlalchemy.dialects.sqlite.pysqlite", "adbc_driver_sqlite.dbapi"),
}
for _db in ("postgres", "mariadb", "sqlite"):
    _imports = (*_DELTA_IMPORTS, *_DRIVERS[_db])
    REGISTRY[_db]["delta_platform"] = Peer("delta_platform", _delta, _imports)
    REGISTRY[_db]["delta_platform_chunked"] = Peer("delta_platform_chunked", _delta_chunked, _imports)
