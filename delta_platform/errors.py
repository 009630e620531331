"""One error hierarchy: every error names the table and, where there is one, the attribute."""

from __future__ import annotations

import re

#: From the first quote of a message to its last: a server quotes the values it complains about
#: without escaping the quotes inside them, so no narrower pattern can tell where a value ends.
_QUOTED = re.compile(r"[\"'].*[\"']|[\"'].*", re.DOTALL)


def redact(message: str) -> str:
    """A server's message without anything quoted in it (a bound value may be there)."""
    return _QUOTED.sub("'…'", message)


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


def reader_error(exc: BaseException, names: list[str], *, table: str, what: str) -> SourceError:
    """A C reader's error `(message, column, kind)` as a SourceError naming the column.

    Kind 2 is the reader's own message about a value (it never quotes the value); anything
    else may come from the server, which quotes values, so it is redacted.
    """
    msg, col, kind = exc.args if len(exc.args) == 3 else (str(exc), -1, 0)
    attribute = names[col] if 0 <= col < len(names) else None
    text = str(msg) if kind == 2 else redact(str(msg))
    return SourceError(f"{what} failed: {text}", table=table, attribute=attribute)
