"""Shared pieces of the benchmark harness: connection URLs, the exact schema, result checks."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DBS = ("postgres", "mariadb", "sqlite")
BENCH = "bench"  # PostgreSQL schema, MariaDB database, SQLite file stem
TABLE = "orders"
COLUMNS = ("id", "customer_id", "status", "amount", "note", "created_at", "updated_at")
ROW_GROUP_ROWS = 524_288

#: What an exact copy of the source columns looks like in Arrow (types from the catalog).
EXACT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("customer_id", pa.int32()),
        pa.field("status", pa.string()),
        pa.field("amount", pa.decimal128(12, 2)),
        pa.field("note", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)


def default_url(db: str) -> str:
    """SQLAlchemy URL of the benchmark database for `db` (environment overrides win)."""
    if db == "postgres":
        return os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    if db == "mariadb":
        return os.environ.get("BENCH_MARIADB_URL", f"mysql+pymysql://root@127.0.0.1:3306/{BENCH}")
    if db == "sqlite":
        path = os.environ.get("BENCH_SQLITE_PATH", f"/tmp/delta_platform_bench/{BENCH}.sqlite")
        return f"sqlite:///{path}"
    raise ValueError(f"unknown db {db!r}")


def plain_url(url: str, scheme: str | None = None) -> str:
    """The SQLAlchemy URL without its `+driver` part (what libpq, ADBC and connectorx want)."""
    head, rest = url.split("://", 1)
    return f"{scheme or head.split('+', 1)[0]}://{rest}"


def sqlite_path(url: str) -> str:
    """File path of a `sqlite:///...` URL."""
    return url.split(":///", 1)[1]


def mysql_params(url: str) -> dict[str, Any]:
    """Keyword arguments for pymysql / MySQLdb connect from a SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return {
        "host": u.host or "127.0.0.1",
        "port": u.port or 3306,
        "user": u.username or "root",
        "password": u.password or "",
        "database": u.database,
    }


@dataclass
class Window:
    """The half-open window `low < updated_at <= high`, in the form each database compares."""

    low: Any
    high: Any

    def literal(self, db: str) -> tuple[str, str]:
        """SQL literals of the bounds (for tools that cannot bind parameters)."""
        if db == "postgres":
            return (f"'{self.low.isoformat(sep=' ')}'", f"'{self.high.isoformat(sep=' ')}'")
        if db == "mariadb":
            return (f"'{self.low:%Y-%m-%d %H:%M:%S.%f}'", f"'{self.high:%Y-%m-%d %H:%M:%S.%f}'")
        return (f"'{self.low}'", f"'{self.high}'")


def select_sql(db: str, placeholder: str | None = None, window: Window | None = None, hint: str = "") -> str:
    """The window query; bounds either as `placeholder` markers or inlined from `window`."""
    table = f"{BENCH}.{TABLE}" if db in ("postgres", "mariadb") else TABLE
    if window is not None:
        low, high = window.literal(db)
    else:
        assert placeholder is not None
        low = high = placeholder
    cols = ", ".join(COLUMNS)
    return f"SELECT {cols} FROM {table}{hint} WHERE updated_at > {low} AND updated_at <= {high}"


@dataclass
class PeerResult:
    """What a peer produced: rows and exact sum(amount) read back from its Parquet output."""

    rows: int
    amount_sum: Decimal | None
    out_bytes: int
    loses: str
    verify_s: float = 0.0  # time spent in summarize(); the harness subtracts it from the wall


class ParquetSink:
    """Parquet snappy writer that groups incoming batches into large row groups."""

    def __init__(self, path: str | Path, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS):
        self.schema = schema
        self.row_group_rows = row_group_rows
        self._writer = pq.ParquetWriter(str(path), schema, compression="snappy")
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        """Buffer `batch`; flush a row group once enough rows are pending."""
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending_rows:
            table = pa.Table.from_batches(self._pending, self.schema)
            self._writer.write_table(table, row_group_size=max(self._pending_rows, 1))
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        """Flush the tail and close the file."""
        self._flush()
        self._writer.close()

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parquet_files(out_dir: str | Path) -> list[Path]:
    """Parquet files of the orders table under `out_dir` (dlt nests them in dataset folders)."""
    root = Path(out_dir)
    files = sorted(root.rglob("*.parquet"))
    nested = [f for f in files if f.parent.name == TABLE]
    return nested or [f for f in files if not f.name.startswith("_dlt")]


def exact_amount_sum(column: pa.ChunkedArray) -> Decimal:
    """Exact sum of the amount column, whatever type the peer wrote it as."""
    t = column.type
    if pa.types.is_decimal(t):
        total = pc.sum(column.cast(pa.decimal128(38, t.scale))).as_py()
    elif pa.types.is_floating(t):  # round each value back to cents, then sum integers
        cents = pc.round(pc.multiply(column, 100.0)).cast(pa.int64())
        total = Decimal(pc.sum(cents).as_py() or 0) / 100
    elif pa.types.is_integer(t):
        total = Decimal(pc.sum(column).as_py() or 0)
    else:  # text
        total = pc.sum(column.cast(pa.string()).cast(pa.decimal128(38, 10))).as_py()
    return Decimal(total or 0).quantize(Decimal("0.01"))


def describe_losses(schema: pa.Schema, extra: str = "") -> str:
    """Name what the written schema loses against EXACT_SCHEMA ("—" when nothing)."""
    losses: list[str] = []
    names = set(schema.names)
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        losses.append("drops " + ",".join(missing))
    added = [n for n in schema.names if n not in COLUMNS]
    if added:
        losses.append("adds columns")
    if "amount" in names:
        t = schema.field("amount").type
        if isinstance(t, pa.ExtensionType) or "extension" in str(t):
            losses.append("numeric as text (opaque extension)")
        elif pa.types.is_decimal(t):
            if (t.precision, t.scale) != (12, 2):
                losses.append(f"decimal widened to ({t.precision},{t.scale})")
        elif pa.types.is_floating(t):
            losses.append("float amount")
        else:
            losses.append(f"amount as {t}")
    for col in ("created_at", "updated_at"):
        if col not in names:
            continue
        t = schema.field(col).type
        if not pa.types.is_timestamp(t):
            losses.append("timestamps as text")
            break
        if t.tz is None:
            losses.append("no time zone")
            break
        if t.unit != "us":
            losses.append(f"timestamps in {t.unit}")
            break
    for col in ("id", "customer_id"):
        if col in names and pa.types.is_floating(schema.field(col).type):
            losses.append(f"{col} as float")
    if extra:
        losses.append(extra)
    return "; ".join(losses) or "—"


def summarize(out_dir: str | Path, extra_loss: str = "") -> PeerResult:
    """Read back a peer's Parquet output: rows, exact sum(amount), bytes, losses."""
    started = time.perf_counter()
    files = parquet_files(out_dir)
    if not files:
        raise RuntimeError(f"no Parquet output under {out_dir}")
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    schema = pq.read_schema(files[0])
    amounts = pq.read_table([str(f) for f in files], columns=["amount"]).column("amount")
    return PeerResult(
        rows=rows,
        amount_sum=exact_amount_sum(amounts),
        out_bytes=sum(f.stat().st_size for f in files),
        loses=describe_losses(schema, extra_loss),
        verify_s=time.perf_counter() - started,
    )
