"""The DMS engine against moto's server: call sequence, table mappings, settings, gate, cleanup."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from delta_platform.aws.settings import DEFAULT_TASK_SETTINGS, merge_settings
from delta_platform.control_entry import ControlEntry
from delta_platform.core.operators import Operator
from delta_platform.core.watermark import Kind, Watermark
from delta_platform.core.window import Bound, Window
from delta_platform.errors import EngineError
from delta_platform.lake import Lake
from delta_platform.source import Source
from delta_platform_tests.aws.conftest import PASSWORD
from delta_platform_tests.aws.harness import Scenario
from delta_platform_tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.postgres


def _entry(schema: str, column: str = "id", **extra: Any) -> ControlEntry:
    return ControlEntry.from_item({
        "targetTableName": f"orders_{uuid.uuid4().hex[:8]}", "activeflag": "true", "sourceSchema": schema,
        "sourceTable": "orders", "filtercolumn": column, "filteroperator": "gte", "startvalue": "0",
        "ouputs3Prefix": "/unused", **extra})


def _i(v: int, inclusive: bool = True) -> Bound:
    return Bound(Watermark(Kind.INT, v), inclusive)


def _t(second: int, inclusive: bool = True) -> Bound:
    return Bound(Watermark(Kind.TIMESTAMPTZ, datetime(2024, 1, 1, 0, 0, second, tzinfo=UTC)), inclusive)


def _f(column: str, *conditions: dict[str, str]) -> dict[str, Any]:
    return {"filter-type": "source", "column-name": column, "filter-conditions": list(conditions)}


# (window, column, exact DMS filters, rows the source holds for it)
CASES = [
    pytest.param(Window(Operator.GTE, _i(5), _i(10)), "id",
                 [_f("id", {"filter-operator": "between", "start-value": "5", "end-value": "10"})], 6,
                 id="gte-closed"),
    pytest.param(Window(Operator.GTE, _i(5, False), _i(10)), "id",
                 [_f("id", {"filter-operator": "between", "start-value": "5", "end-value": "10"}),
                  _f("id", {"filter-operator": "noteq", "value": "5"})], 5, id="gte-exclusive-low"),
    pytest.param(Window(Operator.GTE, _i(5), _i(10, False)), "id",
                 [_f("id", {"filter-operator": "between", "start-value": "5", "end-value": "10"}),
                  _f("id", {"filter-operator": "noteq", "value": "10"})], 5, id="gte-exclusive-high"),
    pytest.param(Window(Operator.GTE, _i(15)), "id", [_f("id", {"filter-operator": "gte", "value": "15"})], 6,
                 id="gte-open-high"),
    pytest.param(Window(Operator.GTE, _t(5, False), _t(12)), "updated_at",
                 [_f("updated_at", {"filter-operator": "between", "start-value": "2024-01-01 00:00:05",
                                    "end-value": "2024-01-01 00:00:12"}),
                  _f("updated_at", {"filter-operator": "noteq", "value": "2024-01-01 00:00:05"})], 7,
                 id="gte-timestamptz-exclusive-low"),
    pytest.param(Window(Operator.LTE, high=_i(7)), "id", [_f("id", {"filter-operator": "ste", "value": "7"})],
                 7, id="lte"),
    pytest.param(Window(Operator.STE, high=_i(7)), "id", [_f("id", {"filter-operator": "ste", "value": "7"})],
                 7, id="ste"),
    pytest.param(Window(Operator.EQ, _i(3), _i(3)), "id", [_f("id", {"filter-operator": "eq", "value": "3"})],
                 1, id="eq"),
    pytest.param(Window(Operator.NOTEQ, _i(3), _i(3)), "id",
                 [_f("id", {"filter-operator": "noteq", "value": "3"})], 19, id="noteq"),
    pytest.param(Window(Operator.NULL), "updated_at", [_f("updated_at", {"filter-operator": "null"})], 1,
                 id="null"),
    pytest.param(Window(Operator.NOTNULL), "updated_at", [_f("updated_at", {"filter-operator": "notnull"})],
                 19, id="notnull"),
    pytest.param(Window(Operator.BETWEEN, _i(3), _i(8)), "id",
                 [_f("id", {"filter-operator": "between", "start-value": "3", "end-value": "8"})], 6,
                 id="between"),
    pytest.param(Window(Operator.NOTBETWEEN, _i(3), _i(8)), "id",
                 [_f("id", {"filter-operator": "notbetween", "start-value": "3", "end-value": "8"})], 14,
                 id="notbetween"),
]


@pytest.mark.parametrize(("window", "column", "filters", "rows"), CASES)
def test_table_mapping_is_exact_and_means_what_sql_means(make_engine, aws, orders, tmp_path, window, column,
                                                         filters, rows):
    """The exact JSON sent to DMS; the player runs it as SQL, and the gate checks it against the
    engine's own SQL count: both spellings select the same rows on a real database."""
    engine, player = make_engine()
    source = Source(PG_ADMIN_URL)
    entry = _entry(orders, column)
    info = source.describe(entry)
    result = engine.run(source, info, window, Lake(str(tmp_path)), "a1")
    sent = json.loads(player.params("CreateReplicationTask")[0]["TableMappings"])
    assert sent == {"rules": [{
        "rule-type": "selection", "rule-id": "1", "rule-name": "delta-window",
        "object-locator": {"schema-name": orders, "table-name": "orders"},
        "rule-action": "include", "filters": filters}]}
    assert result.rows_read == result.source_count == rows
    assert aws.leftovers(entry.name) == {"tasks": [], "endpoints": [], "instances": [], "output": []}


