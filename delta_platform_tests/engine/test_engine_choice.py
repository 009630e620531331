"""Which engine an entry gets, and how many connections a chunked read uses."""

from __future__ import annotations

import os
from typing import Any

import pytest

from delta_platform.control_entry import ControlEntry
from delta_platform.engine import ChunkedEngine, StreamingEngine, builtin_engine_for
from delta_platform.engine.chunked import available_cores
from delta_platform.errors import ControlEntryError


def _entry(**extra: Any) -> ControlEntry:
    item = {
        "targetTableName": "t",
        "activeflag": "true",
        "sourceSchema": "s",
        "sourceTable": "t",
        "filtercolumn": "at",
        "filteroperator": "gte",
        "startvalue": "2000-01-01 00:00:00",
        "ouputs3Prefix": "/unused",
        **extra,
    }
    return ControlEntry.from_item(item)


def test_workers_follow_the_cores_this_process_may_use() -> None:
    assert available_cores() == len(os.sched_getaffinity(0))
    engine = builtin_engine_for(_entry(chunkRows="1000", primaryKey="id"))
    assert isinstance(engine, ChunkedEngine)
    assert engine.workers == min(4, available_cores()) and engine.chunks >= 2
    assert ChunkedEngine().workers == available_cores()


def test_chunk_workers_overrides_the_core_count() -> None:
    engine = builtin_engine_for(_entry(chunkRows="1000", primaryKey="id", chunkWorkers="1"))
    assert isinstance(engine, ChunkedEngine) and engine.workers == 1 and engine.chunks == 2
    assert isinstance(builtin_engine_for(_entry(chunkWorkers="3")), StreamingEngine)


def test_chunk_workers_must_be_a_positive_integer() -> None:
    with pytest.raises(ControlEntryError, match="chunkWorkers") as info:
        _entry(chunkRows="1000", primaryKey="id", chunkWorkers="0")
    assert "t" in str(info.value)
