"""Engine choice per entry: `chunkRows` plus a primary key selects the chunked engine; it loads exactly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from delta_platform.control_entry import ControlEntry
from delta_platform.delta_task import PartitionSpec
from delta_platform.engine import ChunkedEngine, StreamingEngine, builtin_engine_for
from delta_platform.lake import Lake
from delta_platform.runtime import Runtime
from delta_platform.store import LocalStore
from delta_platform_tests.items import gte_item

BASE = gte_item()


def test_engine_choice() -> None:
    assert isinstance(builtin_engine_for(ControlEntry.from_item(BASE)), StreamingEngine)
    chunk_only = ControlEntry.from_item({**BASE, "chunkRows": "1000"})
    assert isinstance(builtin_engine_for(chunk_only), StreamingEngine)  # no key: no total order
    chunked = builtin_engine_for(ControlEntry.from_item({**BASE, "chunkRows": "1000", "primaryKey": "id"}))
    assert isinstance(chunked, ChunkedEngine) and chunked.min_rows_per_chunk == 1000


def test_chunked_entry_loads_every_row_once(tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t(id integer primary key, v integer)")
        # Heavy ties on the cursor: chunk edges must fall inside tie groups without loss.
        conn.executemany("insert into t values(?, ?)", [(i, i // 500) for i in range(1, 5001)])
    conn.close()
    store = LocalStore(str(tmp_path / "c.db"))
    store.init()
    store.put_entry(
        {**BASE, "ouputs3Prefix": str(tmp_path / "lake"), "chunkRows": "1000", "primaryKey": "id"}
    )
    result = Runtime(store, {"default": f"sqlite:///{db}"}).task().run("t", PartitionSpec("p1"))
    assert result.engine == "chunked" and result.rows == 5000
    ids = Lake(str(tmp_path / "lake")).read_partition("main", "t", "p1").column("id").to_pylist()
    assert sorted(ids) == list(range(1, 5001))