def test_exact_call_sequence_with_an_ephemeral_instance(make_engine, aws, orders, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    engine, player = make_engine(say=lines.append)
    source = Source(PG_ADMIN_URL)
    entry = _entry(orders, replication_task_settings=json.dumps(
        {"FullLoadSettings": {"MaxFullLoadSubTasks": 2}, "Logging": {"EnableLogging": False}}))
    result = engine.run(source, source.describe(entry), Window(Operator.GTE, _i(1), _i(20)),
                        Lake(str(tmp_path)), "20240101T000000-abcdef12")
    assert player.ops == [
        "CreateEndpoint", "CreateEndpoint",
        "CreateReplicationInstance", "DescribeReplicationInstances",
        "CreateReplicationTask", "DescribeReplicationTasks",
        "StartReplicationTask",
        "DescribeReplicationTasks", "DescribeTableStatistics",
        "DescribeReplicationTasks", "DeleteReplicationTask", "DescribeReplicationTasks",
        "DeleteEndpoint", "DeleteEndpoint", "DeleteReplicationInstance",
    ]
    src, tgt = player.params("CreateEndpoint")
    slug = f"dp-{entry.name.replace('_', '-')}-20240101t000000-abcdef12"
    assert src["EndpointIdentifier"] == f"{slug}-src" and src["EngineName"] == "postgres"
    assert src["PostgreSQLSettings"] == {"AfterConnectScript": "SET TIME ZONE 'UTC'",
                                         "FailTasksOnLobTruncation": True, "MapBooleanAsBoolean": True,
                                         "DatabaseName": "test"}
    folder = f"dms-output/{entry.name}/20240101T000000-abcdef12"
    assert tgt["S3Settings"] == {
        "BucketName": aws.bucket, "BucketFolder": folder, "DataFormat": "parquet",
        "ParquetVersion": "parquet-2-0", "ParquetTimestampInMillisecond": False, "EnableStatistics": True,
        "IncludeOpForFullLoad": False, "TimestampColumnName": "", "DatePartitionEnabled": False,
        "CdcInsertsOnly": False, "MaxFileSize": 262144, "EncryptionMode": "sse-s3",
        "ServiceAccessRoleArn": "arn:aws:iam::123456789012:role/dms-s3"}
    inst = player.params("CreateReplicationInstance")[0]
    assert inst["ReplicationInstanceIdentifier"] == slug[:63].rstrip("-")
    assert inst["PubliclyAccessible"] is False
    task = player.params("CreateReplicationTask")[0]
    assert task["MigrationType"] == "full-load" and task["ReplicationTaskIdentifier"] == slug
    settings = json.loads(task["ReplicationTaskSettings"])
    assert settings["FullLoadSettings"] == {"TargetTablePrepMode": "DO_NOTHING", "MaxFullLoadSubTasks": 2,
                                            "CommitRate": 10000}
    assert settings["Logging"] == {"EnableLogging": False}
    assert settings["ErrorBehavior"]["DataErrorPolicy"] == "STOP_TASK"
    assert result.rows_read == result.source_count == 20 and len(result.staged) == 1
    assert result.details["dmsEphemeralInstance"] is True and result.details["dmsFullLoadRows"] == 20
    # the password went to CreateEndpoint (no access role) and nowhere else
    assert src["Password"] == PASSWORD
    assert PASSWORD not in caplog.text + "".join(lines) + json.dumps(result.details, default=str)
    assert aws.leftovers(entry.name) == {"tasks": [], "endpoints": [], "instances": [], "output": []}


def test_secret_read_by_dms_itself_and_configured_instances(make_engine, aws, orders, tmp_path):
    dms = aws.moto_dms
    arns = [dms.create_replication_instance(ReplicationInstanceIdentifier=f"shared-{uuid.uuid4().hex[:6]}{i}",
                                            ReplicationInstanceClass="dms.t3.medium")
            ["ReplicationInstance"]["ReplicationInstanceArn"] for i in range(2)]
    engine, player = make_engine(instances=tuple(arns), role="arn:aws:iam::123456789012:role/dms-secrets")
    source = Source(PG_ADMIN_URL)
    entry = _entry(orders)
    engine.run(source, source.describe(entry), Window(Operator.EQ, _i(4), _i(4)), Lake(str(tmp_path)), "a2")
    src = player.params("CreateEndpoint")[0]
    assert "Password" not in src and "Username" not in src
    assert src["PostgreSQLSettings"]["SecretsManagerSecretId"] == aws.secret_arn
    assert player.params("CreateReplicationTask")[0]["ReplicationInstanceArn"] in arns
    assert "CreateReplicationInstance" not in player.ops and "DeleteReplicationInstance" not in player.ops
    live = dms.describe_replication_instances()["ReplicationInstances"]
    assert {i["ReplicationInstanceArn"] for i in live} >= set(arns)  # configured ones are kept
    for arn in arns:
        dms.delete_replication_instance(ReplicationInstanceArn=arn)


def test_empty_window_runs_no_task(make_engine, orders, tmp_path):
    engine, player = make_engine()
    source = Source(PG_ADMIN_URL)
    result = engine.run(source, source.describe(_entry(orders)), Window(Operator.EQ, _i(999), _i(999)),
                        Lake(str(tmp_path)), "a3")
    assert player.ops == [] and result.rows_read == 0 and len(result.staged) == 1


@pytest.mark.parametrize(("scenario", "message"), [
    (Scenario("fail"), "DMS task failed: Last Error"),
    (Scenario("wrong_reason"), "StopReason 'Stop Reason NORMAL'"),
    (Scenario("never"), "full load did not happen within"),
    (Scenario("finish", missing=1), "DMS loaded 19 rows"),
])
def test_failures_raise_and_leave_nothing(make_engine, aws, orders, tmp_path, scenario, message):
    engine, player = make_engine(scenario, max_wait=0.3)
    source = Source(PG_ADMIN_URL)
    entry = _entry(orders)
    lake = Lake(str(tmp_path))
    with pytest.raises(EngineError, match=message) as err:
        engine.run(source, source.describe(entry), Window(Operator.GTE, _i(1), _i(20)), lake, "a4")
    assert PASSWORD not in str(err.value)
    assert aws.leftovers(entry.name) == {"tasks": [], "endpoints": [], "instances": [], "output": []}
    assert not (tmp_path / orders / entry.name / "_staging" / "a4").exists()
    if scenario.ending == "never":
        assert "StopReplicationTask" in player.ops


def test_settings_merge_is_deep_and_does_not_mutate_defaults():
    before = json.dumps(DEFAULT_TASK_SETTINGS, sort_keys=True)
    merged = merge_settings(DEFAULT_TASK_SETTINGS, {"TargetMetadata": {"LobMaxSize": 1024},
                                                    "ChangeProcessingTuning": {"BatchApplyEnabled": True}})
    assert merged["TargetMetadata"] == {"SupportLobs": True, "FullLobMode": False, "LimitedSizeLobMode": True,
                                        "LobMaxSize": 1024}
    assert merged["ChangeProcessingTuning"] == {"BatchApplyEnabled": True}
    assert json.dumps(DEFAULT_TASK_SETTINGS, sort_keys=True) == before
