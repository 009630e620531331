"""The SQLite snapshot's ADBC connection (`sqlite_adbc`): waits out a writer's lock, closes cleanly."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from delta_platform.source import sqlite_adbc
from delta_platform.source.dialects import SQLiteDialect
from delta_platform.source.snapshot import open_snapshot


def _table(path: Path) -> sa.Table:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"r{i}") for i in range(1, 101)])
    con.commit()
    con.close()
    return sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("s", sa.Text))


_WRITER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
con.execute("INSERT INTO t VALUES (101, 'late')")
print("locked", flush=True)
time.sleep(0.5)
con.execute("COMMIT")
"""


def test_a_read_waits_for_a_writers_exclusive_lock(tmp_path: Path) -> None:
    """A writer's commit locks readers out for a moment: the read waits instead of failing
    with "database is locked" (ADBC sets no busy timeout of its own). The writer is another
    process: SQLite's locks are POSIX locks, which two SQLite copies in one process (Python's
    and ADBC's) do not see."""
    path = tmp_path / "db.sqlite"
    table = _table(path)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
        engine = sa.create_engine(f"sqlite:///{path}")
        with open_snapshot(engine, SQLiteDialect(), table="t") as snap:
            count = snap.scalar(sa.select(sa.func.count()).select_from(table))
            schema = pa.schema([("id", pa.int64()), ("s", pa.string())])
            rows = sum(b.num_rows for b in snap.stream(sa.select(*table.columns), schema, 1000))
        assert count == rows == 101  # read once the writer committed
    finally:
        writer.wait(timeout=30)


def test_closing_the_connection_closes_its_open_cursors(tmp_path: Path) -> None:
    """A cursor left open must not keep the connection's read lock past close()."""
    path = tmp_path / "db.sqlite"
    _table(path)
    conn = sqlite_adbc.Connection(str(path))
    cur = conn.cursor()
    cur.execute("SELECT * FROM t")
    next(iter(cur.fetch_record_batch()))  # mid-read, in the connection's transaction
    conn.rollback()
    conn.close()
    check = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0); c.execute('BEGIN EXCLUSIVE')"
    subprocess.run([sys.executable, "-c", check, str(path)], check=True)  # fails if a read lock remained
