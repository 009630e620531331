"""Assets end to end through `dg.materialize`: deltas, replay, checks, tampering, invalid entries."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal

import dagster as dg
import pyarrow.parquet as pq

from delta_platform.control_entry import ControlEntry
from delta_platform.dagster_layer import checks
from delta_platform.lake import Lake
from delta_platform.store.local import dumps, loads
from delta_platform_tests.dagster_layer.conftest import Platform, hour_key


def _lake_rows(p: Platform, name: str) -> list[dict]:
    return Lake(str(p.root / "lake")).dataset("dwh", name).to_table().to_pylist()


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


def test_consecutive_partitions_load_exact_union(platform: Platform) -> None:
    platform.add(platform.entry("orders_s3", "row_id", "0"),
                 platform.entry("orders_changes", "updated_at", "2025-12-31 00:00:00"))
    versions: set[tuple[int, str]] = set()

    def snapshot_versions() -> None:
        with sqlite3.connect(platform.root / "dwh.db") as conn:
            versions.update(conn.execute("SELECT row_id, amount FROM orders").fetchall())
        conn.close()

    platform.insert(range(1, 301), hour=0)
    snapshot_versions()
    for hour, (new, changed) in enumerate([(range(301, 351), range(1, 41)),
                                           (range(351, 420), range(30, 90))]):
        for name in ("orders_s3", "orders_changes"):
            result = platform.materialize(name, hour)
            assert all(_checks(result).values()), _checks(result)
        platform.insert(new, hour=hour + 1)
        platform.update(changed, hour=hour + 1)
        snapshot_versions()
    for name in ("orders_s3", "orders_changes"):
        platform.materialize(name, 2)

    ids = [r["row_id"] for r in _lake_rows(platform, "orders_s3")]
    assert sorted(ids) == list(range(1, 420))  # every row exactly once
    changes = [(r["row_id"], Decimal(r["amount"])) for r in _lake_rows(platform, "orders_changes")]
    assert len(changes) == len(set(changes))  # no version twice
    assert set(changes) == {(i, Decimal(str(a))) for i, a in versions}  # every committed version once


def test_metadata_and_replay_idempotent(platform: Platform) -> None:
    platform.add(platform.entry("orders_s3", "row_id", "0"))
    platform.insert(range(1, 101), hour=0)
    first = platform.materialize("orders_s3", 0)
    md = first.get_asset_materialization_events()[0].materialization.metadata
    assert md["dagster/partition_row_count"].value == 100
    assert md["window"].value == "[0, 100]" and md["fence_term"].value == "max"
    assert isinstance(md["dagster/column_schema"].value, dg.TableSchema)
    assert md["dagster/uri"].value.startswith("file://") and "row_id" in md["preview"].value
    assert md["engine_details"].value == {"reader": "adbc-sqlite"}  # how the rows travelled
    platform.insert(range(101, 151), hour=1)
    platform.materialize("orders_s3", 1)
    replay = platform.materialize("orders_s3", 0)
    md = replay.get_asset_materialization_events()[0].materialization.metadata
    assert md["mode"].value == "replay" and md["dagster/partition_row_count"].value == 100
    assert all(_checks(replay).values())
    assert sorted(r["row_id"] for r in _lake_rows(platform, "orders_s3")) == list(range(1, 151))
    assert platform.store.get_entry("orders_s3")["startvalue"] == "150"


def test_checks_fail_when_lake_or_ledger_tampered(platform: Platform) -> None:
    platform.add(platform.entry("orders_s3", "row_id", "0"))
    platform.insert(range(1, 101), hour=0)
    platform.materialize("orders_s3", 0)
    platform.insert(range(101, 151), hour=1)
    platform.materialize("orders_s3", 1)
    entry = ControlEntry.from_item(platform.store.get_entry("orders_s3"))
    lake = Lake(str(p_lake := platform.root / "lake"))
    key = dg.AssetKey(["raw", "dwh", "orders_s3"])

    def verdicts(partition: int) -> dict[str, bool]:
        return {r.check_name: r.passed for r in checks.evaluate(entry, platform.store, lake, key,
                                                                hour_key(partition))}

    assert all(verdicts(1).values())
    # ledger: pretend partition 1 started below partition 0's high -> rows twice
    with sqlite3.connect(platform.root / "control.db") as conn:
        item = loads(conn.execute("SELECT item FROM ledger WHERE partition_key = ?",
                                  (hour_key(1),)).fetchone()[0])
        item["window"]["low"]["value"] = "90"
        conn.execute("UPDATE ledger SET item = ? WHERE partition_key = ?", (dumps(item), hour_key(1)))
    conn.close()
    assert verdicts(1)[checks.WATERMARK] is False
    # control table: startvalue edited by hand is reported, not hidden
    platform.store.update_entry("orders_s3", {"startvalue": "120"})
    assert verdicts(1)[checks.WATERMARK] is False
    # lake: a published file replaced by one with fewer rows
    manifest = lake.read_manifest("dwh", "orders_s3", hour_key(0))
    path = f"{lake.partition_dir('dwh', 'orders_s3', hour_key(0))}/{manifest.files[0].name}"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 10), path)
    assert verdicts(0)[checks.ROW_COUNT] is False
    assert p_lake.exists()


def test_manual_reset_is_reported(platform: Platform) -> None:
    platform.add(platform.entry("orders_s3", "row_id", "0"))
    platform.insert(range(1, 101), hour=0)
    platform.materialize("orders_s3", 0)
    platform.store.update_entry("orders_s3", {"startvalue": "50"})
    result = platform.materialize("orders_s3", 1)  # a deliberate rewind warns, it does not block
    evaluation = {c.check_name: c for c in result.get_asset_check_evaluations()}[checks.WATERMARK]
    assert "manual reset rewound" in (evaluation.description or "")
    assert evaluation.severity == dg.AssetCheckSeverity.WARN and not evaluation.passed


def test_invalid_entry_beside_valid_ones(platform: Platform) -> None:
    platform.add(platform.entry("orders_s3", "row_id", "0"),
                 {**platform.entry("broken", "row_id", "0"), "filteroperator": "greater"})
    defs = platform.defs()
    dg.Definitions.validate_loadable(defs)
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    assert dg.AssetKey(["raw", "dwh", "orders_s3"]) in keys
    bad = next(s for s in defs.resolve_all_asset_specs() if s.key.path[:2] == ["control", "invalid"])
    assert "filteroperator" in bad.description and "greater" in bad.description
    assert json.dumps(bad.metadata["error"])
