"""A source database: SQLAlchemy supplies the dialect, the quoting and the catalog; rows travel as Arrow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from delta_platform.control_entry import ControlEntry
from delta_platform.core.predicate import sql_predicate
from delta_platform.core.watermark import Kind, Watermark
from delta_platform.core.window import Window
from delta_platform.errors import SourceError
from delta_platform.source import pg_connections
from delta_platform.source.catalog import arrow_type, cursor_kind
from delta_platform.source.dialects import Drain, SourceDialect, dialect_for
from delta_platform.source.snapshot import (
    TABLE_SCAN_OPTION,
    Snapshot,
    adbc_uri,
    copies_postgresql,
    open_snapshot,
)

__all__ = ["Probe", "Source", "TableInfo", "Snapshot"]


@dataclass(frozen=True)
class TableInfo:
    """A source table as the catalog describes it, with the entry's cursor resolved."""

    table: sa.Table
    schema: pa.Schema
    cursor: sa.ColumnElement[Any]
    kind: Kind
    entry: ControlEntry


@dataclass(frozen=True)
class Probe:
    """What the source said at the run's start T0, in the cursor's kind."""

    max_at_start: Watermark | None
    clock: Watermark | None
    drain: Drain


class Source:
    """One source connection; engines and probes open their own sessions from it."""

    def __init__(self, url: str | sa.URL, *, attach: dict[str, str] | None = None, **engine_kwargs: Any):
        if sa.make_url(url).get_backend_name() == "sqlite":
            # The reader uses ADBC's own SQLite; two SQLite libraries must never hold the same
            # file open at once in one process (their POSIX locks don't see each other).
            engine_kwargs.setdefault("poolclass", sa.pool.NullPool)
        if sa.make_url(url).get_backend_name() == "postgresql":
            # Our sessions only read; the fence skips them by this name (dialects.open_transactions).
            engine_kwargs.setdefault("connect_args", {}).setdefault("application_name", "delta_platform")
        self.engine = sa.create_engine(url, **engine_kwargs)
        self.attach = dict(attach or {})
        if self.engine.dialect.name == "sqlite" and self.attach:
            sa.event.listen(self.engine, "connect", self._attach_sqlite)
        self.dialect: SourceDialect = dialect_for(self.engine)
        self._tables: dict[tuple[str, str], sa.Table] = {}

    def _attach_sqlite(self, dbapi_conn: Any, _record: Any) -> None:
        quote = self.engine.dialect.identifier_preparer.quote
        for alias, path in self.attach.items():
            dbapi_conn.execute(f"ATTACH DATABASE ? AS {quote(alias)}", (path,))

    @property
    def dialect_name(self) -> str:
        return self.engine.dialect.name

    def __repr__(self) -> str:  # never the password
        return f"Source({self.engine.url.render_as_string(hide_password=True)})"

    def reflect(self, schema: str, name: str, *, table_name: str) -> sa.Table:
        key = (schema, name)
        if key not in self._tables:
            try:
                self._tables[key] = self._columns_only(schema, name)
            except sa.exc.NoSuchTableError:
                raise SourceError(
                    f"source table {schema}.{name} does not exist", table=table_name, attribute="sourceTable"
                ) from None
            except sa.exc.SQLAlchemyError as exc:
                raise SourceError(
                    f"cannot read the catalog of {schema}.{name}: {type(exc).__name__}",
                    table=table_name,
                    attribute="sourceTable",
                ) from None
        return self._tables[key]

    def _columns_only(self, schema: str, name: str) -> sa.Table:
        """The table as its columns: names, types, nullability: all a window's SELECT needs.

        A full autoload also reads keys, indexes and constraints (~40 ms on PostgreSQL against
        ~10 ms), paid by every load, and an hourly load of a few rows is mostly such costs.
        """
        columns = sa.inspect(self.engine).get_columns(name, schema=schema)
        if not columns:  # some dialects answer an unknown table with no columns
            raise sa.exc.NoSuchTableError(f"{schema}.{name}")
        return sa.Table(
            name,
            sa.MetaData(),
            *(sa.Column(c["name"], c["type"], nullable=c["nullable"]) for c in columns),
            schema=schema,
        )

    def describe(self, entry: ControlEntry) -> TableInfo:
        """Reflect the table and resolve the cursor column (or expression) and its kind."""
        if self.dialect_name == "postgresql" and not copies_postgresql():
            pg_connections.warm(adbc_uri(self.engine.url))  # the reader's connections, meanwhile
        name = entry.target_table_name
        table = self.reflect(entry.source_schema, entry.source_table, table_name=name)
        fields = [
            pa.field(
                c.name,
                arrow_type(c.type, self.dialect_name, table=name, column=c.name),
                nullable=bool(c.nullable),
            )
            for c in table.columns
        ]
        schema = pa.schema(fields)

        def column(col: str, attribute: str) -> sa.Column[Any]:
            if col not in table.c:
                raise SourceError(
                    f"column {col!r} does not exist in {entry.source_schema}.{entry.source_table}",
                    table=name,
                    attribute=attribute,
                )
            return table.c[col]

        if entry.cursor_expression is not None:
            cols = [column(c, "cursorExpression") for c in entry.cursor_expression.columns]
            cursor: sa.ColumnElement[Any] = getattr(sa.func, entry.cursor_expression.function)(*cols)
            cursor = sa.type_coerce(cursor, cols[0].type)
            kind = cursor_kind(schema.field(cols[0].name).type, table=name, column=cols[0].name)
        else:
            cursor = column(entry.filter_column, "filtercolumn")
            kind = (
                cursor_kind(schema.field(entry.filter_column).type, table=name, column=entry.filter_column)
                if entry.filter_operator.needs_start
                else Kind.STRING
            )
        for pk in entry.primary_key:
            column(pk, "primaryKey")
        return TableInfo(table, schema, cursor, kind, entry)

    def predicate(self, info: TableInfo, window: Window) -> sa.ColumnElement[bool]:
        return sql_predicate(info.cursor, window, lambda mark: self.dialect.bind(mark, info.cursor))

    def select_window(self, info: TableInfo, window: Window, *, table_scan: bool = False) -> sa.Select[Any]:
        """The window's rows; `table_scan` asks the database to read the table, not an index.

        SQLite walks the cursor's index even for a window covering the table, one table lookup
        per row (1.2-2.2x slower than the scan): the hint is `NOT INDEXED`. PostgreSQL, whose
        window values reach the planner only as transaction settings, gets the same request
        as an execution option its snapshot turns into planner settings for the one read
        (`PgSnapshot.stream`). The hint changes the plan, never the rows; other dialects
        ignore it.
        """
        stmt = sa.select(*self.read_columns(info)).where(self.predicate(info, window))
        if table_scan:
            stmt = stmt.with_hint(info.table, "NOT INDEXED", dialect_name="sqlite")
            stmt = stmt.execution_options(**{TABLE_SCAN_OPTION: True})
        return stmt

    def read_columns(self, info: TableInfo, columns: Any = None) -> list[sa.ColumnElement[Any]]:
        """The select list of a window read: `columns` (default the table's), one per schema field.

        PostgreSQL types that land as text without being text (ranges, uuid, geometric and
        network types, types SQLAlchemy does not know) are read as `col::text`: ADBC hands
        their binary wire form over as bytes, which are no text (an int4range arrived as
        control bytes), and the binary COPY reader only decodes the types it knows.
        """
        cols = list(info.table.columns if columns is None else columns)
        if self.dialect_name != "postgresql":
            return cols
        out: list[sa.ColumnElement[Any]] = []
        for col, declared, field in zip(cols, info.table.columns, info.schema, strict=True):
            if pa.types.is_string(field.type) and not isinstance(declared.type, sa.String | sa.JSON):
                out.append(sa.cast(col, sa.Text).label(declared.name))
            else:
                out.append(col)
        return out

    def count_window(self, info: TableInfo, window: Window) -> sa.Select[Any]:
        return sa.select(sa.func.count()).select_from(info.table).where(self.predicate(info, window))

    def count_table(self, info: TableInfo) -> sa.Select[Any]:
        """All rows of the table (SQLite counts them off its smallest b-tree)."""
        return sa.select(sa.func.count()).select_from(info.table)

    def count_nulls(self, info: TableInfo) -> sa.Select[Any]:
        return sa.select(sa.func.count()).select_from(info.table).where(info.cursor.is_(None))

    def probe(self, info: TableInfo, *, max_wait: timedelta) -> Probe:
        """T0: MAX(cursor) and the clock first, then the open transactions, then the bounded wait."""
        with self.engine.connect() as conn:
            for stmt in self.dialect.session_setup():
                conn.exec_driver_sql(stmt)
            row = conn.execute(sa.select(sa.func.max(info.cursor), self.dialect.clock())).one()
            drain = self.dialect.drain(conn, max_wait.total_seconds())
            conn.rollback()
        table = info.entry.target_table_name
        max_mark = (
            None
            if row[0] is None
            else Watermark.parse(info.kind, _native(row[0], info.kind), table=table, attribute="filtercolumn")
        )
        clock_utc = self.dialect.parse_clock(row[1]).astimezone(UTC)
        return Probe(max_mark, to_kind(clock_utc, info.kind), drain)

    def to_kind(self, instant: datetime, kind: Kind) -> Watermark | None:
        return to_kind(instant, kind)

    @contextmanager
    def snapshot(self, info: TableInfo) -> Iterator[Snapshot]:
        with open_snapshot(
            self.engine, self.dialect, table=info.entry.target_table_name, attach=self.attach
        ) as snap:
            yield snap

    def dispose(self) -> None:
        self.engine.dispose()


def to_kind(instant: datetime, kind: Kind) -> Watermark | None:
    """A UTC instant (clock, partition end, transaction start) as a watermark of the cursor's kind."""
    if kind is Kind.TIMESTAMPTZ:
        return Watermark(kind, instant.astimezone(UTC))
    if kind is Kind.TIMESTAMP:
        return Watermark(kind, instant.astimezone(UTC).replace(tzinfo=None))
    if kind is Kind.DATE:
        return Watermark(kind, instant.astimezone(UTC).date())
    return None


def _native(value: Any, kind: Kind) -> Any:
    if isinstance(value, float):
        raise SourceError(f"the driver returned a float for a {kind} cursor")
    if kind is Kind.TIMESTAMPTZ and isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # MySQL TIMESTAMP read in a UTC session
    return value
