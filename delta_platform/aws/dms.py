"""The DMS engine: one window as an AWS DMS full-load task, landed through the lake's own staging.

The engine counts the window in one source snapshot (as the streaming engine does), runs a
`full-load` task filtered by the core's DMS table mapping into an S3 folder unique to the
attempt, gates on `stopped` + FULL_LOAD_ONLY_FINISHED + `FullLoadRows` == count, and copies
DMS's Parquet into lake staging conformed to the catalog schema. Publish, verify and commit
then happen exactly as for the built-in engine. Every DMS resource it created, and DMS's
output folder, is removed on success, failure, timeout and cancellation.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from delta_platform.aws.settings import (
    DEFAULT_TASK_SETTINGS,
    DIALECT_ENGINE,
    SETTINGS_PARAM,
    DmsConnection,
    identifier,
    merge_settings,
    s3_target_settings,
    source_engine_settings,
)
from delta_platform.core.predicate import dms_table_mapping
from delta_platform.core.window import Window
from delta_platform.engine.base import EngineResult, Progress
from delta_platform.errors import DeltaError, EngineError
from delta_platform.source.catalog import conform

if TYPE_CHECKING:
    from delta_platform.control_entry import ControlEntry
    from delta_platform.lake import Lake
    from delta_platform.source import Source, TableInfo

log = logging.getLogger("delta_platform.aws.dms")

FINISHED = "FULL_LOAD_ONLY_FINISHED"
_ACTIVE = {"starting", "running", "resuming", "stopping"}


@dataclass(frozen=True)
class DmsOptions:
    """Where DMS writes, which instance runs the task, and how long to wait for it."""

    output_bucket: str
    output_prefix: str = "dms-output"
    target_role_arn: str | None = None  # role DMS assumes to write the output bucket
    connections: Mapping[str, DmsConnection] = field(default_factory=dict)
    replication_instance_arns: Sequence[str] = ()  # empty: an ephemeral instance per run
    instance_class: str = "dms.t3.medium"
    instance_storage_gb: int = 50
    subnet_group: str | None = None
    security_group_ids: Sequence[str] = ()
    kms_key_id: str | None = None
    poll_interval: float = 30.0
    max_wait: float = 6 * 3600.0
    cleanup_wait: float = 900.0
    batch_rows: int = 256 * 1024


class DmsEngine:
    """Engine protocol on AWS DMS; clients are injected so tests point them at moto."""

    name = "dms"
    grid: timedelta | None = timedelta(seconds=1)  # DMS filter values are whole seconds

    def __init__(self, dms: Any, s3: Any, options: DmsOptions, *, secrets: Any = None,
                 filesystem: Callable[[], pafs.FileSystem] | None = None,
                 say: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.dms, self.s3, self.secrets, self.options = dms, s3, secrets, options
        self.filesystem = filesystem or (lambda: pafs.S3FileSystem())
        self.say = say or log.info
        self.sleep, self.clock = sleep, clock

    def __repr__(self) -> str:
        return f"DmsEngine(s3://{self.options.output_bucket}/{self.options.output_prefix})"

    def run(self, source: Source, info: TableInfo, window: Window, lake: Lake, attempt_id: str, *,
            progress: Progress | None = None) -> EngineResult:
        started = time.monotonic()
        entry = info.entry
        if entry.cursor_expression is not None:
            raise EngineError("DMS filters take one plain column, not a cursorExpression; use the "
                              "streaming engine for this entry", table=entry.name, attribute="engine")
        with source.snapshot(info) as snap:
            source_count = int(snap.scalar(source.count_window(info, window)) or 0)
            null_count = int(snap.scalar(source.count_nulls(info)) or 0) if window.incremental else 0
        task = _TaskRun(self, entry, attempt_id)
        try:
            if window.empty or source_count == 0:
                details: dict[str, object] = {"dms": "skipped: the window holds no rows"}
                staged, rows = self._copy([], lake, info, attempt_id, progress)
            else:
                mapping = dms_table_mapping(entry.source_schema, entry.source_table, entry.filter_column,
                                            window)
                task.start(source, mapping)
                stats = task.wait(progress)
                task.gate(stats, source_count)
                staged, rows = self._copy(task.output_files(), lake, info, attempt_id, progress)
                details = task.details(stats)
        except BaseException as exc:
            lake.abandon(entry.source_schema, entry.name, attempt_id)
            task.cleanup()
            if isinstance(exc, DeltaError) or not isinstance(exc, Exception):
                raise  # ours already, or a cancellation: keep it as it is
            raise EngineError(task.scrub(_describe(exc)), table=entry.name) from None
        task.cleanup()
        return EngineResult(self.name, rows, source_count, null_count, staged, info.schema,
                            time.monotonic() - started, details)

    def _copy(self, paths: list[str], lake: Lake, info: TableInfo, attempt_id: str,
              progress: Progress | None) -> tuple[list[Any], int]:
        """Stream DMS's files into lake staging, conformed to the catalog so both engines agree."""
        entry, fs = info.entry, (self.filesystem() if paths else None)
        rows = 0
        with lake.open_writer(entry.source_schema, entry.name, attempt_id, info.schema) as writer:
            for path in paths:
                assert fs is not None
                with fs.open_input_file(path) as handle:
                    for batch in pq.ParquetFile(handle).iter_batches(batch_size=self.options.batch_rows):
                        writer.write_batch(conform(_by_name(batch, info.schema, entry.name), info.schema,
                                                   table=entry.name))
                        rows += batch.num_rows
                        if progress:
                            progress(rows)
            staged = writer.close()
        return staged, rows


