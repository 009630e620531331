"""PostgreSQL windows as a binary COPY on a connection of their own, decoded in C.

ADBC PostgreSQL already streams a window through COPY, but it hands NUMERIC over as text (so
the snapshot had the server multiply NUMERIC(p <= 18, s) into a bigint, ~0.2 s of server CPU
per 2M values) and it does not say how many rows the COPY sent (so a second connection counted
the window, another ~0.2 s of server CPU). On 2 cores shared with the server, that CPU is wall
time. The optional C extension `_pg_copy` (built by setup.py when libpq's headers are there)
reads `COPY (SELECT ...) TO STDOUT (FORMAT binary)` with libpq on its own connection, which
imports the window's exported snapshot (`SET TRANSACTION SNAPSHOT`), so it reads exactly the
rows the snapshot sees; it decodes NUMERIC's base-10000 digits into decimal128 exactly and
takes the COPY's command tag ("COPY n", the server's own tally of the rows it sent) as the
window's count, which a reader that lost a row cannot match.

Bound values reach the server as transaction settings (`set_config($1, $2, true)`, bound, never
written into SQL), read back by `current_setting` in the query, as on the ADBC path. Only columns
whose binary form maps exactly onto the catalog's Arrow type are read this way: the result's
type OIDs are checked (`describe`) before the COPY starts, and `Unsupported` leaves the caller
to read through ADBC. Measured in the README's Performance section.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from delta_platform.errors import SourceError, reader_error
from delta_platform.source.buffers import read_batches

try:
    from delta_platform.source import _pg_copy as _ext
except ImportError:  # the optional extension was not built
    _ext = None  # type: ignore[assignment]

#: Why the extension is missing, for a forced read (DELTA_PLATFORM_PG_COPY=1).
UNAVAILABLE = None if _ext is not None else "the C extension delta_platform.source._pg_copy is not built"

Unsupported: type[Exception] = _ext.Unsupported if _ext is not None else RuntimeError
Error: type[Exception] = _ext.Error if _ext is not None else RuntimeError
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?")  # pg_export_snapshot() output

# Type OIDs (pg_type.h); domains arrive as their base type.
_BOOL, _BYTEA, _NAME, _INT8, _INT2, _INT4, _TEXT, _JSON, _XML = 16, 17, 19, 20, 21, 23, 25, 114, 142
_FLOAT4, _FLOAT8, _BPCHAR, _VARCHAR, _DATE, _TIME = 700, 701, 1042, 1043, 1082, 1083
_TIMESTAMP, _TIMESTAMPTZ, _NUMERIC, _UUID, _JSONB = 1114, 1184, 1700, 2950, 3802
_TEXTLIKE = {_NAME, _TEXT, _JSON, _XML, _BPCHAR, _VARCHAR}
_INTS = {_INT2, _INT4, _INT8}


def available() -> bool:
    return _ext is not None


def may_read(schema: pa.Schema) -> bool:
    """Whether every column's Arrow type is one the C reader can produce (before any OID)."""
    return _ext is not None and len(schema) > 0 and all(_producible(f.type) for f in schema)


def _producible(t: pa.DataType) -> bool:
    return (
        pa.types.is_boolean(t)
        or (pa.types.is_signed_integer(t) and t.bit_width >= 16)
        or pa.types.is_float32(t)
        or pa.types.is_float64(t)
        or _plain_decimal(t)
        or pa.types.is_date32(t)
        or (pa.types.is_timestamp(t) and t.unit == "us")
        or (pa.types.is_time64(t) and t.unit == "us")
        or pa.types.is_string(t)
        or pa.types.is_binary(t)
    )


def _plain_decimal(t: pa.DataType) -> bool:
    """decimal128 with 0 <= scale <= precision (PostgreSQL also allows NUMERIC(5, -2), (3, 5))."""
    return pa.types.is_decimal128(t) and 0 <= t.scale <= t.precision


