"""The fan-out schedules: one per cadence, one RunRequest per active table, runs in the implicit
asset job (assets whose partitions start at different times cannot share any other job)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from delta_platform.control_entry import ControlEntry
from delta_platform.dagster_layer import schedules
from delta_platform.dagster_layer.translator import partitions_for
from delta_platform_tests.dagster_layer.conftest import T0, Platform, hour_key

TICK = datetime(2026, 1, 3, 5, 10, tzinfo=UTC)  # loads the 2026-01-03-04:00 partition


def _evaluate(defs: dg.Definitions, name: str, at: datetime = TICK) -> dg.ScheduleExecutionData:
    ctx = dg.build_schedule_context(scheduled_execution_time=at, repository_def=defs.get_repository_def())
    return defs.resolve_schedule_def(name).evaluate_tick(ctx)


@pytest.fixture
def mixed(platform: Platform) -> Platform:
    """Hourly tables with different partition starts, a daily one, an inactive and an invalid one,
    and one whose first partition ends after the tick."""
    later = (T0 + timedelta(days=1, hours=7)).isoformat()
    future = (TICK + timedelta(hours=3)).isoformat()
    platform.add(platform.entry("orders_a", "row_id", "0"),
                 platform.entry("orders_b", "updated_at", "2025-12-31 00:00:00", partitionStart=later),
                 platform.entry("orders_new", "row_id", "0", partitionStart=future),
                 platform.entry("orders_daily", "row_id", "0", partitionCadence="daily"),
                 {**platform.entry("paused", "row_id", "0"), "activeflag": "false"},
                 {**platform.entry("broken", "row_id", "0"), "filteroperator": "greater"})
    return platform


def test_one_schedule_per_cadence_one_run_request_per_active_table(mixed: Platform, caplog) -> None:
    defs = mixed.defs()
    dg.Definitions.validate_loadable(defs)
    names = sorted(s.name for s in defs.schedules)
    assert names == ["delta_loads_daily_schedule", "delta_loads_hourly_schedule"]
    assert defs.resolve_schedule_def("delta_loads_daily_schedule").cron_schedule == "10 0 * * *"
    assert defs.resolve_implicit_global_asset_job_def().name == schedules.ASSET_JOB
    with caplog.at_level(logging.WARNING):
        data = _evaluate(defs, "delta_loads_hourly_schedule")
    by_table = {r.tags["delta_platform/table"]: r for r in data.run_requests}
    assert sorted(by_table) == ["orders_a", "orders_b"]  # not paused, broken, the daily or the future one
    for table, request in by_table.items():
        assert request.asset_selection == [dg.AssetKey(["raw", "dwh", table])]
        assert request.partition_key == "2026-01-03-04:00"
        assert request.run_key == f"{table}:2026-01-03-04:00"
        assert request.tags["dagster/partition"] == "2026-01-03-04:00"
    assert "broken" in caplog.text and "greater" in caplog.text  # the invalid entry is reported
    daily = _evaluate(defs, "delta_loads_daily_schedule", datetime(2026, 1, 3, 0, 10, tzinfo=UTC))
    assert [(r.tags["delta_platform/table"], r.partition_key) for r in daily.run_requests] == [
        ("orders_daily", "2026-01-02")]


def test_tick_before_any_partition_ends_skips(mixed: Platform) -> None:
    data = _evaluate(mixed.defs(), "delta_loads_hourly_schedule", datetime(2025, 12, 31, 5, 10, tzinfo=UTC))
    assert data.run_requests == [] and "no hourly table" in (data.skip_message or "")


def test_no_active_table_no_schedule(platform: Platform) -> None:
    platform.add({**platform.entry("paused", "row_id", "0"), "activeflag": "false"})
    defs = platform.defs()
    dg.Definitions.validate_loadable(defs)
    assert list(defs.schedules) == []


def test_requested_run_loads_one_table_in_the_implicit_job(mixed: Platform) -> None:
    """What the daemon launches for one RunRequest: the implicit asset job, that table's asset only."""
    mixed.insert(range(1, 21), hour=0)
    defs = mixed.defs()
    request = next(r for r in _evaluate(defs, "delta_loads_hourly_schedule").run_requests
                   if r.tags["delta_platform/table"] == "orders_a")
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(partition_key=hour_key(0), asset_selection=request.asset_selection,
                                        instance=instance, tags={"delta_platform/table": "orders_a"})
    assert result.success
    materialized = [e.asset_key for e in result.get_asset_materialization_events()]
    assert materialized == [dg.AssetKey(["raw", "dwh", "orders_a"])]
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert mixed.store.get_entry("orders_a")["startvalue"] == "20"
    assert mixed.store.get_entry("orders_b").get("startvalue") == "2025-12-31 00:00:00"  # untouched


@pytest.mark.parametrize("cadence", ["hourly", "daily", "weekly", "monthly"])
def test_last_complete_partition_matches_the_full_key_list(platform: Platform, cadence: str) -> None:
    entry = ControlEntry.from_item({**platform.entry("t", "row_id", "0"), "partitionCadence": cadence})
    pdef = partitions_for(entry)
    for at in [T0 - timedelta(hours=1), T0 + timedelta(minutes=59), T0 + timedelta(hours=1),
               T0 + timedelta(days=40, hours=5, minutes=10), T0 + timedelta(days=400)]:
        keys = pdef.get_partition_keys(current_time=at)
        assert schedules.last_complete_partition(pdef, at) == (keys[-1] if keys else None), (cadence, at)


def test_sensor_initial_load_resolves_to_the_implicit_job(platform: Platform, monkeypatch) -> None:
    monkeypatch.delenv("DELTA_PLATFORM_WEBSERVER", raising=False)
    platform.add(platform.entry("orders_s3", "row_id", "0"))
    defs = platform.defs()
    sensor = defs.resolve_sensor_def("control_table_sensor")
    with (dg.DagsterInstance.ephemeral() as instance,
          dg.build_sensor_context(instance=instance, resources=platform.resources,
                                  repository_def=defs.get_repository_def()) as ctx):
        data = sensor.evaluate_tick(ctx)
    assert [(r.job_name, r.asset_selection, r.run_key) for r in data.run_requests] == [
        (schedules.ASSET_JOB, [dg.AssetKey(["raw", "dwh", "orders_s3"])], "initial:orders_s3")]
