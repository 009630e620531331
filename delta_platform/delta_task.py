"""The delta task: one partition's load, from lease to watermark, under the crash rule.

Order (DESIGN §3): lease → recover an interrupted publish → plan → fence → read one snapshot
into attempt-scoped staging → verify counts → record the intent → publish the manifest →
one conditional write commits the ledger entry and advances `startvalue` → release the lease.
A failure anywhere before the commit leaves the watermark where it was.

Resumable chunked loads: before a resumable engine (ChunkedEngine) reads, a `resume` intent
records the attempt and its fenced window; the engine checkpoints finished chunks in that
attempt's staging. If the read fails or the process dies, the staging and the intent stay, and
the next run of the same partition whose planned window still starts where the recorded one
does reuses the attempt and the recorded window (high included, no new fence): only the
unfinished chunks are read. A record that no longer matches the entry (startvalue or operator
changed) is discarded with its staging. Nothing is visible before the manifest either way.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from delta_platform.control_entry import ControlEntry
from delta_platform.core.fence import Fence, FenceInputs, fence_high
from delta_platform.core.plan import Mode, Plan, plan_window
from delta_platform.core.watermark import Watermark
from delta_platform.core.window import Bound, Window
from delta_platform.engine.base import Engine
from delta_platform.engine.chunked import CHECKPOINT
from delta_platform.errors import ControlEntryError, DeltaError, WatermarkConflict
from delta_platform.lake import Lake
from delta_platform.lease import LeaseKeeper
from delta_platform.ledger import ledger_entry as build_ledger_entry
from delta_platform.ledger import text_or_none
from delta_platform.partitions import PartitionSpec, sort_key
from delta_platform.publish import manifest_for, verify_counts
from delta_platform.source import Source, TableInfo, to_kind
from delta_platform.store import ControlStore

log = logging.getLogger("delta_platform")


@dataclass
class LoadResult:
    """Everything a caller (asset, CLI, check) needs to report a load."""

    table: str
    partition_key: str
    mode: Mode
    window: Window
    fence: Fence | None
    rows: int
    source_count: int
    null_count: int
    bytes: int
    files: list[str]
    schema: list[dict[str, Any]]
    engine: str
    seconds: float
    attempt_id: str
    watermark_before: str | None
    watermark_after: str | None
    partition_uri: str
    warnings: list[str] = field(default_factory=list)
    recovered: str | None = None
    ledger_entry: dict[str, Any] = field(default_factory=dict)
    #: The engine's own account (reader path, chunks, DMS task statistics), for metadata.
    engine_details: dict[str, Any] = field(default_factory=dict)


class DeltaTask:
    """Runs windows for control-table entries; stateless between calls, all state is in the store."""

    def __init__(
        self,
        store: ControlStore,
        source_for: Callable[[ControlEntry], Source],
        lake_for: Callable[[ControlEntry], Lake],
        engine_for: Callable[[ControlEntry], Engine],
        *,
        owner: str | None = None,
        lease_ttl: timedelta = timedelta(hours=1),
    ):
        self.store = store
        self.source_for = source_for
        self.lake_for = lake_for
        self.engine_for = engine_for
        self.owner = owner or f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl = lease_ttl

    def entry(self, table: str) -> ControlEntry:
        item = self.store.get_entry(table)
        if item is None:
            raise ControlEntryError(
                "no such entry in the control table", table=table, attribute="targetTableName"
            )
        return ControlEntry.from_item(item)

    def run(
        self,
        table: str,
        partition: PartitionSpec,
        *,
        run_id: str = "",
        log_progress: Callable[[str], None] | None = None,
    ) -> LoadResult:
        """Load one partition's window exactly once (or replay it), under the table's lease."""
        entry = self.entry(table)
        lease = self.store.acquire_lease(table, self.owner, self.lease_ttl.total_seconds())
        holder = LeaseKeeper(self.store, lease, self.lease_ttl)
        try:
            recovered = self.recover(entry, holder)
            entry = self.entry(table)  # recovery may have moved startvalue
            result = self._load(entry, partition, holder, run_id, log_progress)
            result.recovered = recovered
            return result
        finally:
            self.store.release_lease(holder.lease)

    def recover(self, entry: ControlEntry, holder: LeaseKeeper) -> str | None:
        """Finish or undo a publish that a crash interrupted; clean abandoned staging."""
        lake = self.lake_for(entry)
        intent = self.store.get_intent(entry.name)
        note = None
        keep: list[str] = []
        if intent is not None and "resume" in intent:
            # A chunked read that stopped part-way: keep its checkpoint while it still applies.
            if _resume_applies(entry, intent):
                keep.append(intent["attemptId"])
            else:
                lake.abandon(entry.source_schema, entry.name, intent["attemptId"])
                self.store.clear_intent(holder.lease)
                note = f"discarded the chunk checkpoint of attempt {intent['attemptId']}: entry changed"
                log.warning("table %s: %s", entry.name, note)
        elif intent is not None:
            manifest = lake.complete_publish(
                entry.source_schema, entry.name, intent["partitionKey"], intent["attemptId"]
            )
            if manifest is not None:
                try:
                    self.store.commit_window(
                        holder.lease,
                        intent["ledgerEntry"],
                        entry_changes=intent["entryChanges"],
                        expected=intent["expected"],
                    )
                    note = (
                        f"rolled forward attempt {intent['attemptId']} of partition {intent['partitionKey']}"
                    )
                except WatermarkConflict:
                    # startvalue was edited by hand after the crash: the published window no longer
                    # follows the watermark, so it is withdrawn instead of committed.
                    lake.delete_partition(entry.source_schema, entry.name, intent["partitionKey"])
                    self.store.clear_intent(holder.lease)
                    note = (
                        f"withdrew partition {intent['partitionKey']} (attempt {intent['attemptId']}): "
                        "startvalue changed before its commit"
                    )
            else:
                self.store.clear_intent(holder.lease)
                note = f"discarded unpublished attempt {intent['attemptId']}"
            log.warning("table %s: %s", entry.name, note)
        lake.cleanup_staging(entry.source_schema, entry.name, keep=keep)
        return note

    def plan(self, entry: ControlEntry, info: TableInfo, partition: PartitionSpec) -> Plan:
        """This partition's window before fencing, from the control entry and the ledger."""
        start = (
            Watermark.parse(info.kind, entry.start_value, table=entry.name, attribute="startvalue")
            if entry.start_value is not None
            else None
        )
        end = (
            Watermark.parse(info.kind, entry.end_value, table=entry.name, attribute="endvalue")
            if entry.end_value is not None
            else None
        )
        recorded_entry = self.store.ledger_entry(entry.name, partition.key)
        recorded = Window.from_json(recorded_entry["window"]) if recorded_entry else None
        if recorded is not None and recorded.operator != entry.filter_operator:
            recorded = None  # the entry changed operator: the old window no longer applies
        last_window, older = None, False
        mark = entry.raw.get("watermark")
        if isinstance(mark, dict) and mark.get("type") == info.kind.value:
            # O(1) state: the control item carries the last committed high and its inclusivity.
            high = Bound(Watermark.parse(info.kind, mark["value"]), bool(mark.get("inclusive", True)))
            last_window = Window(entry.filter_operator, None, high)
            older = sort_key(partition) < str(mark.get("partitionStart") or "")
        return plan_window(
            entry.filter_operator,
            start,
            end,
            recorded=recorded,
            last_committed=last_window,
            older_than_last=older,
        )

    def _load(
        self,
        entry: ControlEntry,
        partition: PartitionSpec,
        holder: LeaseKeeper,
        run_id: str,
        log_progress: Callable[[str], None] | None,
    ) -> LoadResult:
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        source, lake, engine = self.source_for(entry), self.lake_for(entry), self.engine_for(entry)
        info = source.describe(entry)
        plan = self.plan(entry, info, partition)
        window, fence = plan.window, None
        # A resumable engine checkpoints fenced windows; a matching record is resumed as is.
        checkpoint = bool(getattr(engine, "resumable", False)) and plan.needs_fence
        resume = self._resume_record(entry, partition, plan) if checkpoint else None
        if resume is not None:
            window = Window.from_json(resume["resume"]["window"])  # the recorded high: no new fence
        elif plan.needs_fence:
            probe = source.probe(info, max_wait=entry.max_txn_wait)
            temporal_end = partition.end if info.kind.is_temporal else None
            fence = fence_high(
                FenceInputs(
                    kind=info.kind,
                    max_at_start=probe.max_at_start,
                    clock=probe.clock,
                    safety_lag=entry.safety_lag,
                    partition_end=to_kind(temporal_end, info.kind) if temporal_end else None,
                    open_txns_drained=probe.drain.drained,
                    oldest_open_txn_start=(
                        to_kind(probe.drain.oldest_start, info.kind) if probe.drain.oldest_start else None
                    ),
                    wait_seconds=probe.drain.waited_seconds,
                    grid=engine.grid,
                    table=entry.name,
                )
            )
            window = window.with_high(fence.high)
        attempt = resume["attemptId"] if resume else f"{started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        checkpoint = checkpoint and not window.empty
        last_report = [time.monotonic()]

        def progress(rows: int) -> None:
            holder.renew_if_due()
            if log_progress and time.monotonic() - last_report[0] > 10:
                last_report[0] = time.monotonic()
                elapsed = max(time.monotonic() - t0, 1e-9)
                log_progress(f"{entry.name}: {rows:,} rows so far ({rows / elapsed:,.0f} rows/s)")

        phase = "read"
        try:
            extra: dict[str, Any] = {}
            if checkpoint:
                extra["checkpoint"] = True
                if resume is None:
                    stale = self.store.get_intent(entry.name)
                    if stale is not None and "resume" in stale:  # another partition's checkpoint
                        lake.abandon(entry.source_schema, entry.name, stale["attemptId"])
                    self.store.set_intent(
                        holder.lease,
                        {
                            "attemptId": attempt,
                            "partitionKey": partition.key,
                            "resume": {
                                "window": window.to_json(),
                                "fence": fence.to_json() if fence else None,
                                "startvalue": entry.raw.get("startvalue"),
                                "operator": entry.filter_operator.value,
                                "engine": engine.name,
                            },
                        },
                    )
            result = engine.run(source, info, window, lake, attempt, progress=progress, **extra)
            phase = "verify"
            warnings = verify_counts(entry, lake, result)
            manifest = manifest_for(entry, partition, attempt, window, result, started_at)
            before = entry.start_value
            advances = plan.moves_watermark and not window.empty and window.high is not None
            after = window.high.value.encode() if advances and window.high else before
            ledger_entry = build_ledger_entry(
                entry,
                partition,
                plan,
                window,
                fence,
                result,
                attempt,
                run_id,
                started_at,
                t0,
                before,
                after,
                advances,
                lake.partition_uri(entry.source_schema, entry.name, partition.key),
                self.store.ledger_entry(entry.name, partition.key),
            )
            if resume is not None:  # the fence that set the recorded high, not a new one
                ledger_entry["fence"] = resume["resume"].get("fence")
                ledger_entry["resumed"] = True
            changes: dict[str, Any] = {
                "lastLoadStatus": "succeeded",
                "lastLoadRows": result.rows_read,
                "lastLoadAt": ledger_entry["committedAt"],
                "lastLoadPartition": partition.key,
                "lastLoadRunId": run_id or None,
                "lastNullCount": result.null_count,
            }
            if advances and window.high is not None:
                changes.update(
                    {
                        "startvalue": after,
                        "startvalueType": info.kind.value,
                        "watermark": {
                            **window.high.to_json(),
                            "partitionKey": partition.key,
                            "partitionStart": sort_key(partition),
                            "attemptId": attempt,
                        },
                    }
                )
            expected = {"startvalue": entry.raw.get("startvalue")} if advances else {}
            holder.renew_if_due(force=True)
            phase = "publish"
            self.store.set_intent(
                holder.lease,
                {
                    "attemptId": attempt,
                    "partitionKey": partition.key,
                    "ledgerEntry": ledger_entry,
                    "entryChanges": changes,
                    "expected": expected,
                },
            )
            lake.publish(manifest)
            self.store.commit_window(holder.lease, ledger_entry, entry_changes=changes, expected=expected)
        except BaseException:
            if (
                checkpoint
                and phase == "read"
                and lake.read_staged_json(entry.source_schema, entry.name, attempt, CHECKPOINT) is not None
            ):
                # Finished chunks and their checkpoint stay (invisible) for the next run to resume.
                log.warning(
                    "table %s: chunked read of attempt %s stopped; kept for resume", entry.name, attempt
                )
                raise
            lake.abandon(entry.source_schema, entry.name, attempt)
            if checkpoint and phase != "publish":  # our resume record would point at nothing
                with contextlib.suppress(Exception):
                    self.store.clear_intent(holder.lease)
            raise
        return LoadResult(
            table=entry.name,
            partition_key=partition.key,
            mode=plan.mode,
            window=window,
            fence=fence,
            rows=result.rows_read,
            source_count=result.source_count,
            null_count=result.null_count,
            bytes=sum(f.bytes for f in manifest.files),
            files=ledger_entry["files"],
            schema=manifest.schema,
            engine=result.engine,
            seconds=time.monotonic() - t0,
            attempt_id=attempt,
            watermark_before=text_or_none(before),
            watermark_after=text_or_none(after),
            partition_uri=lake.partition_uri(entry.source_schema, entry.name, partition.key),
            warnings=warnings,
            ledger_entry=ledger_entry,
            engine_details=dict(result.details),
        )

    def _resume_record(
        self, entry: ControlEntry, partition: PartitionSpec, plan: Plan
    ) -> dict[str, Any] | None:
        """The resume intent to continue: same partition, entry unchanged, same window low."""
        intent = self.store.get_intent(entry.name)
        if intent is None or "resume" not in intent or intent.get("partitionKey") != partition.key:
            return None
        recorded = Window.from_json(intent["resume"]["window"])
        if not _resume_applies(entry, intent) or recorded.low != plan.window.low or recorded.empty:
            return None
        return intent


def _resume_applies(entry: ControlEntry, intent: dict[str, Any]) -> bool:
    """A chunk checkpoint holds only while the entry's watermark and operator are unchanged."""
    record = intent["resume"]
    return record.get("startvalue") == entry.raw.get("startvalue") and (
        record.get("operator") == entry.filter_operator.value
    )


__all__ = ["DeltaTask", "LoadResult", "PartitionSpec", "DeltaError"]
