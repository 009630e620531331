"""MySQL/MariaDB windows over the binary protocol (prepared statements), decoded in C.

The packed-CSV path (`mysql_packed`) is bound by the server rendering every value as text
(the two TIMESTAMP(6) columns of the benchmark table alone cost ~0.45 s of server CPU per 2M
rows). A prepared statement's result travels in the binary protocol instead: integers and
doubles as machine words, temporal values as a few bytes, DECIMAL and text as length-prefixed
strings. The optional C extension `_mysql_binary` (built by setup.py when the client headers
are there) runs the statement on the caller's own mysqlclient connection, so it stays inside the
snapshot transaction, streams rows with `mysql_stmt_fetch` (no client-side result buffer) and
decodes them into Arrow buffers with the GIL released; here they become record batches through
`pa.Array.from_buffers`.

Only columns whose binary form maps exactly onto the catalog's Arrow type are read this way
(`plan` returns None otherwise and the caller takes the packed path): signed integers (and
unsigned ones below BIGINT, range-checked), DOUBLE, DECIMAL up to 38 digits, DATE, DATETIME and
TIMESTAMP (TIMESTAMP values are in the session time zone, which `MySQLDialect.session_setup`
pins to '+00:00'), text (received as utf8mb4) and binary strings. The C reader checks the
prepared statement's result metadata against the plan before it executes anything and raises
`Unsupported` if they disagree.

Measured on `bench.orders` (2M rows, 7 columns incl. two TIMESTAMP(6) and a DECIMAL(12,2)),
MariaDB 10.11, best of 3, reading the window to Arrow: binary 1.26 s wall, 1.30 s server CPU,
0.54 s client CPU; packed CSV 1.71 s, 1.58 s, 1.13 s. Whole load (`benchmarks/engine_speed.py
--db mariadb --rows 2000000`): 1.74 s against connectorx's 2.20 s; peak RSS 187 MB
(`benchmarks/memory_profile.py`). The window's count stays the server's: FOUND_ROWS() is set
by a prepared statement's fetch as by a text-protocol one.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from delta_platform.errors import SourceError, reader_error
from delta_platform.source.buffers import read_batches

try:
    from delta_platform.source import _mysql_binary as _ext
except ImportError:  # the optional extension was not built
    _ext = None  # type: ignore[assignment]

#: Why the extension is missing, for a forced read (DELTA_PLATFORM_MYSQL_BINARY=1).
UNAVAILABLE = None if _ext is not None else "the C extension delta_platform.source._mysql_binary is not built"

Unsupported: type[Exception] = _ext.Unsupported if _ext is not None else RuntimeError


def available() -> bool:
    return _ext is not None


def is_mysqlclient(conn: Any) -> bool:
    return type(conn).__module__.startswith("MySQLdb") and hasattr(conn, "_get_native_connection")


def _int_kind(arrow: pa.DataType) -> int | None:
    return {8: _ext.K_INT8, 16: _ext.K_INT16, 32: _ext.K_INT32, 64: _ext.K_INT64}.get(arrow.bit_width)


def column_plan(sa_type: sa.types.TypeEngine[Any], arrow: pa.DataType) -> tuple[int, int, int] | None:
    """(kind, precision, scale) for the C reader, or None when the column is not read exactly."""
    if _ext is None or isinstance(sa_type, sa.Boolean):
        return None  # TINYINT(1) may hold 2..127; the per-value path decides what that means
    if pa.types.is_signed_integer(arrow) and isinstance(sa_type, sa.Integer):
        if getattr(sa_type, "unsigned", False) and isinstance(sa_type, sa.BigInteger):
            return None  # BIGINT UNSIGNED goes beyond int64
        kind = _int_kind(arrow)
        return None if kind is None else (kind, 0, 0)
    if (
        pa.types.is_decimal128(arrow)
        and isinstance(sa_type, sa.Numeric)
        and not isinstance(sa_type, sa.Float)
    ):
        return (_ext.K_DECIMAL, arrow.precision, arrow.scale)
    if pa.types.is_float64(arrow) and isinstance(sa_type, sa.Double | mysql.DOUBLE | mysql.REAL):
        return (_ext.K_DOUBLE, 0, 0)
    if pa.types.is_date32(arrow) and isinstance(sa_type, sa.Date) and not isinstance(sa_type, sa.DateTime):
        return (_ext.K_DATE, 0, 0)
    if pa.types.is_timestamp(arrow) and arrow.unit == "us" and isinstance(sa_type, sa.DateTime):
        return (_ext.K_TIMESTAMP, 0, 0)
    if isinstance(sa_type, sa.JSON):
        return None
    binary = isinstance(sa_type, sa.types._Binary | sa.LargeBinary)
    if pa.types.is_string(arrow) and isinstance(sa_type, sa.String) and not binary:
        return (_ext.K_TEXT, 0, 0)
    if pa.types.is_binary(arrow) and binary:
        return (_ext.K_BINARY, 0, 0)
    return None


def plan(stmt: sa.Select[Any], schema: pa.Schema) -> tuple[tuple[int, int, int], ...] | None:
    """The C reader's column plan for `stmt`, or None if any column is not read exactly."""
    if _ext is None:
        return None
    columns = list(stmt.selected_columns)
    if len(columns) != len(schema) or not columns:
        return None
    out = []
    for col, field in zip(columns, schema, strict=True):
        kind = column_plan(col.type, field.type)
        if kind is None:
            return None
        out.append(kind)
    return tuple(out)


