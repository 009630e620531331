"""Delta engines: produce one window's rows as staged Parquet files, plus the counts that verify them."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from delta_platform.engine.base import Engine, EngineResult, Progress
from delta_platform.engine.chunked import ChunkedEngine
from delta_platform.engine.streaming import StreamingEngine

if TYPE_CHECKING:
    from delta_platform.control_entry import ControlEntry

__all__ = ["ChunkedEngine", "Engine", "EngineResult", "Progress", "StreamingEngine", "builtin_engine_for"]


def builtin_engine_for(entry: ControlEntry) -> Engine:
    """The built-in engine an entry asks for: chunked when it sets `chunkRows` and a primary key.

    Chunks are read over as many connections as there are cores (at most 4); windows smaller
    than `chunkRows` per chunk are read as one stream.
    """
    if entry.chunk_rows and entry.primary_key:
        workers = max(1, min(4, os.cpu_count() or 1))
        return ChunkedEngine(chunks=max(2, workers), workers=workers, min_rows_per_chunk=entry.chunk_rows)
    return StreamingEngine()
