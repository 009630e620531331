"""MySQL/MariaDB "packed CSV" reads: the server renders each row as one CSV line.

A Python DB-API driver builds one object per value (~10 s per million rows of seven columns);
here it builds one `bytes` per row and Arrow's C++ CSV parser turns a whole batch into the
catalog's exact types. The select list is replaced by

    CONCAT_WS(',', <field>, ...)

where a numeric / temporal field is its server text (`IFNULL(col, '')`: NULL is an empty,
unquoted field; NOT NULL columns skip the IFNULL) and a text or binary field is quoted with `"`
doubled (`'""'` is the empty string, never NULL). Text is converted to utf8mb4 before it is
concatenated (unless every text column already is utf8mb4 in the table's one default collation),
and the reader sets `character_set_results = binary` while it reads the lines
(`MySQLSnapshot.stream`), so neither the column charsets nor the connection charset can re-encode
them and both drivers hand back bytes. (A `CAST(... AS BINARY)` around the line did the same at
~15% of the server's packing time.) The WHERE clause, ORDER BY and LIMIT are the statement's own;
its values stay bound parameters.

Only types whose server text Arrow parses back exactly are packed (`packed_select` returns
None otherwise and the caller reads value by value). TIMESTAMP values are printed in the
session time zone, which `MySQLDialect.session_setup` pins to '+00:00'.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

#: Arrow's CSV block: larger than any batch we hand it, so one batch parses as one chunk.
_BLOCK_BYTES = 1 << 26


class _Utf8(FunctionElement[str]):
    """`CONVERT(x USING utf8mb4)`: every text piece in one encoding before concatenation."""

    type = sa.String()
    name = "convert_utf8mb4"
    inherit_cache = True


@compiles(_Utf8)
def _compile_utf8(element: _Utf8, compiler: Any, **kw: Any) -> str:
    return f"CONVERT({compiler.process(element.clauses, **kw)} USING utf8mb4)"


def _is_text(arrow: pa.DataType) -> bool:
    return pa.types.is_string(arrow) or pa.types.is_large_string(arrow)


def _is_binary(arrow: pa.DataType) -> bool:
    return pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow)


def field_kind(sa_type: sa.types.TypeEngine[Any], arrow: pa.DataType) -> str | None:
    """How a column is packed: 'plain', 'text', 'binary', or None (not packable).

    The reflected SQL type must agree with the Arrow type, so odd columns the catalog maps to
    string by default (BIT, TIME, YEAR, spatial, NullType) stay on the value-by-value path.
    """
    if isinstance(sa_type, sa.Boolean):
        return None  # TINYINT(1) may hold 2..127; the per-value path decides what that means
    if pa.types.is_integer(arrow) and isinstance(sa_type, sa.Integer):
        return "plain"
    if pa.types.is_decimal(arrow) and isinstance(sa_type, sa.Numeric) and not isinstance(sa_type, sa.Float):
        return "plain"
    if pa.types.is_float64(arrow) and isinstance(sa_type, sa.Double | mysql.DOUBLE | mysql.REAL):
        return "plain"  # DOUBLE prints its shortest round-trip form; single FLOAT does not
    if pa.types.is_date32(arrow) and isinstance(sa_type, sa.Date):
        return "plain"
    if pa.types.is_timestamp(arrow) and isinstance(sa_type, sa.DateTime):
        return "plain"
    binary = isinstance(sa_type, sa.types._Binary | sa.LargeBinary)
    if _is_text(arrow) and isinstance(sa_type, sa.String | sa.JSON) and not binary:
        return "text"
    if _is_binary(arrow) and binary:
        return "binary"
    return None


def packed_select(stmt: sa.Select[Any], schema: pa.Schema) -> sa.Select[Any] | None:
    """`stmt` with its select list replaced by one packed CSV line, or None if not packable."""
    columns = list(stmt.selected_columns)
    if len(columns) != len(schema) or not columns:
        return None
    kinds = [field_kind(col.type, field.type) for col, field in zip(columns, schema, strict=True)]
    if None in kinds:
        return None
    texts = [col for col, kind in zip(columns, kinds, strict=True) if kind == "text"]
    convert = not _one_utf8mb4_collation(texts)
    parts: list[sa.ColumnElement[Any]] = []
    for col, field, kind in zip(columns, schema, kinds, strict=True):
        expr: sa.ColumnElement[Any] = col
        if kind == "text" and convert:
            expr = _Utf8(expr)
        if kind != "plain":
            expr = sa.func.concat('"', sa.func.replace(expr, '"', '""'), '"')
        # A NOT NULL column needs no IFNULL (~10% of the server's packing time): were a NULL
        # ever to appear, CONCAT_WS would drop its field and the line fail to parse, loudly.
        parts.append(sa.func.ifnull(expr, "") if field.nullable else expr)
    line = sa.func.concat_ws(",", *parts)  # read with character_set_results = binary
    return stmt.with_only_columns(line.label("packed_line"), maintain_column_froms=True)


def _one_utf8mb4_collation(texts: list[sa.ColumnElement[Any]]) -> bool:
    """True when every text column is utf8mb4 in one collation: no CONVERT is needed then.

    Reflection states a column's charset or collation only when it differs from its table's
    default, so columns stating neither, of one table whose default charset is utf8mb4, agree.
    Any other case (a column-level charset, views, expressions) keeps the CONVERTs, which also
    put every piece in one collation (MySQL refuses to concatenate two implicit collations).
    Skipping them saves ~15% of the server's packing time.
    """
    tables = {getattr(col, "table", None) for col in texts}
    if len(tables) != 1:
        return not texts
    table = tables.pop()
    if not isinstance(table, sa.Table):
        return False
    for col in texts:
        t = col.type
        if getattr(t, "charset", None) or getattr(t, "collation", None) or getattr(t, "national", False):
            return False
    defaults = {k.split("_", 1)[1]: v for k, v in table.dialect_kwargs.items() if "_" in k}
    return str(defaults.get("default charset") or "").lower() == "utf8mb4"


class LineParser:
    """Turns batches of packed lines back into record batches of `schema`."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        parse_types = {f.name: _parse_type(f.type) for f in schema}
        self._parse_schema = pa.schema([pa.field(n, t) for n, t in parse_types.items()])
        self._read = pcsv.ReadOptions(column_names=schema.names, block_size=_BLOCK_BYTES)
        # ignore_empty_lines=False: a one-column row holding NULL is an empty line, still a row.
        # Every line ends with a newline: an empty last field right at the end of the text,
        # after a quoted field, is read as '' instead of NULL (Arrow 26), and a text of one
        # empty line would be an "empty CSV file".
        self._parse = pcsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False)
        self._convert = pcsv.ConvertOptions(
            column_types=parse_types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,  # '""' is the empty string, never NULL
            true_values=[],
            false_values=[],
        )

    def parse(self, lines: list[bytes]) -> Iterator[pa.RecordBatch]:
        """One batch of lines (no trailing newlines) as record batches of the target schema."""
        if not lines:
            return
        lines.append(b"")  # end with a newline: see __init__
        text = b"\n".join(lines)
        del lines
        table = pcsv.read_csv(pa.BufferReader(text), self._read, self._parse, self._convert)
        del text
        for batch in table.to_batches():
            yield _label_utc(batch, self.schema)


