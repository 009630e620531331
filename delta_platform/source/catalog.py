"""Arrow types from the source catalog: exact decimals, UTC timestamps, never a silent float."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, oracle, postgresql

from delta_platform.core.watermark import Kind
from delta_platform.errors import SourceError

# Unconstrained NUMERIC / Oracle NUMBER: widest exact decimal; a value that does not fit fails
# the cast loudly instead of being rounded.
UNCONSTRAINED_DECIMAL = pa.decimal128(38, 10)


def arrow_type(col_type: sa.types.TypeEngine[Any], dialect: str, *, table: str, column: str) -> pa.DataType:
    """Map one reflected column type to the Arrow type it lands as in Parquet."""
    t = col_type
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if dialect == "mysql" and isinstance(t, mysql.TIMESTAMP):
        return pa.timestamp("us", tz="UTC")  # MySQL TIMESTAMP is an instant; session runs in UTC
    if isinstance(t, sa.DateTime):
        return pa.timestamp("us", tz="UTC") if getattr(t, "timezone", False) else pa.timestamp("us")
    if isinstance(t, sa.Date):
        return pa.date32()
    if isinstance(t, sa.Time):
        return pa.time64("us")
    if isinstance(t, sa.Interval) or (dialect == "postgresql" and isinstance(t, postgresql.INTERVAL)):
        return pa.duration("us")
    if dialect == "oracle" and isinstance(t, oracle.NUMBER):
        p, s = t.precision, t.scale
        if p is None and s is None:
            return UNCONSTRAINED_DECIMAL
        if (s or 0) == 0 and p is not None and p <= 18:
            return pa.int64()
        return _decimal(p or 38, s or 0)
    if isinstance(t, sa.Float | sa.Double):
        return pa.float64()
    if isinstance(t, sa.Numeric):
        if t.precision is None:
            return UNCONSTRAINED_DECIMAL
        return _decimal(t.precision, t.scale or 0)
    if isinstance(t, sa.SmallInteger):
        return pa.int16()
    if isinstance(t, sa.BigInteger):
        return pa.int64()
    if isinstance(t, sa.Integer):
        # SQLite INTEGER is 64-bit; elsewhere INTEGER is 32-bit.
        return pa.int64() if dialect == "sqlite" else pa.int32()
    if isinstance(t, sa.LargeBinary | sa.types._Binary):
        return pa.binary()
    if isinstance(t, sa.String | sa.Enum | sa.JSON | sa.Uuid):
        return pa.string()
    if isinstance(t, sa.types.NullType):
        return pa.string()
    if dialect == "postgresql" and isinstance(t, postgresql.ARRAY):
        raise SourceError(f"array columns are not supported yet (type {t})", table=table, attribute=column)
    return pa.string()


def _decimal(precision: int, scale: int) -> pa.DataType:
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def cursor_kind(arrow: pa.DataType, *, table: str, column: str) -> Kind:
    """The watermark kind for a cursor column; floats are refused because they are not exact."""
    if pa.types.is_integer(arrow):
        return Kind.INT
    if pa.types.is_decimal(arrow):
        return Kind.DECIMAL
    if pa.types.is_date(arrow):
        return Kind.DATE
    if pa.types.is_timestamp(arrow):
        return Kind.TIMESTAMPTZ if arrow.tz else Kind.TIMESTAMP
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        return Kind.STRING
    raise SourceError(
        f"a {arrow} column cannot be an exact cursor (use an integer, decimal, date, timestamp or text)",
        table=table,
        attribute="filtercolumn",
    )


def conform(batch: pa.RecordBatch, schema: pa.Schema, *, table: str) -> pa.RecordBatch:
    """Cast a driver's batch to the catalog schema; a lossy cast raises and names the column."""
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    arrays = []
    for i, field in enumerate(schema):
        arr = batch.column(i)
        if isinstance(arr.type, pa.ExtensionType | pa.BaseExtensionType):
            arr = arr.storage  # ADBC PostgreSQL ships NUMERIC as an opaque string extension
        if not arr.type.equals(field.type):
            try:
                arr = _cast(arr, field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SourceError(
                    f"cannot convert {arr.type} to {field.type} exactly: {exc}",
                    table=table,
                    attribute=field.name,
                ) from None
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _cast(arr: pa.Array, target: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(target) and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        # SQLite keeps timestamps as ISO text; parse at microsecond precision.
        parsed = arr.cast(pa.timestamp("us"))
        return parsed.cast(target) if target.tz is None else _assume_utc(parsed, target)
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(arr.type):
        if target.tz and not arr.type.tz:
            return _assume_utc(arr, target)
        if arr.type.tz and not target.tz:
            return arr.cast(pa.timestamp(arr.type.unit)).cast(target)
    if pa.types.is_decimal(target) and pa.types.is_floating(arr.type):
        # A float stored in a DECIMAL column (SQLite affinity): go through its shortest repr.
        import pyarrow.compute as pc

        return pc.cast(pc.cast(arr, pa.string()), target)
    return arr.cast(target, safe=True)


def _assume_utc(arr: pa.Array, target: pa.DataType) -> pa.Array:
    import pyarrow.compute as pc

    naive = arr.cast(pa.timestamp(target.unit))
    return pc.assume_timezone(naive, "UTC").cast(target)
