"""Publish gate: what must hold before a window becomes visible, and the manifest that shows it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from delta_platform.control_entry import ControlEntry, NullPolicy
from delta_platform.core.window import Window
from delta_platform.engine.base import EngineResult
from delta_platform.errors import VerificationError
from delta_platform.lake import Lake
from delta_platform.manifest import Manifest, ManifestFile, schema_to_json
from delta_platform.partitions import PartitionSpec

log = logging.getLogger("delta_platform")


def verify_counts(entry: ControlEntry, lake: Lake, result: EngineResult) -> list[str]:
    """Rows written = rows read = the source's count, or nothing is published."""
    written = lake.count_rows([f.path for f in result.staged])
    if not (written == result.rows_read == result.source_count):
        raise VerificationError(
            f"row counts disagree: written {written}, read {result.rows_read}, source count "
            f"{result.source_count}; nothing published, watermark unchanged",
            table=entry.name,
        )
    warnings = []
    if result.null_count:
        msg = (
            f"{result.null_count} rows have a NULL {entry.filter_column} and are invisible to "
            f"an incremental load (nullPolicy={entry.null_policy.value})"
        )
        if entry.null_policy is NullPolicy.FAIL:
            raise VerificationError(msg, table=entry.name, attribute="filtercolumn")
        if entry.null_policy is NullPolicy.WARN:
            log.warning("table %s: %s", entry.name, msg)
            warnings.append(msg)
    return warnings


def manifest_for(
    entry: ControlEntry,
    partition: PartitionSpec,
    attempt: str,
    window: Window,
    result: EngineResult,
    started_at: datetime,
) -> Manifest:
    return Manifest(
        table=entry.name,
        source_schema=entry.source_schema,
        partition_key=partition.key,
        attempt_id=attempt,
        window=window.to_json(),
        files=tuple(ManifestFile(f.name, f.rows, f.bytes) for f in result.staged),
        rows=result.rows_read,
        schema=schema_to_json(result.schema),
        engine=result.engine,
        created_at=datetime.now(UTC).isoformat(),
        extra={"sourceCount": result.source_count, "startedAt": started_at.isoformat()},
    )
