"""A chunk of a large window: one range of the key order, with an exact JSON form for checkpoints."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """One key range: `low < keys <= high` (None = open end); `null_keys` is the NULL-key chunk."""

    index: int
    low: tuple[Any, ...] | None = None
    high: tuple[Any, ...] | None = None
    null_keys: bool = False
    whole: bool = False  # the window unsplit (small window)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "low": _encode_bound(self.low),
            "high": _encode_bound(self.high),
            "nullKeys": self.null_keys,
            "whole": self.whole,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chunk:
        return cls(
            int(data["index"]),
            _decode_bound(data["low"]),
            _decode_bound(data["high"]),
            bool(data["nullKeys"]),
            bool(data["whole"]),
        )

    def describe(self) -> dict[str, str]:
        if self.whole:
            return {"range": "whole window"}
        if self.null_keys:
            return {"range": "a key column IS NULL"}
        return {"low": _text(self.low), "high": _text(self.high)}


# Chunk edges as tagged JSON, exact for the key types a primary key or cursor takes.
_DECODERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "str": str,
    "decimal": Decimal,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "bytes": bytes.fromhex,
    "bool": lambda v: v == "true",
}


def _encode_value(value: Any) -> list[Any]:
    if value is None:
        return ["null", None]
    if isinstance(value, bool):
        return ["bool", "true" if value else "false"]
    for tag, kind in (
        ("int", int),
        ("str", str),
        ("decimal", Decimal),
        ("datetime", dt.datetime),
        ("date", dt.date),
        ("time", dt.time),
    ):
        if isinstance(value, kind):
            return [tag, value.isoformat() if tag in ("datetime", "date", "time") else str(value)]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["bytes", bytes(value).hex()]
    raise TypeError(f"chunk edge value {value!r} ({type(value).__name__}) has no exact JSON form")


def _encode_bound(bound: tuple[Any, ...] | None) -> list[list[Any]] | None:
    return None if bound is None else [_encode_value(v) for v in bound]


def _decode_bound(data: list[list[Any]] | None) -> tuple[Any, ...] | None:
    if data is None:
        return None
    return tuple(None if tag == "null" else _DECODERS[tag](v) for tag, v in data)


def _text(bound: tuple[Any, ...] | None) -> str:
    return "" if bound is None else "(" + ", ".join(str(v) for v in bound) + ")"
