"""One consistent snapshot per window: the count and the rows that it verifies are read together.

No Python object per row where it can be helped. PostgreSQL: a snapshot on psycopg whose
windows stream as a binary COPY decoded in C (`pg_copy`) on a connection importing it, or
through ADBC for columns that reader does not decode. SQLite: ADBC. MySQL and MariaDB: a
prepared statement decoded in C (`mysql_binary`), else each row packed by the server into one
CSV line that Arrow parses (`mysql_packed`), through mysqlclient when it is importable, else
pymysql. Other dialects, and MySQL columns that cannot be packed, go through the DB-API driver
and are assembled into Arrow column by column.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter, Cast
from sqlalchemy.sql.selectable import ScalarSelect

from delta_platform.errors import SourceError
from delta_platform.source import mysql_binary, mysql_packed, pg_connections, pg_copy
from delta_platform.source.catalog import conform
from delta_platform.source.dialects import READER_APP, SourceDialect

_PG_NUMERIC = psycopg.dialect(paramstyle="numeric_dollar")  # $n: ADBC and the COPY's settings
_PG_PYFORMAT = psycopg.dialect()  # %(name)s: the snapshot's own psycopg connection
_SETTING = "delta_platform.p"
_PG_BATCH_HINT = "adbc.postgresql.batch_size_hint_bytes"
_PG_BATCH_BYTES = 4 * 1024 * 1024
_QUOTED = re.compile(r'("(?:[^"]|"")*")')
_PLACEHOLDER = re.compile(r"\$(\d+)")


def _text(value: Any) -> str:
    if value is None:
        raise TypeError("a window bound cannot be NULL")
    return value if isinstance(value, str) else str(value)


#: Execution option of a window's SELECT: read the table rather than an index (see
#: `Source.select_window`).
TABLE_SCAN_OPTION = "delta_platform_table_scan"
#: What PostgreSQL is told for a read marked TABLE_SCAN_OPTION, and told back afterwards.
_PG_NO_INDEX_PATHS = ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan")
_PG_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?")  # pg_export_snapshot() output
#: MySQL/MariaDB reader driver: "auto" (mysqlclient when importable, else the engine's own
#: driver), "mysqlclient", or "engine" (always the engine's driver, e.g. pymysql).
MYSQL_READER = os.environ.get("DELTA_PLATFORM_MYSQL_READER", "auto")
#: Read MySQL/MariaDB windows as packed CSV lines when the columns allow it.
MYSQL_PACKED = os.environ.get("DELTA_PLATFORM_MYSQL_PACKED", "1") != "0"
#: Rows per packed fetch: a batch lives as Python bytes (one per row, then joined) and as Arrow's
#: parse buffers before it reaches the writer, so it is far smaller than the engine's batch_rows.
#: 2M rows on MariaDB (`benchmarks/memory_profile.py --db mariadb`): 65,536 rows 277 MB peak,
#: 2.16 s client CPU; 16,384 226 MB, 1.96 s; 8,192 202 MB, 1.83-1.93 s; 4,096 221 MB, 2.02 s.
MYSQL_PACKED_ROWS = 8192
#: Read MySQL/MariaDB windows over the binary protocol (`mysql_binary`, a C extension) when it is
#: built, the connection is mysqlclient and every column is read exactly that way: "auto"
#: (default), "0" (never: packed, then per-value), "1" (always; a read it cannot take fails).
MYSQL_BINARY = os.environ.get("DELTA_PLATFORM_MYSQL_BINARY", "auto")
#: Rows per binary fetch: the C reader fills compact Arrow buffers (about the row's wire size),
#: so batches can be much larger than packed ones.
MYSQL_BINARY_ROWS = 65536
#: Read PostgreSQL windows as a binary COPY decoded in C (`pg_copy`) when it is built and every
#: column maps exactly: "auto" (default), "0" (never: ADBC), "1" (always; a read it cannot take
#: fails).
PG_COPY = os.environ.get("DELTA_PLATFORM_PG_COPY", "auto")
def copies_postgresql() -> bool:
    """Whether PostgreSQL windows are read as binary COPY (else every read is ADBC's)."""
    return PG_COPY != "0" and pg_copy.available()


#: Rows per ADBC SQLite batch (the driver's default is 1,024): as fast as 256k rows, and a 10M-row
#: window peaks lower (`memory_profile.py --db sqlite --rows 10000000 --engine batch_rows=N`:
#: 274 MB at 65,536 against 308 MB at 262,144).
SQLITE_BATCH_ROWS = 65536
#: Rows per binary COPY fetch (compact Arrow buffers, as for MySQL's binary reads).
PG_COPY_ROWS = 65536


class _SQLiteHintCompiler(SQLiteCompiler):
    """SQLite's compiler, also rendering table hints (`FROM t NOT INDEXED`), which it drops."""

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        return text


class Snapshot(Protocol):
    def scalar(self, stmt: sa.Select[Any]) -> Any: ...

    def rows(self, stmt: sa.Select[Any]) -> list[tuple[Any, ...]]: ...

    def stream(
        self, stmt: sa.Select[Any], schema: pa.Schema, batch_rows: int
    ) -> Iterator[pa.RecordBatch]: ...


class _Statements:
    """The snapshot's own small statements on a cursor of `conn` (a context manager)."""

    conn: Any

    def _compile(self, stmt: sa.Select[Any]) -> tuple[str, Any]:
        raise NotImplementedError

    def _run(self, cur: Any, sql: str, params: Any) -> None:
        cur.execute(sql, params)

    def execute(self, sql: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql)

    def scalar(self, stmt: sa.Select[Any]) -> Any:
        sql, params = self._compile(stmt)
        with self.conn.cursor() as cur:
            self._run(cur, sql, params)
            row = cur.fetchone()
        return row[0] if row else None

    def rows(self, stmt: sa.Select[Any]) -> list[tuple[Any, ...]]:
        """A few small rows (chunk boundaries) as Python tuples."""
        sql, params = self._compile(stmt)
        with self.conn.cursor() as cur:
            self._run(cur, sql, params)
            return [tuple(r) for r in cur.fetchall()]


class AdbcSnapshot(_Statements):
    """A read-only repeatable-read transaction on an ADBC connection: SQLite's snapshot, and
    PostgreSQL's rows when the binary COPY reader does not take them (`PgSnapshot.stream`)."""

    def __init__(self, conn: Any, compile_dialect: sa.Dialect, table: str):
        self.conn = conn
        self.compile_dialect = compile_dialect
        self.table = table

    @property
    def reader(self) -> str:
        """How rows travel, for the load's metadata."""
        return "adbc-sqlite" if self.compile_dialect.name == "sqlite" else "adbc-postgresql-copy"

    def _compile(self, stmt: sa.Select[Any]) -> tuple[str, tuple[Any, ...] | None]:
        if self.compile_dialect.name == "sqlite":
            compiled: sa.sql.compiler.SQLCompiler = _SQLiteHintCompiler(self.compile_dialect, stmt)
        else:
            compiled = stmt.compile(dialect=self.compile_dialect)  # type: ignore[assignment]
        params = compiled.construct_params()
        ordered = tuple(params[k] for k in (compiled.positiontup or ()))
        return str(compiled), (ordered or None)

    def _session_bound(self, sql: str, params: tuple[Any, ...]) -> tuple[str, None]:
        """Move bound values into transaction-local settings so the query has no parameters.

        ADBC PostgreSQL streams a result through COPY (batches, flat memory) only for queries
        without parameters; with parameters it buffers the whole result. The values are still
        bound (as parameters of set_config), never written into the SQL text.
        """
        sql, settings = _as_settings(sql, params)
        with self.conn.cursor() as cur:
            for name, value in settings:
                cur.execute("SELECT set_config($1, $2, true)", parameters=(name, value))
                cur.fetchall()
        return sql, None

    def _run(self, cur: Any, sql: str, params: Any) -> None:
        cur.execute(sql, parameters=params)

    def stream(self, stmt: sa.Select[Any], schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
        sqlite = self.compile_dialect.name == "sqlite"
        scaled: list[int] = []
        no_index = not sqlite and bool(stmt.get_execution_options().get(TABLE_SCAN_OPTION))
        if not sqlite:
            stmt, scaled = _pg_unscaled_decimals(stmt, schema)
        sql, params = self._compile(stmt)
        if no_index:
            for setting in _PG_NO_INDEX_PATHS:
                self.execute(f"SET LOCAL {setting} = off")
        cur = self.conn.cursor()
        try:
            if sqlite:
                rows = str(min(batch_rows, SQLITE_BATCH_ROWS))
                cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": rows})
            else:
                # COPY batches of ~4 MB instead of the driver's 16 MB: the fetch thread, the
                # queue and the row-group buffer then hold smaller pieces that glibc can reuse
                # (measured: lower, flatter peak RSS at no cost in speed).
                cur.adbc_statement.set_options(**{_PG_BATCH_HINT: str(_PG_BATCH_BYTES)})
                if params:
                    sql, params = self._session_bound(sql, params)
            with _non_finite_decimals(schema, scaled, self.table):
                cur.execute(sql, parameters=params)
                for batch in cur.fetch_record_batch():
                    if sqlite:
                        batch = _sqlite_decimals(batch, schema)
                    elif scaled:
                        batch = _rescale_decimals(batch, scaled, schema)
                    yield conform(batch, schema, table=self.table)
        finally:
            cur.close()
            if no_index:  # the snapshot's other reads plan as usual
                with contextlib.suppress(Exception):
                    for setting in _PG_NO_INDEX_PATHS:
                        self.execute(f"SET LOCAL {setting} TO DEFAULT")


class PgSnapshot(_Statements):
    """A read-only repeatable-read transaction on a psycopg connection (PostgreSQL).

    Its own statements (counts, chunk edges, EXPLAIN, the snapshot's export) run here. A
    window's rows stream on a connection of their own that imports this snapshot: a binary COPY
    decoded in C (`pg_copy`), whose command tag is then the server's count of them
    (`copied_rows`), or, for columns that reader does not decode, ADBC (`AdbcSnapshot`). ADBC
    is imported only then: its DB-API module loads pyarrow.dataset (and pandas, when installed),
    ~60 MB of peak RSS a load of decodable columns does not need.
    """

    def __init__(
        self, conn: Any, table: str, *, uri: str, snapshot_id: str | None = None, mode: str = "auto"
    ):
        self.conn = conn
        self.table = table
        self.uri = uri
        self.pg_copy_mode = mode
        self._snapshot_id = snapshot_id  # the imported snapshot, else exported on demand
        #: The server's tally of the rows the last stream's binary COPY sent, once read to its
        #: end; None when the last stream went through ADBC (or has not ended).
        self.copied_rows: int | None = None
        self.last_path: str | None = None

    @property
    def reader(self) -> str:
        """How rows travel, for the load's metadata."""
        return "adbc-postgresql-copy" if self.last_path == "adbc" else "pg-copy-binary"

    def snapshot_id(self) -> str:
        """This transaction's snapshot, exported once, for other connections."""
        if self._snapshot_id is None:
            self._snapshot_id = str(self.scalar(sa.select(sa.func.pg_export_snapshot())))
        return self._snapshot_id

    def copies(self, schema: pa.Schema) -> bool:
        """Whether a stream of `schema` will likely be a binary COPY that counts its own rows.

        Decided before the stream from the Arrow types alone; the result's type OIDs may
        still send it to ADBC, in which case `copied_rows` stays None.
        """
        return self.pg_copy_mode != "0" and pg_copy.may_read(schema)

    def _compile(self, stmt: sa.Select[Any]) -> tuple[str, dict[str, Any]]:
        compiled = stmt.compile(dialect=_PG_PYFORMAT)
        return str(compiled), compiled.construct_params()


    def planner_scans_table(self, stmt: sa.Select[Any]) -> bool:
        """Whether PostgreSQL, shown the window's real values, would read the whole table.

        The stream hands its values over as transaction settings (`_session_bound`), which the
        planner cannot look into: it then guesses a small window and walks the cursor's index
        even for a window covering the table (0.62 s against 0.31 s of server time for 2M
        rows whose order follows the index, far worse when it does not). EXPLAIN with the
        values bound as parameters shows the plan it would choose for them; a sequential scan
        there is asked for again in the stream (`TABLE_SCAN_OPTION`).
        """
        sql, params = self._compile(_values_in_sight(stmt))
        if not params:
            return False  # nothing hidden from the planner
        self.execute("SAVEPOINT delta_plan")  # a refused EXPLAIN must not end the snapshot
        try:
            with self.conn.cursor() as cur:
                cur.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
                row = cur.fetchone()
            plan = json.loads(row[0]) if isinstance(row[0], str | bytes) else row[0]
            scans = _scans_a_table(plan[0]["Plan"])
        except Exception:  # a value the driver cannot bind: keep the planner's usual plan
            self.execute("ROLLBACK TO SAVEPOINT delta_plan")
            scans = False
        self.execute("RELEASE SAVEPOINT delta_plan")
        return scans

    def stream(self, stmt: sa.Select[Any], schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
        self.copied_rows = None
        self.last_path = None
        no_index = bool(stmt.get_execution_options().get(TABLE_SCAN_OPTION))
        read = self._copy_read(stmt, schema, no_index)
        if read is None:
            self.last_path = "adbc"
            with _adbc_in_snapshot(self.uri, self.snapshot_id(), self.table) as adbc:
                yield from adbc.stream(stmt, schema, batch_rows)
            return
        self.last_path = "pg-copy"
        try:
            for batch in read.batches(min(batch_rows, PG_COPY_ROWS)):
                yield conform(batch, schema, table=self.table)  # already the schema: a check
            self.copied_rows = read.served
        finally:
            read.close()

    def _copy_read(self, stmt: sa.Select[Any], schema: pa.Schema, no_index: bool) -> pg_copy.CopyRead | None:
        """The window's binary COPY, started, or None when it does not apply (ADBC reads it).

        Nothing runs on this snapshot's connection: the COPY's connection imports its snapshot,
        so a refusal (a type the C reader does not decode exactly) leaves everything as it was.
        """
        if self.pg_copy_mode == "0":
            return None
        why = pg_copy.UNAVAILABLE
        if why is None and not pg_copy.may_read(schema):
            why = "a column's Arrow type is not produced by the binary COPY reader"
        if why is None:
            compiled = stmt.compile(dialect=_PG_NUMERIC)
            values = compiled.construct_params()
            params = tuple(values[k] for k in (compiled.positiontup or ()))
            sql, settings = _as_settings(str(compiled), params)
            local = [f"{setting} = off" for setting in _PG_NO_INDEX_PATHS] if no_index else []
            try:
                return pg_copy.CopyRead(
                    str(self.uri), self.snapshot_id(), sql, settings, local, schema, table=self.table
                )
            except pg_copy.Unsupported as exc:
                why = f"the result's columns differ from what it decodes ({exc.args[0]})"
        if self.pg_copy_mode == "1":
            raise SourceError(f"binary COPY read required but not possible: {why}", table=self.table)
        return None



@contextmanager
def _adbc_in_snapshot(uri: str, snapshot_id: str, table: str) -> Iterator[AdbcSnapshot]:
    """An ADBC connection in the exported snapshot `snapshot_id`, for one window's rows."""
    if not _PG_SNAPSHOT_ID.fullmatch(snapshot_id):
        raise ValueError(f"not an exported snapshot id: {snapshot_id!r}")
    conn = pg_connections.connect(uri)
    try:
        snap = AdbcSnapshot(conn, _PG_NUMERIC, table)
        snap.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snap.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")  # before the first query
        snap.execute("SET LOCAL TIME ZONE 'UTC'")
        snap.execute("SET LOCAL jit = off")
        yield snap
    finally:
        conn.rollback()
        conn.close()


def _as_settings(sql: str, params: tuple[Any, ...]) -> tuple[str, list[tuple[str, str]]]:
    """`sql` reading its $n values from transaction settings, and those (name, text) settings.

    Only the placeholders outside quoted identifiers are replaced; the values stay bound (as
    set_config's parameters), never written into the SQL text.
    """
    parts = _QUOTED.split(sql)  # odd parts are the quoted identifiers themselves
    for i in range(0, len(parts), 2):
        parts[i] = _PLACEHOLDER.sub(lambda m: f"current_setting('{_SETTING}{m.group(1)}')", parts[i])
    return "".join(parts), [(f"{_SETTING}{i}", _text(v)) for i, v in enumerate(params, start=1)]


def _values_in_sight(stmt: sa.Select[Any]) -> sa.Select[Any]:
    """`stmt` with each bound value's one-row subquery (`PostgresDialect.bind`) undone.

    The subquery makes the planner treat the value as unknown; the bare cast of the bound
    parameter is what it estimates from. Only for EXPLAIN: the read keeps the subqueries.
    """

    def bare(element: Any) -> Any:
        if isinstance(element, ScalarSelect):
            (column, *more) = element.element.selected_columns
            if not more and isinstance(column, Cast) and isinstance(column.clause, BindParameter):
                return column
        return None

    return visitors.replacement_traverse(stmt, {}, bare)


def _scans_a_table(node: dict[str, Any]) -> bool:
    """True when a plan (JSON form) reads some table sequentially."""
    if "Seq Scan" in str(node.get("Node Type", "")):  # also "Parallel Seq Scan" (as Node Type)
        return True
    return any(_scans_a_table(child) for child in node.get("Plans", ()))


_NON_FINITE = re.compile(r"cannot convert (NaN|-?infinity) to bigint", re.IGNORECASE)


@contextmanager
def _non_finite_decimals(schema: pa.Schema, scaled: list[int], table: str) -> Iterator[None]:
    """The server's refusal of a NaN / infinite NUMERIC read as bigint, said in our terms."""
    try:
        yield
    except Exception as exc:
        if not scaled or not _NON_FINITE.search(str(exc)):
            raise
        names = " or ".join(schema.field(i).name for i in scaled)
        raise SourceError(
            "a NUMERIC value is NaN or infinite, which no Parquet decimal can hold",
            table=table,
            attribute=names,
        ) from None


#: Widest NUMERIC(p, s) whose unscaled value (value * 10^s) always fits a bigint.
_BIGINT_DIGITS = 18


def _pg_unscaled_decimals(stmt: sa.Select[Any], schema: pa.Schema) -> tuple[sa.Select[Any], list[int]]:
    """Read NUMERIC(p <= 18, s) columns as their unscaled bigint (value * 10^s).

    ADBC PostgreSQL turns every NUMERIC into text and the catalog cast parses it back: about
    0.65 s of client CPU per 2M values, a third of a whole load. A declared scale means the
    product is an integer, so the bigint is exact and becomes decimal128(p, s) without parsing
    (`_rescale_decimals`). NaN and infinity cannot become a bigint: the server refuses them,
    as the decimal cast would. The multiplier is our own integer, not a value from outside.
    """
    columns = list(stmt.selected_columns)
    if len(columns) != len(schema):
        return stmt, []
    scaled: list[int] = []
    for i, (column, field) in enumerate(zip(columns, schema, strict=True)):
        target, declared = field.type, getattr(column, "type", None)
        if (
            isinstance(column, sa.Column)
            and isinstance(target, pa.Decimal128Type)
            and target.precision <= _BIGINT_DIGITS
            and isinstance(declared, sa.Numeric)
            and (declared.precision, declared.scale) == (target.precision, target.scale)
        ):
            product = column * sa.literal_column(str(10**target.scale)) if target.scale else column
            columns[i] = sa.cast(product, sa.BigInteger).label(column.name)
            scaled.append(i)
    return (stmt.with_only_columns(*columns), scaled) if scaled else (stmt, [])


def _rescale_decimals(batch: pa.RecordBatch, scaled: list[int], schema: pa.Schema) -> pa.RecordBatch:
    """The unscaled bigints of `_pg_unscaled_decimals` as the catalog's decimal128(p, s).

    decimal128(19, 0) holds every bigint; its 128-bit words are the unscaled value, so viewing
    them with scale s is the exact decimal.
    """
    arrays = list(batch.columns)
    for i in scaled:
        arrays[i] = arrays[i].cast(pa.decimal128(19, 0)).view(schema.field(i).type)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


#: Widest decimal whose multiples of 10^-scale are further apart than a double's spacing.
_EXACT_FLOAT_PRECISION = 15


def _sqlite_decimals(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """SQLite REAL values bound for a DECIMAL(p<=15, s) column, converted exactly without text.

    `conform` goes through each double's shortest repr (0.13 s per million). When x equals
    round(x * 10^s) / 10^s as a double, that repr *is* the decimal round(x * 10^s) * 10^-s
    (for p <= 15 no other multiple of 10^-s rounds to x), so the unscaled value is taken
    directly. A column with any other value (more digits, out of range, inf/nan) is left as
    it is for `conform`, which keeps its exact cast and its error.
    """
    arrays: list[pa.Array] | None = None
    for i, field in enumerate(schema):
        arr = batch.column(i)
        target = field.type
        if not (
            pa.types.is_float64(arr.type)
            and isinstance(target, pa.Decimal128Type)
            and 0 <= target.scale <= target.precision <= _EXACT_FLOAT_PRECISION
            and arr.offset == 0
        ):
            continue
        exact = _float_to_decimal(arr, target)
        if exact is not None:
            arrays = arrays or list(batch.columns)
            arrays[i] = exact
    if arrays is None:
        return batch
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _float_to_decimal(arr: pa.Array, target: pa.Decimal128Type) -> pa.Array | None:
    import numpy as np

    values = arr.to_numpy(zero_copy_only=False)  # NULL -> NaN
    valid = ~np.asarray(arr.is_null()) if arr.null_count else None
    present = values if valid is None else values[valid]
    if not np.isfinite(present).all():
        return None
    factor = 10.0**target.scale
    unscaled = np.rint(present * factor)
    if (np.abs(unscaled) >= 10.0**target.precision).any() or not (unscaled / factor == present).all():
        return None
    words = np.zeros((len(values), 2), dtype=np.int64)  # little-endian 128-bit two's complement
    if valid is None:
        words[:, 0] = unscaled.astype(np.int64)
    else:
        words[valid, 0] = unscaled.astype(np.int64)
    words[:, 1] = words[:, 0] >> 63
    validity = arr.buffers()[0] if arr.null_count else None
    return pa.Array.from_buffers(target, len(arr), [validity, pa.py_buffer(words)], null_count=arr.null_count)


class DbapiSnapshot:
    """A snapshot transaction on a DB-API connection; rows become Arrow columns in bulk."""

    def __init__(self, raw: Any, dialect: sa.Dialect, table: str, server_side_cursor: Any = None):
        self.raw = raw
        self.dialect = dialect
        self.table = table
        self.server_side_cursor = server_side_cursor

    @property
    def reader(self) -> str:
        """How rows travel, for the load's metadata (a Python object per value here)."""
        return f"dbapi-{self.dialect.name}"

    def _compile(self, stmt: sa.Select[Any]) -> tuple[str, Any]:
        compiled = stmt.compile(dialect=self.dialect)
        params = compiled.construct_params()
        if compiled.positiontup:
            return str(compiled), tuple(params[k] for k in compiled.positiontup)
        return str(compiled), params

    def scalar(self, stmt: sa.Select[Any]) -> Any:
        sql, params = self._compile(stmt)
        cur = self.raw.cursor()
        try:
            cur.execute(sql, params)
            row = cur.fetchone()
        finally:
            cur.close()
        return row[0] if row else None

    def rows(self, stmt: sa.Select[Any]) -> list[tuple[Any, ...]]:
        """A few small rows (chunk boundaries) as Python tuples."""
        sql, params = self._compile(stmt)
        cur = self.raw.cursor()
        try:
            cur.execute(sql, params)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def stream(self, stmt: sa.Select[Any], schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
        sql, params = self._compile(stmt)
        cur = self.server_side_cursor(self.raw) if self.server_side_cursor else self.raw.cursor()
        try:
            cur.execute(sql, params)
            while rows := cur.fetchmany(batch_rows):
                yield rows_to_batch(rows, schema, table=self.table)
        finally:
            cur.close()


class MySQLSnapshot(DbapiSnapshot):
    """A consistent-snapshot transaction on MySQL/MariaDB.

    A window is read over the binary protocol when it can be (`mysql_binary`: a prepared
    statement on this same connection, decoded in C), else as packed CSV lines
    (`mysql_packed`), else value by value. `lines` reads an executed server-side cursor as lists
    of packed lines (pymysql needs its packet-level reader; mysqlclient's fetchmany is already C).
    `last_path` names the path the last `stream` took ("binary", "packed" or "values").
    """

    def __init__(
        self,
        raw: Any,
        dialect: sa.Dialect,
        table: str,
        server_side_cursor: Any,
        lines: Callable[[Any, int], Iterator[list[bytes]]],
        packed: bool = True,
        binary: str = "auto",
    ):
        super().__init__(raw, dialect, table, server_side_cursor)
        self.lines = lines
        self.packed = packed
        self.binary = binary
        self.last_path: str | None = None
        self.session_dirty = False  # a session setting could not be restored
        #: The server's own tally of the rows the last stream sent (FOUND_ROWS()), once read to
        #: its end; None before that. It is the window's count in this snapshot at no cost,
        #: where a COUNT(*) is a second pass (0.5 s per 2M rows on MariaDB) that cannot run
        #: beside the stream (MySQL cannot share a snapshot between connections).
        self.served_rows: int | None = None
        self._qmark: sa.Dialect | None = None

    @property
    def reader(self) -> str:
        """The path the last stream took ("mysql-binary", "mysql-packed", "mysql-values")."""
        return f"mysql-{self.last_path}" if self.last_path else super().reader

    def stream(self, stmt: sa.Select[Any], schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
        self.served_rows = None
        self.last_path = None
        read = self._binary_read(stmt, schema)
        if read is not None:
            yield from self._stream_binary(read, schema, batch_rows)
            return
        packed = mysql_packed.packed_select(stmt, schema) if self.packed else None
        if packed is None:  # a column Arrow cannot parse back exactly from server text
            self.last_path = "values"
            yield from super().stream(stmt, schema, batch_rows)
            self.served_rows = int(self._session_value("SELECT FOUND_ROWS()"))
            return
        self.last_path = "packed"
        sql, params = self._compile(packed)
        # The lines are read unconverted (bytes from both drivers, no re-encoding by the
        # connection charset); the session's setting is put back for the snapshot's other reads.
        previous = self._session_value("SELECT @@session.character_set_results")
        self._session_value("SET character_set_results = binary")
        cur = self.server_side_cursor(self.raw)
        try:
            cur.execute(sql, params)
            fetch = min(batch_rows, MYSQL_PACKED_ROWS)
            for batch in mysql_packed.parse_all(self.lines(cur, fetch), schema):
                yield conform(batch, schema, table=self.table)
            cur.close()  # the result is read; the next statement may run
            self.served_rows = int(self._session_value("SELECT FOUND_ROWS()"))
        finally:
            with contextlib.suppress(Exception):  # the connection may already be closed
                cur.close()  # drains the rest of an abandoned result
            try:
                self._session_value("SET character_set_results = %s", (previous,))
            except Exception:
                self.session_dirty = True  # the pooled connection must not be reused

    def _binary_read(self, stmt: sa.Select[Any], schema: pa.Schema) -> mysql_binary.BinaryRead | None:
        """The window's prepared statement, executed, or None when the binary path does not apply.

        Nothing runs before the plan (catalog types) and the prepared statement's result
        metadata agree, so a refusal leaves the snapshot as it was for the other paths.
        """
        if self.binary == "0":
            return None
        why = None
        if not mysql_binary.available():
            why = mysql_binary.UNAVAILABLE
        elif not mysql_binary.is_mysqlclient(self.raw):
            why = "the connection is not mysqlclient"
        elif self.raw.character_set_name() != "utf8mb4":
            why = "the connection character set is not utf8mb4"
        columns = mysql_binary.plan(stmt, schema) if why is None else None
        if why is None and columns is None:
            why = "a column type is not read exactly over the binary protocol"
        if why is None:
            if self._qmark is None:
                self._qmark = mysql_binary.qmark_dialect(self.dialect)
            sql, params = mysql_binary.compile_qmark(stmt, self._qmark)
            # Text arrives in character_set_results: utf8mb4 (the connection's own charset).
            if self._session_value("SELECT @@session.character_set_results") != "utf8mb4":
                why = "character_set_results is not utf8mb4"
        if why is None:
            try:
                return mysql_binary.BinaryRead(self.raw, sql, params, columns, schema, table=self.table)
            except mysql_binary.Unsupported as exc:
                why = f"the result's columns differ from the catalog ({exc.args[0]})"
        if self.binary == "1":
            raise SourceError(f"binary-protocol read required but not possible: {why}", table=self.table)
        return None

    def _stream_binary(
        self, read: mysql_binary.BinaryRead, schema: pa.Schema, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        self.last_path = "binary"
        try:
            for batch in read.batches(min(batch_rows, MYSQL_BINARY_ROWS)):
                yield conform(batch, schema, table=self.table)  # already the schema: a check
            read.close()  # the result is read; the next statement may run
            self.served_rows = int(self._session_value("SELECT FOUND_ROWS()"))
        finally:
            read.close()  # drains the rest of an abandoned result; idempotent

    def _session_value(self, sql: str, params: tuple[Any, ...] | None = None) -> Any:
        cur = self.raw.cursor()
        try:
            cur.execute(sql, params)
            row = cur.fetchone() if cur.description else None
        finally:
            cur.close()
        return row[0] if row else None


def rows_to_batch(rows: list[tuple[Any, ...]], schema: pa.Schema, *, table: str) -> pa.RecordBatch:
    """Column-wise conversion with the catalog's types (exact decimals, UTC instants)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            arrays.append(pa.array(values))
    return conform(pa.RecordBatch.from_arrays(arrays, names=schema.names), schema, table=table)


def adbc_uri(url: sa.URL) -> str:
    """A libpq URI for ADBC from the SQLAlchemy URL, tagged so the fence ignores our reader."""
    base = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    return f"{base}?application_name={READER_APP}"


@contextmanager
def open_snapshot(
    engine: sa.Engine,
    dialect: SourceDialect,
    *,
    table: str,
    attach: dict[str, str] | None = None,
    snapshot_id: str | None = None,
) -> Iterator[Snapshot]:
    """Begin the window's snapshot; it is rolled back (read-only) when the block ends.

    `snapshot_id` (PostgreSQL only, from `pg_export_snapshot()`) makes this transaction see
    exactly the exporting one's snapshot, so parallel readers agree with the leader's count.
    """
    name = engine.dialect.name
    if snapshot_id is not None and (name != "postgresql" or not _PG_SNAPSHOT_ID.fullmatch(snapshot_id)):
        raise ValueError(f"cannot import snapshot {snapshot_id!r} on {name}")
    if name == "postgresql":
        import psycopg as pg

        uri = adbc_uri(engine.url)
        conn = pg.connect(uri, autocommit=False)
        try:
            snap = PgSnapshot(conn, table, uri=uri, snapshot_id=snapshot_id, mode=PG_COPY)
            snap.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if snapshot_id is not None:  # must precede the transaction's first query
                snap.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
            snap.execute("SET LOCAL TIME ZONE 'UTC'")
            snap.execute("SET LOCAL jit = off")  # compiling costs ~0.5 s a query; a scan never repays it
            yield snap
        finally:
            conn.rollback()
            conn.close()
        return
    if name == "sqlite":
        from delta_platform.source import sqlite_adbc

        conn = sqlite_adbc.Connection(engine.url.database or ":memory:")
        try:
            snap = AdbcSnapshot(conn, engine.dialect, table)
            for alias, path in (attach or {}).items():
                quoted = engine.dialect.identifier_preparer.quote(alias)
                conn.adbc_connection.set_autocommit(True)
                with conn.cursor() as cur:
                    cur.execute(f"ATTACH DATABASE ? AS {quoted}", parameters=(path,))
                    cur.fetchall()
                conn.adbc_connection.set_autocommit(False)
            yield snap
        finally:
            conn.rollback()
            conn.close()
        return
    if name in ("mysql", "mariadb"):
        with _mysql_snapshot(engine, dialect, table) as snap:
            yield snap
        return
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        cur = dbapi.cursor()
        for stmt in dialect.session_setup():
            cur.execute(stmt)
        if name == "oracle":
            cur.execute("SET TRANSACTION READ ONLY")
        cur.close()
        yield DbapiSnapshot(dbapi, engine.dialect, table)
    finally:
        try:
            raw.rollback()
        finally:
            raw.close()


def _mysqlclient_connect(engine: sa.Engine) -> Any | None:
    """A mysqlclient connection to the engine's server, or None when the engine's own is used.

    mysqlclient fetches in C (~3x less client CPU than pymysql); it is an optional extra
    (`mysql-fast`, needs libmysqlclient headers), so pymysql stays the default that always works.
    """
    if MYSQL_READER == "engine" or engine.dialect.driver == "mysqldb":
        return None
    try:
        import MySQLdb
        from sqlalchemy.dialects.mysql.mysqldb import MySQLDialect_mysqldb
    except ImportError:
        if MYSQL_READER == "mysqlclient":
            raise
        return None
    args, kwargs = MySQLDialect_mysqldb().create_connect_args(engine.url)
    kwargs.setdefault("charset", "utf8mb4")
    return MySQLdb.connect(*args, **kwargs)


@contextmanager
def _mysql_snapshot(engine: sa.Engine, dialect: SourceDialect, table: str) -> Iterator[MySQLSnapshot]:
    """`START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` on one connection: count and rows agree."""
    direct = _mysqlclient_connect(engine)
    raw = None if direct is not None else engine.raw_connection()
    snap: MySQLSnapshot | None = None
    dbapi = direct if direct is not None else raw.driver_connection
    try:
        if type(dbapi).__module__.startswith("MySQLdb"):
            import MySQLdb.cursors

            server_side: Any = MySQLdb.cursors.SSCursor
            lines: Callable[[Any, int], Iterator[list[bytes]]] = mysql_packed.fetchmany_lines
        else:
            import pymysql.cursors

            server_side = pymysql.cursors.SSCursor
            lines = mysql_packed.pymysql_lines
        cur = dbapi.cursor()
        for stmt in dialect.session_setup():
            cur.execute(stmt)
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        cur.close()
        snap = MySQLSnapshot(
            dbapi, engine.dialect, table, server_side, lines, packed=MYSQL_PACKED, binary=MYSQL_BINARY
        )
        yield snap
    finally:
        if direct is not None:
            # Closing ends the read-only transaction; a rollback would first need an abandoned
            # streaming result drained ("commands out of sync" on mysqlclient).
            direct.close()
        elif snap is not None and snap.session_dirty:
            raw.invalidate()  # closes it instead of handing a changed session back to the pool
        else:
            try:
                raw.rollback()
            finally:
                raw.close()
