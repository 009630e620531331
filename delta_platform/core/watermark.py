"""Typed, exact watermarks: a value plus its kind, with a canonical text form for the store."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from delta_platform.errors import ControlEntryError


class Kind(StrEnum):
    """The cursor's type family; decides parsing, comparison and the fence terms that apply."""

    INT = "int"
    DECIMAL = "decimal"
    DATE = "date"
    TIMESTAMP = "timestamp"  # naive: compared in the column's own zone, session fixed to UTC
    TIMESTAMPTZ = "timestamptz"  # aware: normalised to UTC
    STRING = "string"

    @property
    def is_temporal(self) -> bool:
        return self in (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ)


WatermarkValue = int | Decimal | date | datetime | str
_INT_RE = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Watermark:
    """A cursor value at full source precision; never a float, never a zone-less instant."""

    kind: Kind
    value: WatermarkValue

    def __post_init__(self) -> None:
        ok = {
            Kind.INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
            Kind.DECIMAL: lambda v: isinstance(v, Decimal) and v.is_finite(),
            Kind.DATE: lambda v: isinstance(v, date) and not isinstance(v, datetime),
            Kind.TIMESTAMP: lambda v: isinstance(v, datetime) and v.tzinfo is None,
            Kind.TIMESTAMPTZ: lambda v: isinstance(v, datetime) and v.tzinfo is not None,
            Kind.STRING: lambda v: isinstance(v, str),
        }[self.kind]
        if not ok(self.value):
            raise TypeError(f"{self.value!r} is not a valid {self.kind} watermark")
        if self.kind is Kind.TIMESTAMPTZ:
            object.__setattr__(self, "value", self.value.astimezone(UTC))

    def encode(self) -> str:
        """Canonical text: exact, sortable per kind, parseable back by `parse`."""
        v = self.value
        if self.kind is Kind.TIMESTAMP:
            return v.strftime("%Y-%m-%d %H:%M:%S.%f")
        if self.kind is Kind.TIMESTAMPTZ:
            return v.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        if self.kind is Kind.DATE:
            return v.isoformat()
        if self.kind is Kind.DECIMAL:
            return format(v, "f")
        return str(v)

    def to_json(self) -> dict[str, str]:
        return {"type": self.kind.value, "value": self.encode()}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Watermark:
        return cls.parse(Kind(data["type"]), data["value"])

    @classmethod
    def parse(
        cls, kind: Kind, raw: Any, *, table: str | None = None, attribute: str | None = None
    ) -> Watermark:
        """Parse a control-table value (text, int or Decimal) as `kind`; floats are refused."""

        def fail(why: str) -> ControlEntryError:
            return ControlEntryError(
                f"{raw!r} is not a valid {kind} value: {why}", table=table, attribute=attribute
            )

        if isinstance(raw, float):
            raise fail("floats lose precision; quote the value as text")
        if isinstance(raw, bool) or raw is None:
            raise fail("expected a value")
        try:
            if kind is Kind.INT:
                if isinstance(raw, Decimal):
                    if raw != raw.to_integral_value():
                        raise fail("not an integer")
                    return cls(kind, int(raw))
                if isinstance(raw, int):
                    return cls(kind, raw)
                text = str(raw).strip()
                if not _INT_RE.match(text):
                    raise fail("not an integer")
                return cls(kind, int(text))
            if kind is Kind.DECIMAL:
                d = Decimal(raw) if isinstance(raw, int | Decimal) else Decimal(str(raw).strip())
                if not d.is_finite():
                    raise fail("not a finite number")
                return cls(kind, d)
            if kind is Kind.DATE:
                if isinstance(raw, datetime):
                    raise fail("a timestamp is not a date")
                if isinstance(raw, date):
                    return cls(kind, raw)
                return cls(kind, date.fromisoformat(str(raw).strip()))
            if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
                if isinstance(raw, datetime):
                    dt = raw
                elif isinstance(raw, date):
                    dt = datetime(raw.year, raw.month, raw.day)
                else:
                    dt = datetime.fromisoformat(str(raw).strip().replace("Z", "+00:00"))
                if kind is Kind.TIMESTAMPTZ:
                    # A zone-less value for an aware column is read as UTC: documented, never local.
                    return cls(kind, dt if dt.tzinfo else dt.replace(tzinfo=UTC))
                if dt.tzinfo is not None:
                    raise fail("the column has no time zone; give a zone-less timestamp")
                return cls(kind, dt)
            if isinstance(raw, int | Decimal):
                return cls(kind, str(raw))
            return cls(kind, str(raw))
        except ControlEntryError:
            raise
        except (ValueError, InvalidOperation, TypeError) as exc:
            raise fail(str(exc)) from None

    def minus(self, delta: timedelta) -> Watermark:
        """Shift a temporal watermark back (the safety lag); other kinds are not shifted."""
        if self.kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.DATE):
            return Watermark(self.kind, self.value - delta)
        return self

    def floor(self, grid: timedelta | None) -> Watermark:
        """Round a timestamp down to a coarser component's grid (DMS takes whole seconds)."""
        if grid is None or self.kind not in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
            return self
        v: datetime = self.value  # type: ignore[assignment]
        epoch = datetime(1970, 1, 1, tzinfo=v.tzinfo)
        step = int(grid / timedelta(microseconds=1))
        us = (v - epoch) // timedelta(microseconds=1)
        return Watermark(self.kind, epoch + timedelta(microseconds=us - us % step))

    def _cmp_key(self, other: Watermark) -> tuple[Any, Any]:
        if other.kind is not self.kind:
            raise TypeError(f"cannot compare {self.kind} with {other.kind} watermarks")
        return self.value, other.value

    def __lt__(self, other: Watermark) -> bool:
        a, b = self._cmp_key(other)
        return a < b

    def __le__(self, other: Watermark) -> bool:
        a, b = self._cmp_key(other)
        return a <= b

    def __gt__(self, other: Watermark) -> bool:
        a, b = self._cmp_key(other)
        return a > b

    def __ge__(self, other: Watermark) -> bool:
        a, b = self._cmp_key(other)
        return a >= b

    def __str__(self) -> str:
        return self.encode()
