"""Record batches from the Arrow buffers the C readers (`_mysql_binary`, `_pg_copy`) fill.

Both readers hand over, per batch, `(rows, [(validity | None, null_count, values, data | None)])`
as bytes objects; here they become arrays without a copy (`pa.Array.from_buffers`). Text is
validated as UTF-8: a server may send bytes it never checked (MySQL's binary strings under a
text type, a PostgreSQL SQL_ASCII database), and an invalid string array must never reach
Parquet.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from delta_platform.errors import SourceError, reader_error


def read_batches(
    reader: Any, rows: int, schema: pa.Schema, *, error: type[BaseException], table: str, what: str
) -> Iterator[pa.RecordBatch]:
    """Fetch `rows` at a time from a C reader until it is done; its errors as SourceError."""
    while True:
        try:
            got = reader.fetch(rows)
        except error as exc:
            raise reader_error(exc, schema.names, table=table, what=what) from None
        if got is None:
            return
        yield batch_from_buffers(*got, schema, table=table)


def batch_from_buffers(
    n: int, columns: list[tuple[Any, ...]], schema: pa.Schema, *, table: str
) -> pa.RecordBatch:
    arrays = []
    for field, (validity, nulls, values, data) in zip(schema, columns, strict=True):
        bufs = [None if validity is None else pa.py_buffer(validity), pa.py_buffer(values)]
        if data is not None:
            bufs.append(pa.py_buffer(data))
        arr = pa.Array.from_buffers(field.type, n, bufs, null_count=nulls)
        if pa.types.is_string(field.type):
            try:
                arr.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise SourceError(
                    f"text is not valid UTF-8: {exc}", table=table, attribute=field.name
                ) from None
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
