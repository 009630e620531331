"""End to end on moto: DynamoDB control table, DMS played from real PostgreSQL, an S3 lake."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pyarrow.fs as pafs
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from delta_platform.aws.dms import DmsEngine
from delta_platform.delta_task import DeltaTask, PartitionSpec
from delta_platform.engine import StreamingEngine
from delta_platform.errors import DeltaError
from delta_platform.lake import Lake
from delta_platform.source import Source
from delta_platform.store import DynamoStore
from delta_platform_tests.aws.harness import Scenario
from delta_platform_tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.postgres

def _hour(h: int) -> PartitionSpec:
    return PartitionSpec(f"2024-01-01-{h:02d}:00", datetime(2024, 1, 1, h, tzinfo=UTC),
                         datetime(2024, 1, 1, h + 1, tzinfo=UTC))


H0, H1 = _hour(0), _hour(1)


def _setup(aws: Any, schema: str, engine: DmsEngine, *, max_attempts: int = 8) -> tuple[DeltaTask, Lake, Any]:
    sfx = uuid.uuid4().hex[:8]
    store = DynamoStore(f"etlConfiguration_{sfx}", f"etlLedger_{sfx}", endpoint_url=aws.url,
                        region_name="us-east-1", max_attempts=max_attempts)
    store.init()
    lake_bucket = f"lake-{sfx}"
    aws.s3.create_bucket(Bucket=lake_bucket)
    prefix = f"s3://{lake_bucket}/lake"
    for name, eng in ((f"dms_{sfx}", "dms"), (f"stream_{sfx}", "streaming")):
        store.put_entry({"targetTableName": name, "activeflag": "true", "sourceSchema": schema,
                         "sourceTable": "orders", "filtercolumn": "updated_at", "filteroperator": "gte",
                         "startvalue": "2024-01-01T00:00:00+00:00", "ouputs3Prefix": prefix, "engine": eng,
                         "maxTxnWaitSeconds": "2"})  # the shared test server may have open sessions
    lake = Lake(prefix, s3_endpoint_url=aws.url, s3_region="us-east-1")
    source = Source(PG_ADMIN_URL)
    task = DeltaTask(store, lambda e: source, lambda e: lake,
                     lambda e: engine if e.engine == "dms" else StreamingEngine())
    return task, lake, store


def _names(store: Any) -> tuple[str, str]:
    sfx = store.control_table.rsplit("_", 1)[1]
    return f"dms_{sfx}", f"stream_{sfx}"


def test_dms_windows_publish_advance_and_equal_the_streaming_engine(aws, make_engine, orders, pg_admin):
    engine, player = make_engine()
    task, lake, store = _setup(aws, orders, engine)
    dms_t, stream_t = _names(store)
    first = task.run(dms_t, H0)
    task.run(stream_t, H0)
    assert first.engine == "dms" and first.rows == 19 and first.null_count == 1
    assert first.watermark_after == "2024-01-01T00:00:19.000000+00:00"
    with pg_admin.begin() as conn:
        conn.execute(sa.text(f"insert into \"{orders}\".orders select i, i * 1.25, timestamptz "
                             "'2024-01-01 00:00:10+00' + i * interval '1 second', 'late' "
                             "from generate_series(21, 25) i"))
    second = task.run(dms_t, H1)
    task.run(stream_t, H1)
    assert second.rows == 5 and second.window.low is not None and not second.window.low.inclusive
    mapping = json.loads(player.params("CreateReplicationTask")[-1]["TableMappings"])
    filters = [f["filter-conditions"][0]["filter-operator"] for f in mapping["rules"][0]["filters"]]
    assert filters == ["between", "noteq"]  # exclusive low bound, done the DMS way
    assert store.get_entry(dms_t)["startvalue"] == "2024-01-01T00:00:35.000000+00:00"
    for spec in (H0, H1):
        got = lake.read_partition(orders, dms_t, spec.key).sort_by("id")
        want = lake.read_partition(orders, stream_t, spec.key).sort_by("id")
        assert got.schema == want.schema and got.equals(want)
    assert aws.leftovers(dms_t) == {"tasks": [], "endpoints": [], "instances": [], "output": []}


@pytest.mark.parametrize("case", ["fail", "wrong_reason", "never", "mismatch", "throttle"])
def test_failures_keep_the_watermark_and_leave_nothing(aws, make_engine, orders, case):
    scenario = Scenario("finish", missing=1) if case == "mismatch" else (
        Scenario() if case == "throttle" else Scenario(case))
    engine, _ = make_engine(scenario, max_wait=0.3)
    task, lake, store = _setup(aws, orders, engine, max_attempts=2)
    dms_t, _ = _names(store)
    armed = threading.Event()
    if case == "throttle":  # DynamoDB throttles every write once DMS has delivered
        def throttle(model: Any, **_: Any) -> None:
            if armed.is_set() and model.name in ("TransactWriteItems", "UpdateItem", "PutItem", "DeleteItem"):
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                             "Message": "slow down"}}, model.name)
        store.client.meta.events.register("before-call.dynamodb", throttle)
        real_run = engine.run

        def run_then_arm(*args: Any, **kwargs: Any) -> Any:
            result = real_run(*args, **kwargs)
            armed.set()
            return result
        engine.run = run_then_arm  # type: ignore[method-assign]
    with pytest.raises(DeltaError):
        task.run(dms_t, H0)
    armed.clear()
    entry = store.get_entry(dms_t)
    assert entry["startvalue"] == "2024-01-01T00:00:00+00:00" and not store.ledger(dms_t)
    assert aws.leftovers(dms_t) == {"tasks": [], "endpoints": [], "instances": [], "output": []}
    table_root = lake.table_root(orders, dms_t)
    left = lake.filesystem.get_file_info(pafs.FileSelector(table_root, recursive=True, allow_not_found=True))
    assert [i.path for i in left if i.type == pafs.FileType.File] == []
