"""Control-table entry -> AssetSpec, the dagster-sling/dagster-dlt translator pattern.

Subclass `DeltaTranslator` and override `get_asset_spec` (call super() and `replace_attributes` /
`merge_attributes`) to rename keys, regroup or add metadata.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

import dagster as dg

from delta_platform.control_entry import Cadence, ControlEntry

_PARTITIONS: dict[Cadence, type[dg.TimeWindowPartitionsDefinition]] = {
    Cadence.HOURLY: dg.HourlyPartitionsDefinition,
    Cadence.DAILY: dg.DailyPartitionsDefinition,
    Cadence.WEEKLY: dg.WeeklyPartitionsDefinition,
    Cadence.MONTHLY: dg.MonthlyPartitionsDefinition,
}


def partitions_for(entry: ControlEntry) -> dg.TimeWindowPartitionsDefinition:
    """One partition per load, on the entry's cadence, from its partitionStart (UTC)."""
    start = entry.partition_start
    fmt = "%Y-%m-%d-%H:%M" if entry.cadence is Cadence.HOURLY else "%Y-%m-%d"
    if entry.cadence is not Cadence.HOURLY:
        start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return _partitions(entry.cadence, start.strftime(fmt))


@lru_cache(maxsize=4096)
def _partitions(cadence: Cadence, start: str) -> dg.TimeWindowPartitionsDefinition:
    """Shared per (cadence, start): tables onboarded together share one immutable definition, so
    1,000 entries do not parse 1,000 start dates and crons, and Dagster compares them cheaply."""
    return _PARTITIONS[cadence](start_date=start, timezone="UTC")


def op_name(entry: ControlEntry) -> str:
    """A Dagster-safe name for the table's op, job and schedule."""
    return re.sub(r"[^A-Za-z0-9_]", "_", entry.name)


class DeltaTranslator:
    """Maps one entry to its asset spec and its upstream source spec."""

    def __init__(self, source_dialects: Mapping[str, str] | None = None):
        self.source_dialects = dict(source_dialects or {})

    def get_source_spec(self, entry: ControlEntry) -> dg.AssetSpec:
        """The source table as an external asset, so the UI shows lineage source -> lake."""
        return dg.AssetSpec(
            key=dg.AssetKey(["source", entry.source, entry.source_schema, entry.source_table]),
            group_name="sources",
            kinds={self.source_dialects.get(entry.source, "database")},
            description=f"Source table {entry.source_schema}.{entry.source_table} "
                        f"(connection {entry.source!r}).",
        )

    def get_asset_spec(self, entry: ControlEntry) -> dg.AssetSpec:
        """Key `raw/<sourceSchema>/<targetTableName>`, kinds, metadata and partitions of one entry."""
        return dg.AssetSpec(
            key=dg.AssetKey(["raw", entry.source_schema, entry.name]),
            deps=[self.get_source_spec(entry).key],
            group_name=entry.group or "raw",
            kinds={self.source_dialects.get(entry.source, "database"), "parquet",
                   "s3" if entry.output_prefix.startswith("s3://") else "local"},
            description=entry.description or (
                f"Delta load of {entry.source_schema}.{entry.source_table} filtered on "
                f"{entry.filter_column} ({entry.filter_operator.value}), one {entry.cadence.value} "
                f"partition per load."),
            partitions_def=partitions_for(entry),
            metadata={
                "source_object": f"{entry.source}:{entry.source_schema}.{entry.source_table}",
                "filter_column": entry.filter_column,
                "filter_operator": entry.filter_operator.value,
                "output_prefix": entry.output_prefix,
                "dagster/table_name": f"{entry.source_schema}.{entry.name}",
            },
            tags={"delta_platform/table": entry.name},
        )