def _parse_type(target: pa.DataType) -> pa.DataType:
    """What Arrow's CSV reader parses a column as; `_label_utc` casts it to the target."""
    if pa.types.is_timestamp(target):
        return pa.timestamp(target.unit)  # TIMESTAMP text carries no zone (the session is UTC)
    if pa.types.is_decimal256(target):
        return pa.string()  # the CSV reader has no decimal256; the cast from text is exact
    return target


def _label_utc(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    pairs = zip(batch.columns, schema, strict=True)
    arrays = [col if col.type.equals(f.type) else col.cast(f.type) for col, f in pairs]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def pymysql_lines(cursor: Any, batch_rows: int) -> Iterator[list[bytes]]:
    """Packed lines from an executed pymysql SSCursor, a list per batch.

    pymysql's public `fetchmany` builds a row tuple through its converter loop; with a single
    BINARY column only the length-coded payload is needed, read straight off each packet
    (about a third less CPU). Falls back to `fetchmany` if pymysql's internals ever change.
    """
    result = getattr(cursor, "_result", None)
    conn = getattr(result, "connection", None)
    if not (
        result is not None
        and getattr(result, "unbuffered_active", False)
        and hasattr(conn, "_read_packet")
        and hasattr(result, "_check_packet_is_eof")
    ):
        yield from fetchmany_lines(cursor, batch_rows)
        return
    read_packet = conn._read_packet
    is_eof = result._check_packet_is_eof
    while result.unbuffered_active:
        out: list[bytes] = []
        append = out.append
        for _ in range(batch_rows):
            packet = read_packet()
            if is_eof(packet):
                # the same end-of-result bookkeeping as pymysql's _read_rowdata_packet_unbuffered
                result.unbuffered_active = False
                result.connection = None
                result.rows = None
                break
            append(packet.read_length_coded_string())
        if out:
            yield out


def fetchmany_lines(cursor: Any, batch_rows: int) -> Iterator[list[bytes]]:
    """Packed lines through the DB-API (mysqlclient's fetch is C already)."""
    while rows := cursor.fetchmany(batch_rows):
        yield [r[0] for r in rows]


def parse_all(batches: Iterable[list[bytes]], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Every batch of lines parsed with one parser."""
    parser = LineParser(schema)
    for lines in batches:
        yield from parser.parse(lines)