def column_plan(oid: int, arrow: pa.DataType) -> tuple[int, int, int] | None:
    """(kind, precision, scale) for the C reader, or None when the column is not read exactly."""
    if _ext is None:
        return None
    if oid == _BOOL and pa.types.is_boolean(arrow):
        return (_ext.K_BOOL, 0, 0)
    if oid in _INTS and pa.types.is_signed_integer(arrow):
        kind = {16: _ext.K_INT16, 32: _ext.K_INT32, 64: _ext.K_INT64}.get(arrow.bit_width)
        return None if kind is None else (kind, 0, 0)
    if oid == _FLOAT4 and pa.types.is_float32(arrow):
        return (_ext.K_FLOAT32, 0, 0)
    if oid in (_FLOAT4, _FLOAT8) and pa.types.is_float64(arrow):
        return (_ext.K_FLOAT64, 0, 0)
    if oid == _NUMERIC and _plain_decimal(arrow):
        return (_ext.K_DECIMAL, arrow.precision, arrow.scale)
    if oid == _DATE and pa.types.is_date32(arrow):
        return (_ext.K_DATE, 0, 0)
    if pa.types.is_timestamp(arrow) and arrow.unit == "us":
        # timestamptz travels as UTC microseconds; a naive column lands naive.
        if (oid == _TIMESTAMPTZ and arrow.tz == "UTC") or (oid == _TIMESTAMP and arrow.tz is None):
            return (_ext.K_TIMESTAMP, 0, 0)
        return None
    if oid == _TIME and pa.types.is_time64(arrow) and arrow.unit == "us":
        return (_ext.K_TIME, 0, 0)
    if pa.types.is_string(arrow):
        if oid in _TEXTLIKE:
            return (_ext.K_TEXT, 0, 0)
        if oid == _JSONB:
            return (_ext.K_JSONB, 0, 0)
        if oid == _UUID:
            return (_ext.K_UUID, 0, 0)
    if oid == _BYTEA and pa.types.is_binary(arrow):
        return (_ext.K_BINARY, 0, 0)
    return None


class CopyRead:
    """One window's SELECT, read as a binary COPY in an imported snapshot; `close` is idempotent.

    `settings` are the transaction-local settings the SELECT reads its bound values from;
    `local` are further `SET LOCAL` statements of our own (planner switches), never values.
    """

    def __init__(
        self,
        uri: str,
        snapshot_id: str,
        sql: str,
        settings: list[tuple[str, str]],
        local: list[str],
        schema: pa.Schema,
        *,
        table: str,
    ):
        if not _SNAPSHOT_ID.fullmatch(snapshot_id):
            raise ValueError(f"not an exported snapshot id: {snapshot_id!r}")
        self.schema = schema
        self.table = table
        self._reader: Any = None
        try:
            self._reader = _ext.Reader(uri.encode())
            self._reader.execute(
                (
                    "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;"
                    f"SET TRANSACTION SNAPSHOT '{snapshot_id}';"
                    "SET LOCAL TIME ZONE 'UTC'; SET LOCAL jit = off;"
                    + "".join(f"SET LOCAL {stmt};" for stmt in local)
                ).encode(),
                (),
            )
            if settings:
                calls = ", ".join(
                    f"set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(len(settings))
                )
                values = tuple(v.encode() for pair in settings for v in pair)
                self._reader.execute(f"SELECT {calls}".encode(), values)
            types = self._reader.describe(sql.encode())
            plan = self._plan(types)
            self._reader.copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)".encode(), plan)
        except Unsupported:
            self.close()
            raise
        except Error as exc:
            self.close()
            raise self._error(exc) from None
        except BaseException:
            self.close()
            raise

    def _plan(self, types: list[tuple[int, int]]) -> tuple[tuple[int, int, int], ...]:
        if len(types) != len(self.schema):
            raise Unsupported("the result has other columns than the catalog", -1, 0)
        plan = []
        for i, ((oid, _typmod), field) in enumerate(zip(types, self.schema, strict=True)):
            kind = column_plan(oid, field.type)
            if kind is None:
                raise Unsupported(f"type OID {oid} is not read as {field.type} exactly", i, 0)
            plan.append(kind)
        return tuple(plan)

    def _error(self, exc: BaseException) -> SourceError:
        return reader_error(exc, self.schema.names, table=self.table, what="binary COPY read")

    @property
    def served(self) -> int | None:
        """The server's count of the rows the COPY sent, once it was read to its end."""
        return None if self._reader is None else self._reader.served

    def batches(self, rows: int) -> Iterator[pa.RecordBatch]:
        what = "binary COPY read"
        return read_batches(self._reader, rows, self.schema, error=Error, table=self.table, what=what)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
