"""One job and one schedule per table (hourly by default), so tables load in parallel runs.

Written with `@dg.schedule` rather than `build_schedule_from_partitioned_job`, which calls the
deprecated `run_request_for_partition` internally in 1.13.
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from delta_platform.control_entry import Cadence, ControlEntry
from delta_platform.dagster_layer.translator import op_name, partitions_for

MINUTE_OF_HOUR = 10  # a tick at 05:10 loads the 04:00 partition


def job_name(entry: ControlEntry) -> str:
    return f"load_{op_name(entry)}_job"


def load_job(entry: ControlEntry, asset: dg.AssetsDefinition) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(job_name(entry), selection=dg.AssetSelection.assets(*asset.keys),
                               tags={"delta_platform/table": entry.name})


def last_complete_partition(partitions_def: dg.TimeWindowPartitionsDefinition, at: datetime) -> str | None:
    """The newest partition whose window has ended at `at` (None before the first one ends)."""
    keys = partitions_def.get_partition_keys(current_time=at)
    return keys[-1] if keys else None


def load_schedule(entry: ControlEntry, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """Running by default; each tick loads the latest complete partition of this one table."""
    partitions_def = partitions_for(entry)
    cron = partitions_def.get_cron_schedule(
        minute_of_hour=MINUTE_OF_HOUR, hour_of_day=None if entry.cadence is Cadence.HOURLY else 0)

    @dg.schedule(name=f"{job.name}_schedule", cron_schedule=cron, job=job, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Loads the latest complete {entry.cadence.value} partition of {entry.name}.")
    def _tick(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        key = last_complete_partition(partitions_def, context.scheduled_execution_time)
        if key is None:
            return dg.SkipReason(f"{entry.name}: no complete partition yet")
        return dg.RunRequest(run_key=key, partition_key=key)

    return _tick
