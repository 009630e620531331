"""A small platform in a temp folder: SQLite source `dwh.orders`, a control store, a local lake."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from delta_platform.dagster_layer import DeltaTranslator, build_defs
from delta_platform.dagster_layer.resources import local_resources
from delta_platform.store import LocalStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def hour_key(h: int) -> str:
    return (T0 + timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M")


def stamp(h: int, second: int = 0) -> str:
    """A timestamp inside partition hour h."""
    return (T0 + timedelta(hours=h, seconds=second)).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass
class Platform:
    root: Path
    store: LocalStore
    resources: dict[str, Any]

    def entry(self, name: str, column: str, start: str, **extra: str) -> dict[str, str]:
        return {"targetTableName": name, "activeflag": "true", "sourceSchema": "dwh",
                "sourceTable": "orders", "filtercolumn": column, "filteroperator": "gte",
                "startvalue": start, "ouputs3Prefix": str(self.root / "lake"),
                "partitionStart": T0.isoformat(), **extra}

    def add(self, *items: dict[str, str]) -> None:
        for item in items:
            self.store.put_entry(item)

    def execute(self, sql: str, rows: Iterable[tuple] = ()) -> None:
        with sqlite3.connect(self.root / "dwh.db") as conn:
            conn.executemany(sql, list(rows)) if rows else conn.execute(sql)
        conn.close()

    def insert(self, ids: Iterable[int], hour: int) -> None:
        self.execute("INSERT INTO orders VALUES (?, ?, ?)",
                     [(i, f"{i}.50", stamp(hour, i % 3000)) for i in ids])

    def update(self, ids: Iterable[int], hour: int) -> None:
        self.execute("UPDATE orders SET amount = amount + 1, updated_at = ? WHERE row_id = ?",
                     [(stamp(hour, 3000 + i % 500), i) for i in ids])

    def defs(self, translator: DeltaTranslator | None = None) -> dg.Definitions:
        return build_defs(self.store.scan_entries(), translator, resources=self.resources)

    def materialize(self, name: str, hour: int, *, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        defs = self.defs()
        asset = next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition)
                     and a.key.path[-1] == name)
        return dg.materialize([asset], partition_key=hour_key(hour), resources=self.resources,
                              instance=dg.DagsterInstance.ephemeral(), raise_on_error=raise_on_error)


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    root = tmp_path / "home"
    root.mkdir()
    sqlite3.connect(root / "main.db").close()
    with sqlite3.connect(root / "dwh.db") as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE orders (row_id INTEGER PRIMARY KEY, amount NUMERIC(12, 2), "
                     "updated_at DATETIME)")
    conn.close()
    store = LocalStore(str(root / "control.db"))
    store.init()
    return Platform(root, store, local_resources(str(root)))
