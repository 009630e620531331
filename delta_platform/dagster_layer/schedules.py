"""One schedule per cadence that fans out into one run per table, so tables load in parallel runs.

Why not one job and one schedule per table: with 1,000 tables the code server resolved and
snapshotted 1,000 jobs and 1,000 schedules on every load (about 10 s) and the daemon evaluated
1,000 schedule functions per tick. One schedule per cadence yields one `RunRequest` per active
table, each selecting that table's asset and partition; the runs execute in Dagster's implicit
asset job, the only job that may hold assets whose partitions start at different times (each
entry has its own `partitionStart`). Written with `@dg.schedule` rather than
`build_schedule_from_partitioned_job`, which needs one partitioned job per table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from delta_platform.control_entry import Cadence, ControlEntry
from delta_platform.dagster_layer.translator import partitions_for

MINUTE_OF_HOUR = 10  # a tick at 05:10 loads the 04:00 partition
#: Dagster's implicit asset job; `Definitions.resolve_implicit_global_asset_job_def().name` (tested).
ASSET_JOB = "__ASSET_JOB"
TABLE_TAG = "delta_platform/table"


@dataclass(frozen=True)
class Target:
    """What a tick needs to request one table's run, computed once when the definitions load."""

    table: str
    key: dg.AssetKey
    partitions_def: dg.TimeWindowPartitionsDefinition


def last_complete_partition(partitions_def: dg.TimeWindowPartitionsDefinition, at: datetime) -> str | None:
    """The newest partition whose window has ended at `at` (None before the first one ends).

    O(1): asks for the last partition at `at` instead of listing every key since the start."""
    with dg.partition_loading_context(effective_dt=at):
        return partitions_def.get_last_partition_key()


def cron_for(entry: ControlEntry, partitions_def: dg.TimeWindowPartitionsDefinition | None = None) -> str:
    """The cadence's cron at minute 10 (midnight for daily and longer cadences), UTC."""
    partitions_def = partitions_def or partitions_for(entry)
    return partitions_def.get_cron_schedule(
        minute_of_hour=MINUTE_OF_HOUR, hour_of_day=None if entry.cadence is Cadence.HOURLY else 0)


def schedule_name(cadence: Cadence) -> str:
    return f"delta_loads_{cadence.value}_schedule"


def cadence_schedule(cadence: Cadence, cron: str, targets: Sequence[Target], *,
                     invalid: Mapping[str, str] | None = None) -> dg.ScheduleDefinition:
    """Running by default; each tick requests the latest complete partition of every table of
    this cadence, one run per table (run key `<table>:<partition>`, tag `delta_platform/table`).
    Entries that were invalid when the definitions loaded are reported in the tick's log."""
    invalid = dict(invalid or {})

    @dg.schedule(name=schedule_name(cadence), cron_schedule=cron, job_name=ASSET_JOB,
                 execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Loads the latest complete {cadence.value} partition of each of the "
                             f"{len(targets)} active {cadence.value} tables, one run per table.")
    def _tick(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        for name, message in sorted(invalid.items()):
            context.log.warning(f"control entry {name} is invalid and is not scheduled: {message}")
        at = context.scheduled_execution_time
        requests, waiting = [], []
        for target in targets:
            key = last_complete_partition(target.partitions_def, at)
            if key is None:
                waiting.append(target.table)
                continue
            requests.append(dg.RunRequest(run_key=f"{target.table}:{key}", asset_selection=[target.key],
                                          partition_key=key, tags={TABLE_TAG: target.table}))
        if waiting:
            context.log.info(f"no complete partition yet: {', '.join(waiting)}")
        return requests or dg.SkipReason(f"no {cadence.value} table has a complete partition yet")

    return _tick


def load_schedules(targets: Sequence[tuple[ControlEntry, Target]], *,
                   invalid: Mapping[str, str] | None = None) -> list[dg.ScheduleDefinition]:
    """One schedule per cadence that has active tables (an empty table list gets none)."""
    by_cadence: dict[Cadence, tuple[str, list[Target]]] = {}
    for entry, target in targets:
        cron = cron_for(entry, target.partitions_def)
        known, group = by_cadence.setdefault(entry.cadence, (cron, []))
        if cron != known:  # cannot happen with UTC partitions defs; refuse rather than mis-schedule
            raise dg.DagsterInvariantViolationError(f"{entry.name}: cron {cron} differs from {known}")
        group.append(target)
    return [cadence_schedule(cadence, cron, group, invalid=invalid)
            for cadence, (cron, group) in sorted(by_cadence.items(), key=lambda kv: kv[0].value)]
