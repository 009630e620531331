"""Control-table items for tests: one minimal valid `gte` entry, changed per test."""

from __future__ import annotations

from typing import Any


def gte_item(**changes: Any) -> dict[str, Any]:
    """`main.t` loaded incrementally on `v` from 0; keyword arguments override attributes."""
    return {
        "targetTableName": "t",
        "activeflag": "true",
        "sourceSchema": "main",
        "sourceTable": "t",
        "filtercolumn": "v",
        "filteroperator": "gte",
        "startvalue": "0",
        "ouputs3Prefix": "/tmp/x",
        **changes,
    }
