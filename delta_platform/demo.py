"""The demo: an SQLite `dwh.orders_rds`, the reference's `orders_s3` entry, an update-timestamp
entry, a generator for new deltas, and `up`, which prepares all of it and starts `dagster dev`.

    python -m delta_platform.demo up                 # idempotent setup, then dagster dev
    python -m delta_platform.demo generate --inserts 100 --updates 20
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from delta_platform.dagster_layer.state import HOME_VAR, home
from delta_platform.store import LocalStore

SEED_ROWS = 3000
STATUSES = ("new", "paid", "shipped", "delivered", "returned")
TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
DAGSTER_YAML = """\
# Written by `python -m delta_platform.demo up`.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 4   # at most 4 simultaneous loads in the delta_loads pool
"""

WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: delta_platform.definitions
      location_name: delta_platform
"""


def _webserver_address(args: list[str]) -> str:
    """host:port dagster dev will listen on, so the control-table sensor can ask it to reload."""
    host, port = "127.0.0.1", "3000"
    for flag, value in zip(args, args[1:], strict=False):
        if flag in ("-p", "--port"):
            port = value
        elif flag in ("-h", "--host"):
            host = value
    return f"{host}:{port}"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def demo_entries(root: Path) -> list[dict[str, str]]:
    """The reference's demonstration entry plus one filtered on an update timestamp."""
    start = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT00:00:00+00:00")
    common = {"activeflag": "true", "sourceSchema": "dwh", "sourceTable": "orders_rds",
              "filteroperator": "gte", "ouputs3Prefix": str(root / "lake"), "primaryKey": "row_id",
              "partitionStart": start}
    return [
        {**common, "targetTableName": "orders_s3", "filtercolumn": "row_id", "startvalue": "0",
         "description": "The reference's demo entry: new orders by row_id (gte)."},
        {**common, "targetTableName": "orders_changes_s3", "filtercolumn": "updated_at",
         "startvalue": "2000-01-01 00:00:00", "safetyLagSeconds": "5",
         "description": "Inserted and updated orders by their update timestamp (gte)."},
    ]


def _connect(root: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(root / "dwh.db")
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def _order(rng: random.Random, row_id: int, at: datetime) -> tuple:
    amount = Decimal(rng.randint(100, 99_999)) / 100
    return (row_id, rng.randint(1, 500), str(amount), rng.choice(STATUSES[:2]),
            at.strftime(TS_FORMAT), at.strftime(TS_FORMAT))


def setup(root: Path | None = None) -> Path:
    """Create the source, the control store and the entries if missing; never resets state."""
    root = (root or home()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(root / "main.db").close()  # the source's main database; dwh is attached
    with _connect(root) as conn:
        conn.execute("""CREATE TABLE IF NOT EXISTS orders_rds (
            row_id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, amount NUMERIC(12, 2) NOT NULL,
            status TEXT, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)""")
        if conn.execute("SELECT COUNT(*) FROM orders_rds").fetchone()[0] == 0:
            rng, now = random.Random(7), _now()
            conn.executemany("INSERT INTO orders_rds VALUES (?, ?, ?, ?, ?, ?)", [
                _order(rng, i, now - timedelta(hours=30) + timedelta(seconds=36 * i))
                for i in range(1, SEED_ROWS + 1)])
    conn.close()
    store = LocalStore(str(root / "control.db"))
    store.init()
    for item in demo_entries(root):
        if store.get_entry(item["targetTableName"]) is None:
            store.put_entry(item)
    dagster_home = root / "dagster"
    dagster_home.mkdir(exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    return root


def generate(inserts: int, updates: int, root: Path | None = None,
             seed: int | None = None) -> tuple[int, int]:
    """Insert new orders and update existing ones, all stamped now, so the next partition has deltas."""
    root = (root or home()).resolve()
    rng, now = random.Random(seed), _now()
    with _connect(root) as conn:
        top = conn.execute("SELECT COALESCE(MAX(row_id), 0) FROM orders_rds").fetchone()[0]
        conn.executemany("INSERT INTO orders_rds VALUES (?, ?, ?, ?, ?, ?)",
                         [_order(rng, top + i, now) for i in range(1, inserts + 1)])
        ids = [r[0] for r in conn.execute("SELECT row_id FROM orders_rds ORDER BY row_id").fetchall()]
        chosen = rng.sample(ids[: max(top, 0)], min(updates, top))
        conn.executemany("UPDATE orders_rds SET status = ?, updated_at = ? WHERE row_id = ?",
                         [(rng.choice(STATUSES[1:]), now.strftime(TS_FORMAT), i) for i in chosen])
    conn.close()
    return inserts, len(chosen)


def up(root: Path | None = None, extra_args: list[str] | None = None) -> None:
    """Set everything up, then replace this process with `dagster dev` on the demo."""
    root = setup(root)
    env = {**os.environ, HOME_VAR: str(root), "DAGSTER_HOME": str(root / "dagster")}
    env.setdefault("DELTA_PLATFORM_ENV", "local")
    env.setdefault("DELTA_PLATFORM_WEBSERVER", _webserver_address(extra_args or []))
    workspace = root / "workspace.yaml"  # names the location "delta_platform" wherever `up` runs
    workspace.write_text(WORKSPACE_YAML)
    args = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), *(extra_args or [])]
    print(f"delta_platform demo in {root}; starting: {' '.join(args[1:])}", flush=True)
    os.execvpe(args[0], args, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m delta_platform.demo")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="create the demo source, control store and entries")
    sub.add_parser("up", help="setup, then start dagster dev (extra args go to dagster dev)")
    gen = sub.add_parser("generate", help="insert/update demo rows")
    gen.add_argument("--inserts", type=int, default=100)
    gen.add_argument("--updates", type=int, default=20)
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "up":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "setup":
        print(f"demo ready in {setup()}")
    elif args.command == "up":
        up(extra_args=rest)
    else:
        ins, upd = generate(args.inserts, args.updates)
        print(f"inserted {ins} and updated {upd} orders in {home() / 'dwh.db'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
