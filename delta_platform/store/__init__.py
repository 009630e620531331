"""The control store: control items, load ledger, leases and publish intents.

One interface (`ControlStore`), two implementations: `LocalStore` (one SQLite file, the local
default) and `DynamoStore` (the reference's DynamoDB table plus a ledger table). Which one is
used is a URI, so switching environments is configuration, not code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

from delta_platform.errors import StoreError
from delta_platform.store.base import ControlStore, Lease
from delta_platform.store.local import LocalStore

if TYPE_CHECKING:
    from delta_platform.store.dynamodb import DynamoStore


def __getattr__(name: str) -> Any:
    """`DynamoStore` on first use: boto3 costs ~0.3 s of import, and local mode never needs it."""
    if name == "DynamoStore":
        from delta_platform.store.dynamodb import DynamoStore

        return DynamoStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def store_from_uri(uri: str, **kwargs: Any) -> ControlStore:
    """`dynamodb://<control>?ledger=<ledger>&region=..&endpoint_url=..` -> DynamoStore;
    `sqlite:///path/file.db` (or `sqlite:////abs/path.db`) or a plain path -> LocalStore.
    Extra kwargs go to the store's constructor (e.g. clock, session)."""
    if not uri:
        raise StoreError("empty control-store URI")
    parsed = urlparse(uri)
    if parsed.scheme == "dynamodb":
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        unknown = set(query) - {"ledger", "region", "endpoint_url"}
        if unknown:
            raise StoreError(f"unknown dynamodb URI parameter(s): {sorted(unknown)}")
        from delta_platform.store.dynamodb import DynamoStore

        return DynamoStore(
            parsed.netloc or "etlConfiguration",
            query.get("ledger", "etlLedger"),
            region_name=query.get("region"),
            endpoint_url=query.get("endpoint_url"),
            **kwargs,
        )
    if parsed.scheme == "sqlite":
        # SQLAlchemy convention: sqlite:///rel.db is relative, sqlite:////abs.db absolute.
        path = unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path)
        if not path:
            raise StoreError(f"no file in control-store URI {uri!r}")
        return LocalStore(path, **kwargs)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # plain or Windows path
        return LocalStore(unquote(parsed.path) if parsed.scheme == "file" else uri, **kwargs)
    raise StoreError(f"unsupported control-store URI scheme {parsed.scheme!r} in {uri!r}")


__all__ = ["ControlStore", "DynamoStore", "Lease", "LocalStore", "store_from_uri"]
