"""Delta engines: produce one window's rows as staged Parquet files, plus the counts that verify them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from delta_platform.engine.base import Engine, EngineResult, Progress
from delta_platform.engine.chunked import ChunkedEngine, available_cores
from delta_platform.engine.streaming import StreamingEngine

if TYPE_CHECKING:
    from delta_platform.control_entry import ControlEntry

__all__ = ["ChunkedEngine", "Engine", "EngineResult", "Progress", "StreamingEngine", "builtin_engine_for"]


def builtin_engine_for(entry: ControlEntry) -> Engine:
    """The built-in engine an entry asks for: chunked when it sets `chunkRows` and a primary key.

    Chunks are read over `chunkWorkers` connections, by default one per core this process may
    run on (`os.sched_getaffinity`: a container's cpuset, not the host's core count), at most
    4; windows smaller than `chunkRows` per chunk are read as one stream. There are at least 2
    chunks even on one core, so a failure or a resume still re-reads only part of the window.
    """
    if entry.chunk_rows and entry.primary_key:
        workers = entry.chunk_workers or max(1, min(4, available_cores()))
        return ChunkedEngine(chunks=max(2, workers), workers=workers, min_rows_per_chunk=entry.chunk_rows)
    return StreamingEngine()
