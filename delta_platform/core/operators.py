"""The reference's nine filter operators and what each one means."""

from __future__ import annotations

from enum import StrEnum


class Operator(StrEnum):
    """`filteroperator` values, exactly as the reference spells them (`ste` aliases `lte`)."""

    LTE = "lte"
    STE = "ste"
    GTE = "gte"
    EQ = "eq"
    NOTEQ = "noteq"
    NULL = "null"
    NOTNULL = "notnull"
    BETWEEN = "between"
    NOTBETWEEN = "notbetween"

    @property
    def canonical(self) -> Operator:
        return Operator.LTE if self is Operator.STE else self

    @property
    def incremental(self) -> bool:
        """Only `gte` advances the watermark; every other operator is a filtered snapshot."""
        return self is Operator.GTE

    @property
    def needs_start(self) -> bool:
        return self not in (Operator.NULL, Operator.NOTNULL)

    @property
    def needs_end(self) -> bool:
        return self in (Operator.BETWEEN, Operator.NOTBETWEEN)