def _by_name(batch: pa.RecordBatch, schema: pa.Schema, table: str) -> pa.RecordBatch:
    """Catalog order by name; DMS may change case (Oracle) and `conform` matches by position."""
    names = {n: i for i, n in enumerate(batch.schema.names)}
    folded = {n.lower(): i for i, n in enumerate(batch.schema.names)}
    arrays = []
    for f in schema:
        i = names.get(f.name, folded.get(f.name.lower()))
        if i is None:
            raise EngineError(f"DMS output lacks column {f.name!r} (has {batch.schema.names})",
                              table=table, attribute=f.name)
        arrays.append(batch.column(i))
    return pa.RecordBatch.from_arrays(arrays, names=schema.names)


@contextmanager
def quiet_wire_logs() -> Iterator[None]:
    """botocore logs request and response bodies at DEBUG; keep secrets out of those logs."""
    logger = logging.getLogger("botocore")
    before = logger.level
    if logger.getEffectiveLevel() < logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(before)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "?")
        return f"DMS/AWS {op} failed: {err.get('Code', '?')}: {err.get('Message', '')}"
    if isinstance(exc, BotoCoreError):
        return f"AWS call failed: {type(exc).__name__}"
    return f"DMS run failed: {type(exc).__name__}: {exc}"


class _TaskRun:
    """The AWS resources of one attempt, created in order and removed in reverse."""

    def __init__(self, engine: DmsEngine, entry: ControlEntry, attempt_id: str):
        self.e, self.entry, self.attempt = engine, entry, attempt_id
        opts = engine.options
        self.folder = f"{opts.output_prefix.strip('/')}/{entry.name}/{attempt_id}".lstrip("/")
        self.source_arn: str | None = None
        self.target_arn: str | None = None
        self.instance_arn: str | None = None
        self.ephemeral = False
        self.task_arn: str | None = None
        self.wrote_output = False
        self._secrets: list[str] = []
        self.cleanup_errors: list[str] = []

    # -- helpers -----------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _tags(self) -> list[dict[str, str]]:
        return [{"Key": "delta-platform:table", "Value": self.entry.name},
                {"Key": "delta-platform:attempt", "Value": self.attempt}]

    def _wait(self, what: str, check: Callable[[], Any], deadline: float) -> Any:
        while True:
            result = check()
            if result is not None:
                return result
            if self.e.clock() >= deadline:
                raise EngineError(f"DMS {what} did not happen within {self.e.options.max_wait:.0f}s; "
                                  "task stopped and removed, watermark unchanged", table=self.entry.name)
            self.e.sleep(self.e.options.poll_interval)

    def _describe_task(self) -> dict[str, Any] | None:
        try:
            resp = self.e.dms.describe_replication_tasks(
                Filters=[{"Name": "replication-task-arn", "Values": [self.task_arn]}])
        except ClientError as exc:  # real DMS answers "no match" with ResourceNotFoundFault
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundFault":
                return None
            raise
        tasks = resp.get("ReplicationTasks", [])
        return tasks[0] if tasks else None

    # -- creation ----------------------------------------------------------------------------
    def start(self, source: Source, mapping: dict[str, Any]) -> None:
        self.deadline = self.e.clock() + self.e.options.max_wait
        self.source_arn = self._source_endpoint(source)
        self.target_arn = self._target_endpoint()
        self.instance_arn = self._instance()
        settings = merge_settings(DEFAULT_TASK_SETTINGS, self.entry.replication_task_settings)
        resp = self.e.dms.create_replication_task(
            ReplicationTaskIdentifier=identifier("dp", self.entry.name, self.attempt),
            SourceEndpointArn=self.source_arn, TargetEndpointArn=self.target_arn,
            ReplicationInstanceArn=self.instance_arn, MigrationType="full-load",
            TableMappings=json.dumps(mapping), ReplicationTaskSettings=json.dumps(settings),
            Tags=self._tags())
        self.task_arn = resp["ReplicationTask"]["ReplicationTaskArn"]
        self._wait("task creation", self._ready, self.deadline)
        self.wrote_output = True  # from here on DMS may write into the attempt's folder
        self.e.dms.start_replication_task(ReplicationTaskArn=self.task_arn,
                                          StartReplicationTaskType="start-replication")
        self.e.say(f"{self.entry.name}: DMS task {self.task_arn} started on {self.instance_arn}, "
                   f"output s3://{self.e.options.output_bucket}/{self.folder}/")

    def _ready(self) -> bool | None:
        task = self._describe_task()
        status = (task or {}).get("Status")
        if status == "failed":
            raise EngineError(f"DMS task creation failed: {(task or {}).get('LastFailureMessage', '')}",
                              table=self.entry.name)
        return True if status == "ready" else None

    def _source_endpoint(self, source: Source) -> str:
        conn = self.e.options.connections.get(self.entry.source)
        if conn is None:
            raise EngineError(f"no DMS connection configured for source {self.entry.source!r}",
                              table=self.entry.name, attribute="source")
        engine_name = conn.engine_name or DIALECT_ENGINE.get(source.dialect_name)
        if engine_name not in SETTINGS_PARAM:
            raise EngineError(f"DMS cannot read a {source.dialect_name} source here",
                              table=self.entry.name, attribute="source")
        database = conn.database_name or source.engine.url.database
        settings = source_engine_settings(engine_name, database)
        kwargs: dict[str, Any] = {}
        if conn.access_role_arn:  # DMS reads the secret itself; nothing secret passes through here
            settings.update(SecretsManagerSecretId=conn.secret_arn,
                            SecretsManagerAccessRoleArn=conn.access_role_arn)
        else:
            secret = self._read_secret(conn.secret_arn)
            kwargs = {"Username": secret["username"], "Password": secret["password"],
                      "ServerName": secret["host"], "Port": int(secret["port"])}
        with quiet_wire_logs():
            resp = self.e.dms.create_endpoint(
                EndpointIdentifier=identifier("dp", self.entry.name, self.attempt, "src"),
                EndpointType="source", EngineName=engine_name, SslMode=conn.ssl_mode,
                Tags=self._tags(), **{SETTINGS_PARAM[engine_name]: settings}, **kwargs)
        return resp["Endpoint"]["EndpointArn"]

    def _read_secret(self, arn: str) -> dict[str, Any]:
        if self.e.secrets is None:
            raise EngineError("a connection without access_role_arn needs a Secrets Manager client",
                              table=self.entry.name, attribute="source")
        with quiet_wire_logs():
            value = json.loads(self.e.secrets.get_secret_value(SecretId=arn)["SecretString"])
        self._secrets = [str(value[k]) for k in ("password", "username") if value.get(k)]
        missing = [k for k in ("username", "password", "host", "port") if not value.get(k)]
        if missing:
            raise EngineError(f"secret {arn} lacks {', '.join(missing)}", table=self.entry.name,
                              attribute="source")
        return value

    def _target_endpoint(self) -> str:
        opts = self.e.options
        resp = self.e.dms.create_endpoint(
            EndpointIdentifier=identifier("dp", self.entry.name, self.attempt, "s3"),
            EndpointType="target", EngineName="s3", Tags=self._tags(),
            S3Settings=s3_target_settings(opts.output_bucket, self.folder, opts.target_role_arn,
                                          kms_key_id=opts.kms_key_id))
        return resp["Endpoint"]["EndpointArn"]

    def _instance(self) -> str:
        arns = list(self.e.options.replication_instance_arns)
        if len(arns) == 1:
            return arns[0]
        if arns:
            return self._least_busy(arns)
        opts = self.e.options
        kwargs: dict[str, Any] = {}
        if opts.subnet_group:
            kwargs["ReplicationSubnetGroupIdentifier"] = opts.subnet_group
        if opts.security_group_ids:
            kwargs["VpcSecurityGroupIds"] = list(opts.security_group_ids)
        if opts.kms_key_id:
            kwargs["KmsKeyId"] = opts.kms_key_id
        resp = self.e.dms.create_replication_instance(
            ReplicationInstanceIdentifier=identifier("dp", self.entry.name, self.attempt, limit=63),
            ReplicationInstanceClass=opts.instance_class, AllocatedStorage=opts.instance_storage_gb,
            PubliclyAccessible=False, MultiAZ=False, Tags=self._tags(), **kwargs)
        arn = resp["ReplicationInstance"]["ReplicationInstanceArn"]
        self.ephemeral = True
        self.e.say(f"{self.entry.name}: created ephemeral DMS instance {arn}")
        self._wait("replication instance start", lambda: self._instance_status(arn) == "available" or None,
                   self.deadline)
        return arn

    def _instance_status(self, arn: str) -> str | None:
        resp = self.e.dms.describe_replication_instances(
            Filters=[{"Name": "replication-instance-arn", "Values": [arn]}])
        found = resp.get("ReplicationInstances", [])
        return found[0].get("ReplicationInstanceStatus") if found else None

    def _least_busy(self, arns: list[str]) -> str:
        """Spread tables: the instance with the fewest active tasks, ties by a stable hash."""
        resp = self.e.dms.describe_replication_tasks(
            Filters=[{"Name": "replication-instance-arn", "Values": arns}])
        busy = dict.fromkeys(arns, 0)
        for t in resp.get("ReplicationTasks", []):
            if t.get("Status") in _ACTIVE and t.get("ReplicationInstanceArn") in busy:
                busy[t["ReplicationInstanceArn"]] += 1
        offset = zlib.crc32(self.entry.name.encode())
        order = {a: (busy[a], (i - offset) % len(arns)) for i, a in enumerate(arns)}
        return min(arns, key=order.__getitem__)

    # -- running -----------------------------------------------------------------------------
    def wait(self, progress: Progress | None) -> dict[str, Any]:
        """Poll until the task stops; progress goes to the run log. Returns the final task."""
        last_rows = -1

        def check() -> dict[str, Any] | None:
            nonlocal last_rows
            task = self._describe_task()
            if task is None:
                raise EngineError("the DMS task disappeared while running", table=self.entry.name)
            status = task.get("Status")
            if status == "failed":
                raise EngineError(f"DMS task failed: {task.get('LastFailureMessage', 'no message')}; "
                                  "watermark unchanged", table=self.entry.name)
            if status == "stopped":
                return task
            rows = self._rows_so_far()
            if rows is not None and rows != last_rows:
                last_rows = rows
                if progress:
                    progress(rows)
            pct = (task.get("ReplicationTaskStats") or {}).get("FullLoadProgressPercent", 0)
            self.e.say(f"{self.entry.name}: DMS {status}, {pct}% , {max(rows or 0, 0):,} rows")
            return None

        return self._wait("full load", check, self.deadline)

    def _rows_so_far(self) -> int | None:
        try:
            stats = self._table_stats()
        except ClientError:
            return None  # progress is informative; the gate asks again and must succeed
        return None if stats is None else int(stats.get("FullLoadRows", 0))

    def _table_stats(self) -> dict[str, Any] | None:
        resp = self.e.dms.describe_table_statistics(ReplicationTaskArn=self.task_arn)
        for s in resp.get("TableStatistics", []):
            if (s.get("SchemaName", "").lower(), s.get("TableName", "").lower()) == (
                    self.entry.source_schema.lower(), self.entry.source_table.lower()):
                return s
        return None

    def gate(self, task: dict[str, Any], source_count: int) -> None:
        """Stopped for the right reason, with exactly the rows the source counted."""
        reason = task.get("StopReason") or ""
        if FINISHED not in reason.upper().replace(" ", "_"):
            raise EngineError(f"DMS task stopped without finishing the full load (StopReason "
                              f"{reason!r}); watermark unchanged", table=self.entry.name)
        stats = self._table_stats()
        if stats is None:
            raise EngineError("DMS reports no statistics for the table; watermark unchanged",
                              table=self.entry.name)
        self.stats = stats
        loaded = int(stats.get("FullLoadRows", -1))
        errors = int(stats.get("FullLoadErrorRows", 0) or 0)
        if loaded != source_count or errors:
            raise EngineError(f"DMS loaded {loaded} rows ({errors} error rows), the source counts "
                              f"{source_count} in the window; watermark unchanged", table=self.entry.name)

    def output_files(self) -> list[str]:
        """Every Parquet object DMS wrote under the attempt's folder, as pyarrow paths."""
        bucket = self.e.options.output_bucket
        paths = []
        for page in self.e.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                          Prefix=self.folder + "/"):
            paths.extend(f"{bucket}/{o['Key']}" for o in page.get("Contents", [])
                         if o["Key"].endswith(".parquet"))
        return sorted(paths)

    def details(self, task: dict[str, Any]) -> dict[str, object]:
        """Run metadata: ARNs and statistics, never credentials."""
        stats = getattr(self, "stats", {})
        return {
            "dmsTaskArn": self.task_arn, "dmsInstanceArn": self.instance_arn,
            "dmsEphemeralInstance": self.ephemeral, "dmsStopReason": task.get("StopReason"),
            "dmsFullLoadRows": int(stats.get("FullLoadRows", 0)),
            "dmsOutput": f"s3://{self.e.options.output_bucket}/{self.folder}/",
        }

    # -- removal -----------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Reverse order, each step independent: one failure never leaves the rest behind."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.task_arn:
            steps.append(("task", self._delete_task))
        for arn in (self.source_arn, self.target_arn):
            if arn:
                steps.append(("endpoint", lambda a=arn: self.e.dms.delete_endpoint(EndpointArn=a)))
        if self.ephemeral and self.instance_arn:
            steps.append(("instance", lambda: self.e.dms.delete_replication_instance(
                ReplicationInstanceArn=self.instance_arn)))
        if self.wrote_output:
            steps.append(("output", self._delete_output))
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported, never masks the run's own error
                msg = self.scrub(f"cleanup of DMS {what} failed: {_describe(exc)}")
                self.cleanup_errors.append(msg)
                log.error("table %s: %s", self.entry.name, msg)
        self.task_arn = self.source_arn = self.target_arn = None
        self.ephemeral = self.wrote_output = False

    def _delete_task(self) -> None:
        deadline = self.e.clock() + self.e.options.cleanup_wait
        task = self._describe_task()
        if task and task.get("Status") in _ACTIVE:
            self.e.dms.stop_replication_task(ReplicationTaskArn=self.task_arn)
            self._wait("task stop", lambda: ((t := self._describe_task()) is None
                                             or t.get("Status") not in _ACTIVE) or None, deadline)
        self.e.dms.delete_replication_task(ReplicationTaskArn=self.task_arn)
        # Endpoints cannot be deleted while a task still references them.
        self._wait("task deletion", lambda: self._describe_task() is None or None, deadline)

    def _delete_output(self) -> None:
        bucket = self.e.options.output_bucket
        pages = self.e.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=self.folder + "/")
        keys = [{"Key": o["Key"]} for page in pages for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            self.e.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})
