"""The code location, the translator, the schedules and the demo."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from delta_platform import demo
from delta_platform.control_entry import ControlEntry
from delta_platform.dagster_layer import DeltaTranslator, state
from delta_platform.dagster_layer.resources import DeltaPlatformResource, resources_for_env
from delta_platform_tests.dagster_layer.conftest import Platform


@pytest.fixture
def demo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(state.HOME_VAR, str(tmp_path / "demo"))
    monkeypatch.setenv("DELTA_PLATFORM_ENV", "local")
    return demo.setup()


def test_demo_builds_and_code_location_loads(demo_home: Path) -> None:
    from delta_platform.definitions import make_defs

    demo.setup()  # idempotent
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        defs = make_defs()
    dg.Definitions.validate_loadable(defs)
    keys = {s.key for s in defs.resolve_all_asset_specs()}
    assert dg.AssetKey(["raw", "dwh", "orders_s3"]) in keys
    assert dg.AssetKey(["raw", "dwh", "orders_changes_s3"]) in keys
    assert dg.AssetKey(["source", "default", "dwh", "orders_rds"]) in keys
    assert (demo_home / state.SNAPSHOT_NAME).exists()
    inserted, updated = demo.generate(10, 5, seed=1)
    assert (inserted, updated) == (10, 5)


def test_code_location_builds_with_the_collector_paused(demo_home: Path, monkeypatch) -> None:
    """The build runs without the cyclic GC, whatever survives is frozen, the GC state is restored."""
    import gc

    from delta_platform import definitions

    seen: list[bool] = []
    monkeypatch.setattr(definitions, "make_defs", lambda: seen.append(gc.isenabled()) or dg.Definitions())
    for was_enabled in (True, False):
        (gc.enable if was_enabled else gc.disable)()
        try:
            defs = definitions.load_code_location()
            frozen, enabled = gc.get_freeze_count(), gc.isenabled()
        finally:
            gc.unfreeze()
            gc.enable()
        assert isinstance(defs, dg.Definitions) and frozen > 0 and enabled == was_enabled
    assert seen == [False, False]


def test_run_worker_reads_the_snapshot_not_the_store(demo_home: Path, monkeypatch) -> None:
    path, uri = demo_home / state.SNAPSHOT_NAME, f"sqlite:///{demo_home}/control.db"
    before = state.load_items(uri, path)
    from delta_platform.store import store_from_uri
    store_from_uri(uri).delete_entry("orders_s3")
    monkeypatch.setattr("sys.argv", ["dagster", "api", "execute_run"])
    assert state.load_items(uri, path) == before  # same set as the process that launched the run
    monkeypatch.setattr("sys.argv", ["dagster", "api", "grpc"])
    assert len(state.load_items(uri, path)) == len(before) - 1


def test_unknown_environment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DELTA_PLATFORM_ENV"):
        resources_for_env(str(tmp_path), "moon")


def test_translator_spec_and_subclass(platform: Platform) -> None:
    entry = ControlEntry.from_item({**platform.entry("orders_s3", "row_id", "0"),
                                    "partitionCadence": "daily", "group": "sales"})
    spec = DeltaTranslator({"default": "sqlite"}).get_asset_spec(entry)
    assert spec.key == dg.AssetKey(["raw", "dwh", "orders_s3"])
    assert spec.kinds == {"sqlite", "parquet", "local"} and spec.group_name == "sales"
    assert isinstance(spec.partitions_def, dg.DailyPartitionsDefinition)
    assert spec.partitions_def.get_first_partition_key() == "2026-01-01"
    assert [d.asset_key for d in spec.deps] == [dg.AssetKey(["source", "default", "dwh", "orders"])]
    assert spec.metadata["filter_operator"] == "gte"

    class Prefixed(DeltaTranslator):
        def get_asset_spec(self, entry: ControlEntry) -> dg.AssetSpec:
            spec = super().get_asset_spec(entry)
            return spec.replace_attributes(key=spec.key.with_prefix("lake"))

    platform.add(platform.entry("orders_s3", "row_id", "0"))
    defs = platform.defs(Prefixed())
    assert dg.AssetKey(["lake", "raw", "dwh", "orders_s3"]) in {s.key for s in defs.resolve_all_asset_specs()}


def test_inactive_entry_has_no_asset(platform: Platform) -> None:
    platform.add(platform.entry("orders_s3", "row_id", "0"),
                 {**platform.entry("paused", "row_id", "0"), "activeflag": "false"})
    names = {s.key.path[-1] for s in platform.defs().resolve_all_asset_specs()}
    assert "orders_s3" in names and "paused" not in names


def test_hourly_schedule_runs_previous_hour_one_run_per_table(platform: Platform) -> None:
    platform.add(platform.entry("orders_s3", "row_id", "0"),
                 platform.entry("orders_changes", "updated_at", "2025-12-31 00:00:00"))
    defs = platform.defs()
    schedules = list(defs.schedules)
    assert len(schedules) == 1  # one per cadence, not one per table
    schedule = defs.resolve_schedule_def(schedules[0].name)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "10 * * * *"
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 1, 2, 5, 10, tzinfo=UTC),
                                    repository_def=defs.get_repository_def())
    data = schedule.evaluate_tick(ctx)
    assert sorted((r.asset_selection[0].path[-1], r.partition_key) for r in data.run_requests) == [
        ("orders_changes", "2026-01-02-04:00"), ("orders_s3", "2026-01-02-04:00")]


def test_dms_engine_plugs_in_as_a_nested_resource(platform: Platform) -> None:
    class FakeDms(dg.ConfigurableResource):
        def engine(self) -> str:
            return "dms-engine"

    entry = ControlEntry.from_item(platform.entry("orders_s3", "row_id", "0"))
    delta = platform.resources["delta"]
    assert type(delta.engine_for(entry)).__name__ == "StreamingEngine"
    with pytest.raises(dg.DagsterInvariantViolationError, match="no DMS resource"):
        delta.model_copy(update={"engine": "dms"}).engine_for(entry)
    assert delta.model_copy(update={"engine": "dms", "dms": FakeDms()}).engine_for(entry) == "dms-engine"


def _as_multi_asset(entry: ControlEntry, translator: DeltaTranslator) -> dg.AssetsDefinition:
    """What `load_asset` built before it built the op directly: the reference it must equal."""
    from delta_platform.dagster_layer import checks, factory

    spec = translator.get_asset_spec(entry)

    @dg.multi_asset(name=f"load_{factory.op_name(entry)}", specs=[spec],
                    check_specs=checks.check_specs(spec.key), pool=factory.POOL)
    def _load(context, delta: DeltaPlatformResource):
        yield from ()

    return _load


@pytest.mark.parametrize("cadence", ["hourly", "daily"])
def test_directly_built_asset_equals_the_multi_asset(platform: Platform, cadence: str) -> None:
    """`load_asset` skips `@multi_asset`; the asset, its checks, deps and op must come out the same."""
    from delta_platform.dagster_layer import factory

    class Renamed(DeltaTranslator):  # a subclass's spec (extra dep, other key) is honoured too
        def get_asset_spec(self, entry: ControlEntry) -> dg.AssetSpec:
            spec = super().get_asset_spec(entry)
            return spec.replace_attributes(key=spec.key.with_prefix("lake"),
                                           deps=[*spec.deps, dg.AssetKey(["ref", "calendar"])])

    entry = ControlEntry.from_item({**platform.entry("orders_s3", "row_id", "0"),
                                    "partitionCadence": cadence})
    for translator in (DeltaTranslator({"default": "sqlite"}), Renamed()):
        mine, ref = factory.load_asset(entry, translator), _as_multi_asset(entry, translator)
        assert list(mine.specs) == list(ref.specs)
        assert list(mine.check_specs) == list(ref.check_specs)
        assert mine.partitions_def == ref.partitions_def and mine.keys == ref.keys
        assert set(mine.keys_by_input_name.values()) == set(ref.keys_by_input_name.values())
        assert (mine.can_subset, mine.execution_type, mine.backfill_policy) == (
            ref.can_subset, ref.execution_type, ref.backfill_policy)
        assert {k: mine.get_partition_mapping(k) for k in mine.dependency_keys} == {
            k: ref.get_partition_mapping(k) for k in ref.dependency_keys}
        op, ref_op = mine.node_def, ref.node_def
        assert (op.name, op.pool, op.required_resource_keys, op.tags, op.retry_policy) == (
            ref_op.name, ref_op.pool, ref_op.required_resource_keys, ref_op.tags, ref_op.retry_policy)

        def outputs(a: dg.AssetsDefinition) -> dict:
            by_name = {o.name: o for o in a.node_def.output_defs}
            keys = {**a.node_keys_by_output_name,
                    **{n: s.key for n, s in a.check_specs_by_output_name.items()}}
            return {keys[n]: (o.dagster_type.display_name, o.is_required, o.io_manager_key)
                    for n, o in by_name.items()}

        assert outputs(mine) == outputs(ref)
        assert [(i.dagster_type.display_name) for i in op.input_defs] == [
            i.dagster_type.display_name for i in ref_op.input_defs]
