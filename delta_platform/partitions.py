"""Partition keys per cadence, in Dagster's formats, so the CLI and the assets name windows alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from delta_platform.control_entry import Cadence


@dataclass(frozen=True)
class PartitionSpec:
    """The Dagster partition being materialized: its key and, for time partitions, its bounds."""

    key: str
    start: datetime | None = None
    end: datetime | None = None


def sort_key(partition: PartitionSpec) -> str:
    """Orders partitions by start time (keys for partitions without one)."""
    return partition.start.astimezone(UTC).isoformat() if partition.start else partition.key


FORMATS = {
    Cadence.HOURLY: "%Y-%m-%d-%H:%M",
    Cadence.DAILY: "%Y-%m-%d",
    Cadence.WEEKLY: "%Y-%m-%d",
    Cadence.MONTHLY: "%Y-%m-%d",
}


def _floor(cadence: Cadence, at: datetime) -> datetime:
    at = at.astimezone(UTC)
    if cadence is Cadence.HOURLY:
        return at.replace(minute=0, second=0, microsecond=0)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if cadence is Cadence.DAILY:
        return day
    if cadence is Cadence.WEEKLY:  # Dagster's weekly partitions start on Sunday
        return day - timedelta(days=(day.weekday() + 1) % 7)
    return day.replace(day=1)


def _next(cadence: Cadence, start: datetime) -> datetime:
    if cadence is Cadence.HOURLY:
        return start + timedelta(hours=1)
    if cadence is Cadence.DAILY:
        return start + timedelta(days=1)
    if cadence is Cadence.WEEKLY:
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def spec_for_start(cadence: Cadence, start: datetime) -> PartitionSpec:
    start = _floor(cadence, start)
    return PartitionSpec(start.strftime(FORMATS[cadence]), start, _next(cadence, start))


def spec_from_key(cadence: Cadence, key: str) -> PartitionSpec:
    """The partition named `key`; raises ValueError for a key not in this cadence's format."""
    start = datetime.strptime(key, FORMATS[cadence]).replace(tzinfo=UTC)
    spec = spec_for_start(cadence, start)
    if spec.key != key:
        raise ValueError(f"{key!r} is not a {cadence.value} partition key")
    return spec


def last_complete(cadence: Cadence, now: datetime | None = None) -> PartitionSpec:
    """The newest partition that has ended: what a schedule tick at `now` loads."""
    current = _floor(cadence, now or datetime.now(UTC))
    previous = _floor(cadence, current - timedelta(seconds=1))
    return spec_for_start(cadence, previous)
