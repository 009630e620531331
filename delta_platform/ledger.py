"""The ledger entry of a window: what was loaded, how the high was fenced, what it did to the watermark."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from delta_platform.control_entry import ControlEntry
from delta_platform.core.fence import Fence
from delta_platform.core.plan import Mode, Plan
from delta_platform.core.window import Window
from delta_platform.engine.base import EngineResult
from delta_platform.manifest import schema_to_json
from delta_platform.partitions import PartitionSpec, sort_key


def ledger_entry(
    entry: ControlEntry,
    partition: PartitionSpec,
    plan: Plan,
    window: Window,
    fence: Fence | None,
    result: EngineResult,
    attempt: str,
    run_id: str,
    started_at: datetime,
    t0: float,
    before: Any,
    after: Any,
    advances: bool,
    partition_uri: str,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """One committed window; `previous` is this partition's earlier entry (a replay)."""
    if plan.mode is Mode.REPLAY and previous:
        # A replay reloads the recorded window; what that window did to the watermark stands.
        advances = bool(previous.get("advanced"))
        before, after = previous.get("watermarkBefore"), previous.get("watermarkAfter")
    return {
        "targetTableName": entry.name,
        "partitionKey": partition.key,
        "partitionStart": sort_key(partition),
        "attemptId": attempt,
        "runId": run_id or None,
        "mode": plan.mode.value,
        "window": window.to_json(),
        "window_text": window.describe(),
        "fence": fence.to_json() if fence else None,
        "rows": result.rows_read,
        "sourceCount": result.source_count,
        "nullCount": result.null_count,
        "bytes": sum(f.bytes for f in result.staged),
        "files": [f"{partition_uri}/{f.name}" for f in result.staged],
        "schema": schema_to_json(result.schema),
        "engine": result.engine,
        "startedAt": started_at.isoformat(),
        "committedAt": datetime.now(UTC).isoformat(),
        "durationMs": int((time.monotonic() - t0) * 1000),
        "advanced": advances,
        "watermarkBefore": text_or_none(before),
        "watermarkAfter": text_or_none(after),
        "replays": (int(previous.get("replays", 0)) + 1) if previous else 0,
    }


def text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
