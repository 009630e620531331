"""MariaDB test tables for the MySQL reader tests (packed CSV and binary protocol)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from delta_platform.source.catalog import arrow_type

#: Text values that break naive readers: separators, quotes, escapes, NUL, 4-byte UTF-8, lookalikes.
TEXTS: list[str | None] = [
    '',
    None,
    'a,b',
    '"quoted"',
    '""',
    'line\nbreak',
    'cr\r\nlf',
    'back\\slash',
    'trailing\\',
    '\\N',
    'NULL',
    'null',
    'ünïcødé 🎉 中文',
    ' lead and trail ',
    '\t',
    ',',
    '"',
    "'",
    '1e5',
    'NaN',
    'nul\x00byte',
    'ünïcødé 🎉 中文 𝄞',
    '?',
    '%s %%',
]
#: Binary values that break naive readers: every byte, quotes, separators, NUL, invalid UTF-8.
BYTES = [b"", None, bytes(range(256)), b'"', b"\n", b"\x00", b'a,"b"\r\n', b"\\", b"\xff\xfe"]


def create_table(
    engine: sa.Engine, ddl: str, name: str, rows: list[dict[str, Any]]
) -> tuple[sa.Table, pa.Schema]:
    """Run `ddl`, insert `rows` (UTC session) and return the reflected table and its catalog schema."""
    with engine.begin() as conn:
        conn.exec_driver_sql("SET SESSION time_zone = '+00:00'")
        conn.exec_driver_sql(ddl)
        table = sa.Table(name, sa.MetaData(), autoload_with=conn)
        if rows:
            conn.execute(table.insert(), rows)
    schema = pa.schema(
        [pa.field(c.name, arrow_type(c.type, "mysql", table=name, column=c.name)) for c in table.columns]
    )
    return table, schema
