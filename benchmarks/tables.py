"""Build the deterministic benchmark `orders` table in PostgreSQL, MariaDB or SQLite.

    python benchmarks/tables.py --db postgres --rows 1000000 [--rebuild]

Row i (1..N) is a pure function of i, so every database holds the same rows; a rebuild is
skipped when the table already has N rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    BENCH,
    DBS,
    TABLE,
    Window,
    default_url,
    mysql_params,
    plain_url,
    sqlite_path,
)

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
STATUSES = ("new", "paid", "shipped", "delivered", "cancelled")
CHUNK = 250_000

PG_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {BENCH};
DROP TABLE IF EXISTS {BENCH}.{TABLE};
CREATE TABLE {BENCH}.{TABLE} (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL,
    status text NOT NULL,
    amount numeric(12,2) NOT NULL,
    note text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
"""

MARIADB_DDL = (
    f"CREATE DATABASE IF NOT EXISTS {BENCH}",
    f"DROP TABLE IF EXISTS {BENCH}.{TABLE}",
    f"""CREATE TABLE {BENCH}.{TABLE} (
        id BIGINT NOT NULL PRIMARY KEY,
        customer_id INT NOT NULL,
        status VARCHAR(16) NOT NULL,
        amount DECIMAL(12,2) NOT NULL,
        note TEXT NULL,
        created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)

SQLITE_DDL = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (
    id INTEGER NOT NULL PRIMARY KEY,
    customer_id INTEGER NOT NULL,
    status VARCHAR(16) NOT NULL,
    amount NUMERIC(12, 2) NOT NULL,
    note TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
"""


def cents_to_decimal(cents: np.ndarray) -> pa.Array:
    """decimal128(12,2) whose unscaled values are the non-negative int64 `cents`."""
    words = np.zeros((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    buf = pa.py_buffer(words.tobytes())
    return pa.Array.from_buffers(pa.decimal128(12, 2), len(cents), [None, buf])


def chunk(start: int, stop: int) -> pa.Table:
    """Rows with ids start..stop-1 as an Arrow table; timestamps naive UTC."""
    ids = pa.array(range(start, stop), pa.int64())
    customer = pc.remainder(pc.multiply(ids, 7919), 100_003).cast(pa.int32())
    status = pc.take(pa.array(STATUSES), pc.remainder(ids, len(STATUSES)))
    cents = pc.remainder(pc.multiply(ids, 104_729), 1_000_000)
    amount = cents_to_decimal(cents.to_numpy())
    text = pc.binary_join_element_wise(
        "note ", ids.cast(pa.string()), " for customer ", customer.cast(pa.string()), ""
    )
    note = pc.if_else(pc.equal(pc.remainder(ids, 5), 0), pa.scalar(None, pa.string()), text)
    epoch_us = int(EPOCH.timestamp() * 1_000_000)
    created = pc.add(
        pc.add(pc.multiply(ids, 1_000_000), epoch_us), pc.remainder(pc.multiply(ids, 7), 1_000_000)
    )
    updated = pc.add(
        pc.add(created, pc.multiply(pc.remainder(pc.multiply(ids, 31), 86_400), 1_000_000)),
        pc.remainder(pc.multiply(ids, 13), 1_000_000),
    )
    return pa.table(
        {
            "id": ids,
            "customer_id": customer,
            "status": status,
            "amount": amount,
            "note": note,
            "created_at": created.cast(pa.timestamp("us")),
            "updated_at": updated.cast(pa.timestamp("us")),
        }
    )


def chunks(rows: int) -> Iterator[pa.Table]:
    """The table in CHUNK-row pieces."""
    for start in range(1, rows + 1, CHUNK):
        yield chunk(start, min(start + CHUNK, rows + 1))


def as_text(table: pa.Table) -> pa.Table:
    """Timestamps rendered 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's SQLite format)."""
    for name in ("created_at", "updated_at"):
        col = table.column(name).cast(pa.string())
        table = table.set_column(table.schema.get_field_index(name), name, col)
    return table


def csv_bytes(table: pa.Table) -> bytes:
    """CSV without header; strings quoted, NULL as an unquoted empty field."""
    buf = io.BytesIO()
    pcsv.write_csv(as_text(table), buf, pcsv.WriteOptions(include_header=False))
    return buf.getvalue()


def expected_sum(rows: int) -> Decimal:
    """Exact sum(amount) of the first `rows` rows, from the generator's formula."""
    cents = sum((i * 104_729) % 1_000_000 for i in range(1, rows + 1))
    return Decimal(cents) / 100


# --- per database ------------------------------------------------------------------------


def _pg_count(conninfo: str) -> int:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        reg = conn.execute("SELECT to_regclass(%s)", (f"{BENCH}.{TABLE}",)).fetchone()
        if reg is None or reg[0] is None:
            return -1
        return conn.execute(f"SELECT count(*) FROM {BENCH}.{TABLE}").fetchone()[0]


def build_postgres(url: str, rows: int) -> None:
    """COPY the rows in as CSV, then index and analyze."""
    import psycopg

    conninfo = plain_url(url)
    with psycopg.connect(conninfo) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(PG_DDL)
        with conn.cursor() as cur, cur.copy(f"COPY {BENCH}.{TABLE} FROM STDIN (FORMAT csv)") as cp:
            for piece in chunks(rows):
                cp.write(csv_bytes(piece))
        conn.execute(f"CREATE INDEX ON {BENCH}.{TABLE} (updated_at)")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {BENCH}.{TABLE}")


def _mariadb_connect(url: str, database: str | None = None):  # noqa: ANN202 - pymysql conn
    import pymysql

    params = mysql_params(url)
    params["database"] = database
    return pymysql.connect(**params, local_infile=True, autocommit=True)


def _mariadb_count(url: str) -> int:
    conn = _mariadb_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema=%s AND table_name=%s",
                (BENCH, TABLE),
            )
            if cur.fetchone()[0] == 0:
                return -1
            cur.execute(f"SELECT count(*) FROM {BENCH}.{TABLE}")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def build_mariadb(url: str, rows: int) -> None:
    """LOAD DATA LOCAL INFILE from a CSV temp file; the secondary index is added afterwards."""
    conn = _mariadb_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            for stmt in MARIADB_DDL:
                cur.execute(stmt)
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "orders.csv")
                with open(path, "wb") as fh:
                    for piece in chunks(rows):
                        fh.write(csv_bytes(piece))
                cur.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE {BENCH}.{TABLE} "
                    "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
                    "LINES TERMINATED BY '\\n' "
                    "(id, customer_id, status, amount, @note, created_at, updated_at) "
                    "SET note = NULLIF(@note, '')",
                    (path,),
                )
            cur.execute(f"CREATE INDEX orders_updated_at ON {BENCH}.{TABLE} (updated_at)")
            cur.execute(f"ANALYZE TABLE {BENCH}.{TABLE}")
            cur.fetchall()
    finally:
        conn.close()


