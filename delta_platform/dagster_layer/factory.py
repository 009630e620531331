"""The pure factory: control-table items -> Definitions (assets, checks, jobs, schedules)."""
# No `from __future__ import annotations` here: Dagster inspects the asset function's annotations.

# The engine, lake and pyarrow are imported inside the asset body: the code server only builds
# definitions and must not pay for them (see benchmarks/dagster_overhead.py).

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

from delta_platform.control_entry import ControlEntry
from delta_platform.dagster_layer import checks
from delta_platform.dagster_layer.metadata import PREVIEW_ROWS, load_metadata
from delta_platform.dagster_layer.resources import DeltaPlatformResource
from delta_platform.dagster_layer.translator import DeltaTranslator, op_name
from delta_platform.errors import DeltaError

if TYPE_CHECKING:
    import pyarrow as pa

    from delta_platform.lake import Lake

log = logging.getLogger("delta_platform")
POOL = "delta_loads"


@dataclass(frozen=True)
class Invalid:
    """A control item that failed validation: shown in the UI and by the sensor, never fatal."""

    name: str
    message: str


@dataclass
class ParsedEntries:
    active: list[ControlEntry] = field(default_factory=list)
    inactive: list[ControlEntry] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)


def parse_items(items: Iterable[Mapping[str, Any]]) -> ParsedEntries:
    out = ParsedEntries()
    for item in items:
        try:
            entry = ControlEntry.from_item(dict(item))
        except DeltaError as exc:
            name = str(item.get("targetTableName") or "<missing targetTableName>")
            out.invalid.append(Invalid(name, str(exc)))
            log.warning("control entry %s is invalid and was skipped: %s", name, exc)
            continue
        (out.active if entry.active else out.inactive).append(entry)
    return out


#: Shared by every table's op: Dagster resolves an `In`/`Out`'s type when it is created and again
#: for each op it goes into, so one object per role instead of one per table (11 resolutions per
#: table with `@multi_asset`, 4 here).
_SOURCE_IN = dg.In(dg.Nothing)
_ASSET_OUT = dg.Out(dg.Nothing)
_CHECK_OUT = dg.Out(dg.Any)  # what Dagster infers for an unannotated output, resolved once


def load_asset(entry: ControlEntry, translator: DeltaTranslator, *, pool: str = POOL) -> dg.AssetsDefinition:
    """One asset per table, in its own op: its own retries, checks and a slot in the concurrency pool.

    Built as `OpDefinition` + `AssetsDefinition` rather than with `@multi_asset`, which builds the
    same objects (names, types, required outputs; equal asset specs and checks, tested) but
    inspects the function ~16 times, validates its parameters against the deps and builds and
    resolves a fresh `In`/`Out` per input and output: 0.6 ms a table, half the build of 1,000.
    The compute function takes `(context, inputs)`, Dagster's form for a directly built op, and
    reads the resource from `context.resources`."""
    spec = translator.get_asset_spec(entry)
    key = spec.key
    table = entry.name
    out = key.to_python_identifier()
    check_specs = checks.check_specs(key)
    ins = {dep.asset_key.to_python_identifier(): dep.asset_key for dep in spec.deps}

    def _load(context: dg.AssetExecutionContext, inputs: Mapping[str, Any]):
        from delta_platform.delta_task import PartitionSpec

        delta: DeltaPlatformResource = context.resources.delta
        window = context.partition_time_window
        task = delta.delta_task()
        result = task.run(table, PartitionSpec(context.partition_key, window.start, window.end),
                          run_id=context.run.run_id, log_progress=context.log.info)
        context.log.info(f"{table} partition {result.partition_key}: {result.mode.value} window "
                         f"{result.window.describe()}, {result.rows:,} rows in {result.seconds:.1f}s")
        for warning in result.warnings:
            context.log.warning(warning)
        current = task.entry(table)
        lake = delta.lake(current.output_prefix)
        preview = first_rows(lake, current, result.partition_key) if result.rows else None
        yield dg.MaterializeResult(asset_key=key, metadata=load_metadata(
            result, f"{current.source_schema}.{table}", preview))
        yield from checks.evaluate(current, task.store, lake, key, result.partition_key)

    asset_out = _ASSET_OUT if spec.code_version is None and not spec.skippable else dg.Out(
        dg.Nothing, is_required=not spec.skippable, code_version=spec.code_version)
    op = dg.OpDefinition(
        compute_fn=_load, name=f"load_{op_name(entry)}", ins=dict.fromkeys(ins, _SOURCE_IN),
        outs={out: asset_out, **{f"{out}_{c.name}": _CHECK_OUT for c in check_specs}},
        required_resource_keys={"delta"}, pool=pool)
    return dg.AssetsDefinition(node_def=op, keys_by_input_name=ins, keys_by_output_name={out: key},
                               specs=[spec], check_specs_by_output_name={
                                   f"{out}_{c.name}": c for c in check_specs})


