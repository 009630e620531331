"""Window planning: first, next, replay, manual reset, gaps and static operators."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from delta_platform.core.operators import Operator
from delta_platform.core.watermark import Watermark
from delta_platform.core.window import Bound, Window


class Mode(StrEnum):
    """Why a window looks the way it does; recorded in the ledger and shown in metadata."""

    FIRST = "first"  # no committed window yet: [startvalue, H]
    NEXT = "next"  # contiguous with the last committed window
    RESET = "reset"  # startvalue was edited by hand: [startvalue, H], on purpose
    REPLAY = "replay"  # the partition was committed: reload exactly its recorded window
    GAP = "gap"  # an uncommitted partition older than the newest committed one: nothing left
    STATIC = "static"  # a filtered snapshot (every operator but gte)


@dataclass(frozen=True)
class Plan:
    window: Window
    mode: Mode

    @property
    def needs_fence(self) -> bool:
        return self.mode in (Mode.FIRST, Mode.NEXT, Mode.RESET)

    @property
    def moves_watermark(self) -> bool:
        return self.needs_fence


def plan_window(
    operator: Operator,
    start: Watermark | None,
    end: Watermark | None,
    *,
    recorded: Window | None = None,
    last_committed: Window | None = None,
    older_than_last: bool = False,
) -> Plan:
    """Choose this partition's window; incremental windows still need their fenced high."""
    if recorded is not None:
        return Plan(recorded, Mode.REPLAY)
    if not operator.incremental:
        op = operator.canonical
        lo = Bound(start, True) if start is not None and op is not Operator.LTE else None
        hi = (
            Bound(end if end is not None else start, True)
            if op in (Operator.LTE, Operator.EQ, Operator.NOTEQ, Operator.BETWEEN, Operator.NOTBETWEEN)
            and start is not None
            else None
        )
        return Plan(Window(operator, lo, hi), Mode.STATIC)
    assert start is not None, "validated: gte always has a startvalue"
    if older_than_last:
        # Every row up to the newest committed high is already in some window.
        return Plan(
            Window(
                operator,
                Bound(start, False),
                Bound(start, False),
                empty=True,
                notes=("older than the newest committed partition: its rows are already loaded",),
            ),
            Mode.GAP,
        )
    if last_committed is None or last_committed.high is None:
        return Plan(Window(operator, Bound(start, True)), Mode.FIRST)
    last_high = last_committed.high
    if last_high.value == start:
        return Plan(Window(operator, last_high.next_low()), Mode.NEXT)
    return Plan(
        Window(
            operator,
            Bound(start, True),
            notes=(f"startvalue reset by hand from {last_high.value} to {start}",),
        ),
        Mode.RESET,
    )
