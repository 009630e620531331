"""Delta engines: produce one window's rows as staged Parquet files, plus the counts that verify them."""

from delta_platform.engine.base import Engine, EngineResult, Progress
from delta_platform.engine.chunked import ChunkedEngine
from delta_platform.engine.streaming import StreamingEngine

__all__ = ["ChunkedEngine", "Engine", "EngineResult", "Progress", "StreamingEngine"]