def qmark_dialect(dialect: sa.Dialect) -> sa.Dialect:
    """A copy of the engine's dialect rendering `?` placeholders (what prepare expects)."""
    qmark = copy.copy(dialect)
    qmark.paramstyle = "qmark"
    qmark.positional = True
    qmark.identifier_preparer = qmark.preparer(qmark)  # percent signs are not doubled for qmark
    return qmark


def compile_qmark(stmt: sa.Select[Any], dialect: sa.Dialect) -> tuple[str, tuple[Any, ...]]:
    compiled = stmt.compile(dialect=dialect)
    params = compiled.construct_params()
    return str(compiled), tuple(params[name] for name in compiled.positiontup or ())


def wire_param(value: Any, encoding: str) -> Any:
    """A bound window value in the form the C reader binds (never rendered into SQL)."""
    if value is None or isinstance(value, bool | int | float | bytes):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("a DECIMAL parameter must be finite")
        return ("decimal", format(value, "f").encode("ascii"))
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)  # the session is UTC
        fields = (value.year, value.month, value.day, value.hour, value.minute, value.second)
        return ("datetime", (*fields, value.microsecond))
    if isinstance(value, dt.date):
        return ("date", (value.year, value.month, value.day))
    if isinstance(value, str):
        return value.encode(encoding)
    raise TypeError(f"cannot bind a {type(value).__name__} window value over the binary protocol")


class BinaryRead:
    """One prepared SELECT streamed as record batches of `schema`; `close` is idempotent."""

    def __init__(
        self,
        conn: Any,
        sql: str,
        params: tuple[Any, ...],
        columns: tuple[tuple[int, int, int], ...],
        schema: pa.Schema,
        *,
        table: str,
        encoding: str = "utf-8",
    ):
        self.schema = schema
        self.table = table
        wire = tuple(wire_param(v, encoding) for v in params)
        try:
            self._reader = _ext.Reader(
                conn._get_native_connection(), conn, sql.encode(encoding), wire, columns
            )
        except _ext.Unsupported:
            raise
        except _ext.Error as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> SourceError:
        return reader_error(exc, self.schema.names, table=self.table, what="binary-protocol read")

    @property
    def done(self) -> bool:
        return bool(self._reader.done)

    def batches(self, rows: int) -> Iterator[pa.RecordBatch]:
        what = "binary-protocol read"
        return read_batches(self._reader, rows, self.schema, error=_ext.Error, table=self.table, what=what)

    def close(self) -> None:
        self._reader.close()
