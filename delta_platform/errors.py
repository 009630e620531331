"""One error hierarchy: every error names the table and, where there is one, the attribute."""

from __future__ import annotations


class DeltaError(Exception):
    """Base of every delta_platform error; `table` and `attribute` say where it happened."""

    def __init__(self, message: str, *, table: str | None = None, attribute: str | None = None):
        self.table = table
        self.attribute = attribute
        self.message = message
        where = []
        if table is not None:
            where.append(f"table {table!r}")
        if attribute is not None:
            where.append(f"attribute {attribute!r}")
        prefix = f"[{', '.join(where)}] " if where else ""
        super().__init__(prefix + message)


class ControlEntryError(DeltaError):
    """A control-table entry is malformed (bad operator, missing value, hostile name...)."""


class StoreError(DeltaError):
    """The control store could not be read or written."""


class LeaseHeld(StoreError):
    """Another run holds the table's lease: one writer per table."""


class WatermarkConflict(StoreError):
    """The conditional watermark write lost: the control entry moved under us."""


class FenceError(DeltaError):
    """The high mark could not be fenced safely (e.g. open transactions never ended)."""


class SourceError(DeltaError):
    """The source database refused or returned something we cannot load exactly."""


class VerificationError(DeltaError):
    """Rows written, rows read and the source count disagree: nothing is published."""


class LakeError(DeltaError):
    """The lake could not be written, published or recovered."""


class EngineError(DeltaError):
    """The delta engine (streaming or DMS) failed to produce the window."""
