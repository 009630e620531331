"""MariaDB test tables for the MySQL reader tests (packed CSV and binary protocol)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from delta_platform.source.catalog import arrow_type


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
