"""The control-store contract and the value rules both implementations share.

Both stores must behave identically (tests run one suite over both), so everything that is
not storage mechanics lives here: which values an item may hold, how numbers come back, what
`expected` means, how the ledger is ordered.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from delta_platform.errors import StoreError

KEY = "targetTableName"
PARTITION_KEY = "partitionKey"
SEQ = "seq"
COMMITTED_AT = "committedAt"

# DynamoDB's number rules (the same context boto3 uses): 38 significant digits, no rounding.
# The local store applies them too, so nothing it accepts would be refused on AWS.
NUMBER_CONTEXT = decimal.Context(
    Emin=-128,
    Emax=126,
    prec=38,
    traps=[decimal.Clamped, decimal.Overflow, decimal.Inexact, decimal.Rounded, decimal.Underflow],
)


@dataclass(frozen=True)
class Lease:
    """Proof of being the one writer of a table; `token` is unique per acquisition."""

    table: str
    owner: str
    token: str
    expires_at: float  # epoch seconds


@runtime_checkable
class ControlStore(Protocol):
    """Control items, the load ledger, leases and publish intents of every table."""

    def init(self) -> None: ...
    def put_entry(self, item: dict[str, Any]) -> None: ...
    def get_entry(self, table: str) -> dict[str, Any] | None: ...
    def scan_entries(self) -> Iterator[dict[str, Any]]: ...
    def update_entry(
        self, table: str, changes: dict[str, Any], *, expected: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...
    def delete_entry(self, table: str) -> None: ...
    def acquire_lease(self, table: str, owner: str, ttl_seconds: float) -> Lease: ...
    def renew_lease(self, lease: Lease, ttl_seconds: float) -> Lease: ...
    def release_lease(self, lease: Lease) -> None: ...
    def set_intent(self, lease: Lease, intent: dict[str, Any]) -> None: ...
    def get_intent(self, table: str) -> dict[str, Any] | None: ...
    def clear_intent(self, lease: Lease) -> None: ...
    def commit_window(
        self,
        lease: Lease,
        ledger_entry: dict[str, Any],
        *,
        entry_changes: dict[str, Any],
        expected: dict[str, Any],
    ) -> None: ...
    def ledger(self, table: str) -> list[dict[str, Any]]: ...
    def ledger_entry(self, table: str, partition_key: str) -> dict[str, Any] | None: ...
    def last_committed(self, table: str) -> dict[str, Any] | None: ...


# ---------------------------------------------------------------- values in, values out


def check_value(value: Any, *, table: str | None, path: str) -> Any:
    """Validated copy of `value`; floats are refused because a float watermark is a lost one."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, float):
        raise StoreError(
            f"{path} is a float ({value!r}); floats lose precision, store Decimal, int or str",
            table=table,
            attribute=path,
        )
    if isinstance(value, int | Decimal):
        try:
            checked = NUMBER_CONTEXT.create_decimal(value)
        except decimal.DecimalException as exc:
            raise StoreError(
                f"{path}: {value!r} does not fit 38 significant digits exactly",
                table=table,
                attribute=path,
            ) from exc
        if not checked.is_finite():
            raise StoreError(f"{path}: {value!r} is not finite", table=table, attribute=path)
        return value
    if isinstance(value, list | tuple):
        return [check_value(v, table=table, path=f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise StoreError(f"{path}: key {k!r} is not a str", table=table, attribute=path)
            out[k] = check_value(v, table=table, path=f"{path}.{k}")
        return out
    raise StoreError(
        f"{path}: unsupported type {type(value).__name__}", table=table, attribute=path
    )


def check_item(item: Mapping[str, Any], *, table: str | None = None) -> dict[str, Any]:
    """Validated top-level item; a top-level None is dropped (None means "absent" everywhere)."""
    if not isinstance(item, Mapping):
        raise StoreError(f"an item must be a dict, got {type(item).__name__}", table=table)
    checked = check_value(dict(item), table=table, path="item")
    return {k: v for k, v in checked.items() if v is not None}


def entry_key(item: Mapping[str, Any]) -> str:
    """The control item's key; refused early so a keyless item never reaches the backend."""
    name = item.get(KEY)
    if not isinstance(name, str) or not name:
        raise StoreError(f"item needs a non-empty str {KEY!r}", attribute=KEY)
    return name


def check_changes(table: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validated changes; the key is immutable (changing it would create another entry)."""
    if KEY in changes:
        raise StoreError(f"{KEY!r} cannot be changed", table=table, attribute=KEY)
    return {
        k: check_value(v, table=table, path=k) if v is not None else None
        for k, v in changes.items()
    }


def normalize(value: Any) -> Any:
    """Canonical numbers so both stores return the same thing: integral -> int, else a Decimal
    without trailing zeros (DynamoDB trims them; the local store does it too)."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and value.adjusted() < 38:
            return int(value)  # only if it can be written back unchanged
        return value.normalize(NUMBER_CONTEXT)
    if isinstance(value, list | tuple | set):
        return [normalize(v) for v in value]
    if isinstance(value, Mapping):
        return {k: normalize(v) for k, v in value.items()}
    return value


def values_equal(a: Any, b: Any) -> bool:
    """Equality as DynamoDB sees it: numbers by value, but a bool is never a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | Decimal) and isinstance(b, int | Decimal):
        return Decimal(a) == Decimal(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def mismatches(item: Mapping[str, Any] | None, expected: Mapping[str, Any]) -> list[str]:
    """Why `item` does not meet `expected` ({attr: value, or None = absent}); [] if it does."""
    if item is None:
        return ["the control entry does not exist"]
    out = []
    for attr, want in expected.items():
        if want is None:
            if attr in item:
                out.append(f"{attr}={item[attr]!r} (expected absent)")
        elif attr not in item:
            out.append(f"{attr} absent (expected {want!r})")
        elif not values_equal(normalize(item[attr]), normalize(want)):
            out.append(f"{attr}={item[attr]!r} (expected {want!r})")
    return out


def apply_changes(item: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """New item with `changes` set; a None value removes the attribute."""
    out = dict(item)
    for attr, value in changes.items():
        if value is None:
            out.pop(attr, None)
        else:
            out[attr] = value
    return out


def prepare_ledger_entry(lease: Lease, entry: Mapping[str, Any], now: float) -> dict[str, Any]:
    """Validated ledger entry of the lease's table; `committedAt` defaults to now (UTC ISO)."""
    checked = check_item(entry, table=lease.table)
    if checked.get(KEY) != lease.table:
        raise StoreError(
            f"ledger entry's {KEY} {checked.get(KEY)!r} is not the lease's table",
            table=lease.table,
            attribute=KEY,
        )
    pk = checked.get(PARTITION_KEY)
    if not isinstance(pk, str) or not pk:
        raise StoreError("ledger entry needs a non-empty str partitionKey", table=lease.table)
    checked.setdefault(COMMITTED_AT, iso_utc(now))
    checked.pop(SEQ, None)  # assigned by the store, inside the commit
    return checked


def sort_ledger(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ledger order: committedAt, then partitionKey (str() so mixed types never crash)."""
    return sorted(entries, key=lambda e: (str(e.get(COMMITTED_AT, "")), e.get(PARTITION_KEY)))


def iso_utc(epoch: float) -> str:
    """Sortable UTC timestamp with microseconds: string order is time order."""
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_ms(epoch: float) -> int:
    """Lease expiries are stored as integer milliseconds (no float ever reaches a store)."""
    return int(epoch * 1000)


def lease_held_message(owner: Any, expires_ms: Any) -> str:
    """Says who holds the lease and until when, so an operator can wait or break it."""
    return f"lease held by {owner!r} until {iso_utc(int(expires_ms) / 1000)}"