def _sqlite_count(path: str) -> int:
    if not os.path.exists(path):
        return -1
    with sqlite3.connect(path) as conn:
        found = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)
        ).fetchone()[0]
        if not found:
            return -1
        return conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]


def build_sqlite(url: str, rows: int) -> None:
    """executemany in one transaction; amounts bound as text (NUMERIC affinity stores numbers)."""
    path = sqlite_path(url)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")
        conn.executescript(SQLITE_DDL)
        conn.execute("BEGIN")
        sql = f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)"
        for piece in chunks(rows):
            text = as_text(piece)
            cols = [text.column(i).to_pylist() for i in range(text.num_columns)]
            cols[3] = [str(a) for a in cols[3]]
            conn.executemany(sql, zip(*cols, strict=True))
        conn.execute(f"CREATE INDEX orders_updated_at ON {TABLE} (updated_at)")
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def row_count(db: str, url: str) -> int:
    """Rows in the benchmark table, -1 when it does not exist."""
    if db == "postgres":
        return _pg_count(plain_url(url))
    if db == "mariadb":
        return _mariadb_count(url)
    return _sqlite_count(sqlite_path(url))


def ensure_table(db: str, url: str, rows: int, rebuild: bool = False) -> bool:
    """Build the table unless it already holds `rows` rows; True when it was (re)built."""
    if not rebuild and row_count(db, url) == rows:
        return False
    {"postgres": build_postgres, "mariadb": build_mariadb, "sqlite": build_sqlite}[db](url, rows)
    got = row_count(db, url)
    if got != rows:
        raise RuntimeError(f"{db}: built {got} rows, wanted {rows}")
    return True


@dataclass
class SourceTruth:
    """Exact row count and sum(amount) of the window, and the window itself."""

    rows: int
    amount_sum: Decimal
    window: Window


def source_truth(db: str, url: str) -> SourceTruth:
    """Ask the database for the window covering the whole table and its exact totals."""
    if db == "postgres":
        import psycopg

        with psycopg.connect(plain_url(url)) as conn:
            lo, hi = conn.execute(f"SELECT min(updated_at), max(updated_at) FROM {BENCH}.{TABLE}").fetchone()
            window = Window(lo - dt.timedelta(seconds=1), hi)
            n, total = conn.execute(
                f"SELECT count(*), sum(amount) FROM {BENCH}.{TABLE} "
                "WHERE updated_at > %s AND updated_at <= %s",
                (window.low, window.high),
            ).fetchone()
        return SourceTruth(n, Decimal(total), window)
    if db == "mariadb":
        conn = _mariadb_connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                cur.execute(f"SELECT min(updated_at), max(updated_at) FROM {BENCH}.{TABLE}")
                lo, hi = cur.fetchone()
                window = Window(lo - dt.timedelta(seconds=1), hi)
                cur.execute(
                    f"SELECT count(*), sum(amount) FROM {BENCH}.{TABLE} "
                    "WHERE updated_at > %s AND updated_at <= %s",
                    (window.low, window.high),
                )
                n, total = cur.fetchone()
        finally:
            conn.close()
        return SourceTruth(int(n), Decimal(total), window)
    with sqlite3.connect(sqlite_path(url)) as conn:
        lo, hi = conn.execute(f"SELECT min(updated_at), max(updated_at) FROM {TABLE}").fetchone()
        low = (dt.datetime.fromisoformat(lo) - dt.timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        n, cents = conn.execute(
            f"SELECT count(*), sum(CAST(round(amount * 100) AS INTEGER)) FROM {TABLE} "
            "WHERE updated_at > ? AND updated_at <= ?",
            (low, hi),
        ).fetchone()
    return SourceTruth(n, Decimal(cents) / 100, Window(low, hi))


def main(argv: list[str] | None = None) -> int:
    """CLI: build (or verify) the table in one or all databases."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=(*DBS, "all"), default="all")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args(argv)
    for db in DBS if args.db == "all" else (args.db,):
        url = default_url(db)
        started = time.perf_counter()
        built = ensure_table(db, url, args.rows, args.rebuild)
        truth = source_truth(db, url)
        want = expected_sum(args.rows)
        state = "built" if built else "kept"
        verdict = "" if want == truth.amount_sum else " MISMATCH"
        print(
            f"{db}: {state} {truth.rows} rows in {time.perf_counter() - started:.1f} s, "
            f"sum(amount)={truth.amount_sum} (formula {want}{verdict})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
