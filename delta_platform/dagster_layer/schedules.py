"""One job and one hourly (or cadence) schedule per table, so tables load in parallel runs."""

from __future__ import annotations

import dagster as dg

from delta_platform.control_entry import Cadence, ControlEntry
from delta_platform.dagster_layer.translator import op_name

MINUTE_OF_HOUR = 10  # a tick at 05:10 loads the 04:00 partition


def job_name(entry: ControlEntry) -> str:
    return f"load_{op_name(entry)}_job"


def load_job(entry: ControlEntry, asset: dg.AssetsDefinition) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(job_name(entry), selection=dg.AssetSelection.assets(*asset.keys),
                               tags={"delta_platform/table": entry.name})


def load_schedule(entry: ControlEntry, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """Running by default; each tick loads the latest complete partition of this one table."""
    kwargs = {"minute_of_hour": MINUTE_OF_HOUR}
    if entry.cadence is not Cadence.HOURLY:
        kwargs["hour_of_day"] = 0
    return dg.build_schedule_from_partitioned_job(
        job, name=f"{job.name}_schedule", default_status=dg.DefaultScheduleStatus.RUNNING, **kwargs)
