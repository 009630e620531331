"""Windows: what one partition loads. Bounds carry their own inclusivity, so no epsilon is ever used."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from delta_platform.core.operators import Operator
from delta_platform.core.watermark import Watermark


@dataclass(frozen=True)
class Bound:
    """One end of a window: a typed value and whether rows equal to it belong to the window."""

    value: Watermark
    inclusive: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.value.to_json(), "inclusive": self.inclusive}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Bound | None:
        if data is None:
            return None
        return cls(Watermark.from_json(data), bool(data["inclusive"]))

    def as_high_key(self) -> tuple[Any, int]:
        """Order high bounds: an exclusive bound at v lies just below an inclusive one at v."""
        return (self.value.value, 1 if self.inclusive else 0)

    def as_low_key(self) -> tuple[Any, int]:
        """Order low bounds: an inclusive bound at v lies just below an exclusive one at v."""
        return (self.value.value, 0 if self.inclusive else 1)

    def next_low(self) -> Bound:
        """The low bound of the following window: contiguous, no row in both."""
        return Bound(self.value, not self.inclusive)


@dataclass(frozen=True)
class Window:
    """What one load selects: an operator and up to two bounds.

    `gte`: rows in [low, high] by the bounds' flags, high fenced at run time. Static operators
    use the bounds as operands: `lte` high; `eq`/`noteq` low == high; `between`/`notbetween`
    low and high; `null`/`notnull` none.
    """

    operator: Operator
    low: Bound | None = None
    high: Bound | None = None
    empty: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def incremental(self) -> bool:
        return self.operator.incremental

    def with_high(self, high: Bound | None) -> Window:
        """Close an incremental window; a high below the low makes it empty."""
        if high is None or self.low is None:
            return replace(self, high=high, empty=high is None)
        lo_v, lo_i = self.low.value.value, self.low.inclusive
        hi_v, hi_i = high.value.value, high.inclusive
        empty = hi_v < lo_v or (hi_v == lo_v and not (lo_i and hi_i))
        return replace(self, high=high, empty=empty)

    def with_note(self, note: str) -> Window:
        return replace(self, notes=(*self.notes, note))

    def to_json(self) -> dict[str, Any]:
        return {
            "operator": self.operator.value,
            "low": self.low.to_json() if self.low else None,
            "high": self.high.to_json() if self.high else None,
            "empty": self.empty,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Window:
        return cls(
            operator=Operator(data["operator"]),
            low=Bound.from_json(data.get("low")),
            high=Bound.from_json(data.get("high")),
            empty=bool(data.get("empty", False)),
            notes=tuple(data.get("notes") or ()),
        )

    def describe(self) -> str:
        """Human form for logs and metadata, e.g. `(10, 42]`."""
        op = self.operator.canonical
        if op is Operator.GTE:
            if self.low is None:
                return "(unbounded)"
            lo = ("[" if self.low.inclusive else "(") + self.low.value.encode()
            if self.high is None:
                return lo + ", ?"
            hi = self.high.value.encode() + ("]" if self.high.inclusive else ")")
            return f"{lo}, {hi}" + (" empty" if self.empty else "")
        if op in (Operator.NULL, Operator.NOTNULL):
            return f"{op.value}"
        operands = [b.value.encode() for b in (self.low, self.high) if b is not None]
        if op in (Operator.LTE, Operator.EQ, Operator.NOTEQ):
            operands = operands[-1:]
        return f"{op.value} {' .. '.join(operands)}"