def first_rows(lake: "Lake", entry: ControlEntry, partition_key: str) -> "pa.Table | None":
    """The preview reads one small batch of the first file, never the whole partition."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = lake.read_manifest(entry.source_schema, entry.name, partition_key)
    if manifest is None or not manifest.files:
        return None
    pdir = lake.partition_dir(entry.source_schema, entry.name, partition_key)
    with lake.filesystem.open_input_file(f"{pdir}/{manifest.files[0].name}") as fh:
        batch = next(pq.ParquetFile(fh).iter_batches(batch_size=PREVIEW_ROWS), None)
        return pa.Table.from_batches([batch]) if batch is not None else None


def invalid_spec(bad: Invalid) -> dg.AssetSpec:
    """An invalid entry becomes a visible, non-materializable asset carrying the validation message."""
    return dg.AssetSpec(
        key=dg.AssetKey(["control", "invalid", bad.name.replace("/", "_")]),
        group_name="invalid_control_entries",
        description=f"INVALID control entry, not loaded: {bad.message}",
        metadata={"error": bad.message},
    )


def build_defs(items: Iterable[Mapping[str, Any]], translator: DeltaTranslator | None = None, *,
               resources: Mapping[str, Any] | None = None, pool: str = POOL,
               extra: Iterable[dg.Definitions] = ()) -> dg.Definitions:
    """Assets + checks per active table, one fan-out schedule per cadence, source specs, invalid
    entries. Pure: no store, source or network access, so 1,000 entries stay cheap to load."""
    from delta_platform.dagster_layer.schedules import Target, load_schedules
    from delta_platform.dagster_layer.sensors import control_table_sensor, fingerprint, load_failure_notifier

    translator = translator or DeltaTranslator()
    items = [dict(i) for i in items]
    parsed = parse_items(items)
    by_name = {str(i.get("targetTableName")): i for i in items}
    loaded = {e.name: fingerprint(by_name[e.name]) for e in parsed.active}
    loaded |= {b.name: "invalid:" + fingerprint(by_name.get(b.name, {})) for b in parsed.invalid}
    assets: list[Any] = []
    sources: dict[dg.AssetKey, dg.AssetSpec] = {}
    targets: list[tuple[ControlEntry, Target]] = []
    for entry in parsed.active:
        asset = load_asset(entry, translator, pool=pool)
        src = translator.get_source_spec(entry)
        sources.setdefault(src.key, src)
        assets.append(asset)
        targets.append((entry, Target(entry.name, asset.key, asset.partitions_def)))
    assets += list(sources.values()) + [invalid_spec(b) for b in parsed.invalid]
    invalid = {b.name: b.message for b in parsed.invalid}
    sensors = [control_table_sensor(loaded, {t.table: t for _, t in targets}), load_failure_notifier]
    defs = dg.Definitions(assets=assets, schedules=load_schedules(targets, invalid=invalid), sensors=sensors,
                          resources=dict(resources or {}), executor=dg.in_process_executor)
    return dg.Definitions.merge(defs, *extra) if extra else defs
