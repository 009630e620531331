"""The fenced high mark: taken from the source at the run's start, never from the rows seen.

Terms (the lowest wins): `max` — MAX(cursor) at T0; `clock` — the source clock minus the safety
lag (temporal cursors); `partition_end` — the partition's own end (exclusive); and, when
transactions open at T0 did not end within the wait, `open_txn` — just below the oldest one's
start (temporal cursors only; other kinds fail the window instead of guessing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from delta_platform.core.watermark import Kind, Watermark
from delta_platform.core.window import Bound
from delta_platform.errors import FenceError


@dataclass(frozen=True)
class FenceInputs:
    """What the source reported at T0, converted to the cursor's kind."""

    kind: Kind
    max_at_start: Watermark | None
    clock: Watermark | None = None
    safety_lag: timedelta = timedelta(0)
    partition_end: Watermark | None = None
    open_txns_drained: bool = True
    oldest_open_txn_start: Watermark | None = None
    wait_seconds: float = 0.0
    grid: timedelta | None = None
    table: str | None = None


@dataclass(frozen=True)
class Fence:
    """The chosen high bound (None: nothing to load), which term set it, and every candidate."""

    high: Bound | None
    term: str
    wait_seconds: float
    candidates: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "term": self.term,
            "wait_ms": int(self.wait_seconds * 1000),
            "candidates": self.candidates,
            "high": self.high.to_json() if self.high else None,
        }


def fence_high(inputs: FenceInputs) -> Fence:
    """Pick the lowest candidate high bound, then floor it to the component grid."""
    if inputs.max_at_start is None:
        return Fence(None, "empty_source", inputs.wait_seconds, {"max": "none"})
    candidates: dict[str, Bound] = {"max": Bound(inputs.max_at_start, inclusive=True)}
    temporal = inputs.kind.is_temporal
    if temporal and inputs.clock is not None:
        clock = inputs.clock.minus(inputs.safety_lag)
        if inputs.kind is Kind.DATE:
            # A date column may still get rows for "today": only days before it are closed.
            candidates["clock"] = Bound(clock, inclusive=False)
        else:
            candidates["clock"] = Bound(clock, inclusive=True)
    if inputs.partition_end is not None:
        candidates["partition_end"] = Bound(inputs.partition_end, inclusive=False)
    if not inputs.open_txns_drained:
        if temporal and inputs.oldest_open_txn_start is not None:
            candidates["open_txn"] = Bound(inputs.oldest_open_txn_start, inclusive=False)
        else:
            raise FenceError(
                f"transactions open at the run's start were still open after "
                f"{inputs.wait_seconds:.1f}s; a {inputs.kind} cursor cannot be fenced below them "
                "safely, so this window is not loaded (raise maxTxnWaitSeconds or end them)",
                table=inputs.table,
                attribute="filtercolumn",
            )
    term, high = min(candidates.items(), key=lambda kv: kv[1].as_high_key())
    floored = high.value.floor(inputs.grid)
    if floored != high.value:
        high, term = Bound(floored, inclusive=True), f"{term}+grid"
    return Fence(
        high,
        term,
        inputs.wait_seconds,
        {name: ("≤ " if b.inclusive else "< ") + b.value.encode() for name, b in candidates.items()},
    )
