"""The engine contract shared by the built-in streaming engine and AWS DMS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

from delta_platform.core.window import Window

if TYPE_CHECKING:
    from delta_platform.lake import Lake, StagedFile
    from delta_platform.source import Source, TableInfo

Progress = Callable[[int], None]  # called with rows read so far


@dataclass
class EngineResult:
    """What an engine produced: staged files and the three counts publish compares."""

    engine: str
    rows_read: int
    source_count: int
    null_count: int
    staged: list[StagedFile]
    schema: pa.Schema
    seconds: float
    details: dict[str, object] = field(default_factory=dict)


class Engine(Protocol):
    name: str
    # Coarsest value step the engine can filter on (DMS: whole seconds); None for exact.
    grid: timedelta | None

    def run(
        self,
        source: Source,
        info: TableInfo,
        window: Window,
        lake: Lake,
        attempt_id: str,
        *,
        progress: Progress | None = None,
    ) -> EngineResult: ...
