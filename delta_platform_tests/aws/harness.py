"""Plays the part of DMS that moto cannot: moving data and finishing the task.

moto's DMS accepts every call but leaves a created task in `creating`, a started one in
`running` forever, has no `StopReason` and no `DescribeTableStatistics`, and moves no data.
This harness hooks the engine's boto3 client (botocore events, nothing in-process is mocked;
every other call reaches moto's server) to:
- record each DMS operation and its parameters (the exact call sequence);
- report a created task as `ready` (moto lacks the asynchronous transition);
- on `StartReplicationTask`, write the Parquet files DMS would write for the task's table
  mapping, by translating the mapping's filters to SQL and running it on the real source;
- report the task `stopped`/`failed`/still running per scenario, and answer
  `DescribeTableStatistics` (moto has no implementation) with the rows it wrote.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from botocore.awsrequest import AWSResponse

SID = "database-migration-service"
FINISHED = "Stop Reason FULL_LOAD_ONLY_FINISHED"


@dataclass
class Scenario:
    """How the played task ends: finish | fail | wrong_reason | never; `missing` rows short."""

    ending: str = "finish"
    missing: int = 0
    files: int = 2


@dataclass
class _Task:
    rows: int = 0
    started: bool = False


@dataclass
class DmsPlayer:
    dms: Any  # the engine's client: hooked
    moto_dms: Any  # an unhooked client to read moto's state
    s3: Any
    source: sa.Engine | None
    scenario: Scenario = field(default_factory=Scenario)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list, repr=False)  # holds the password
    tasks: dict[str, _Task] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ev = self.dms.meta.events
        ev.register(f"before-parameter-build.{SID}", self._record)
        ev.register(f"before-call.{SID}.StartReplicationTask", self._on_start)
        ev.register(f"after-call.{SID}.DescribeReplicationTasks", self._patch_tasks)
        ev.register(f"before-call.{SID}.DescribeTableStatistics", self._table_stats)

    @property
    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]

    def params(self, op: str) -> list[dict[str, Any]]:
        return [p for o, p in self.calls if o == op]

    # -- hooks ---------------------------------------------------------------------------------
    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, json.loads(json.dumps(params, default=str))))

    def _on_start(self, params: dict[str, Any], **_: Any) -> None:
        arn = json.loads(params["body"])["ReplicationTaskArn"]
        task = self.moto_dms.describe_replication_tasks(
            Filters=[{"Name": "replication-task-arn", "Values": [arn]}])["ReplicationTasks"][0]
        target = self.moto_dms.describe_endpoints(
            Filters=[{"Name": "endpoint-arn", "Values": [task["TargetEndpointArn"]]}])["Endpoints"][0]
        state = self.tasks.setdefault(arn, _Task())
        state.started = True
        if self.source is not None:
            state.rows = self._write_output(json.loads(task["TableMappings"]), target["S3Settings"])
        return None  # the real StartReplicationTask still goes to moto

    def _patch_tasks(self, parsed: dict[str, Any], **_: Any) -> None:
        for task in parsed.get("ReplicationTasks", []):
            state = self.tasks.get(task["ReplicationTaskArn"])
            if task["Status"] == "creating":
                task["Status"] = "ready"
            elif task["Status"] == "running" and state and state.started:
                ending = self.scenario.ending
                if ending == "finish":
                    task.update(Status="stopped", StopReason=FINISHED)
                elif ending == "wrong_reason":
                    task.update(Status="stopped", StopReason="Stop Reason NORMAL")
                elif ending == "fail":
                    task.update(Status="failed", LastFailureMessage="Last Error Table error. Task error")
                stats = task.setdefault("ReplicationTaskStats", {})
                stats["FullLoadProgressPercent"] = 100 if ending != "never" else 40

    def _table_stats(self, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        arn = json.loads(params["body"])["ReplicationTaskArn"]
        task = self.moto_dms.describe_replication_tasks(
            Filters=[{"Name": "replication-task-arn", "Values": [arn]}])["ReplicationTasks"][0]
        rule = json.loads(task["TableMappings"])["rules"][0]["object-locator"]
        state = self.tasks.get(arn, _Task())
        stats = {"SchemaName": rule["schema-name"], "TableName": rule["table-name"],
                 "FullLoadRows": state.rows, "FullLoadErrorRows": 0,
                 "TableState": "Table completed" if self.scenario.ending == "finish" else "Table loading"}
        return AWSResponse("http://moto", 200, {}, None), {"TableStatistics": [stats],
                                                            "ReplicationTaskArn": arn}

    # -- what DMS would write ------------------------------------------------------------------
    def _write_output(self, mapping: dict[str, Any], s3_settings: dict[str, Any]) -> int:
        rule = mapping["rules"][0]
        schema, table = rule["object-locator"]["schema-name"], rule["object-locator"]["table-name"]
        assert self.source is not None
        with self.source.connect() as conn:
            conn.exec_driver_sql("SET TIME ZONE 'UTC'")  # as the endpoint's AfterConnectScript does
            where, binds = filters_to_sql(conn, schema, table, rule["filters"])
            result = conn.execute(sa.text(f'select * from "{schema}"."{table}" where {where}'), binds)
            rows = [dict(r._mapping) for r in result]
        rows = rows[: max(len(rows) - self.scenario.missing, 0)]
        # DMS writes timestamps without a zone (UTC values): strip it so `conform` does the work.
        for r in rows:
            for k, v in r.items():
                if hasattr(v, "tzinfo") and getattr(v, "tzinfo", None) is not None:
                    r[k] = v.replace(tzinfo=None)
        folder = f"{s3_settings['BucketFolder']}/{schema}/{table}"
        n_files = max(1, min(self.scenario.files, len(rows)))
        size = -(-len(rows) // n_files) if rows else 0
        for i in range(n_files):
            part = rows[i * size:(i + 1) * size] if rows else []
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(part), buf)
            self.s3.put_object(Bucket=s3_settings["BucketName"], Key=f"{folder}/LOAD{i + 1:08d}.parquet",
                               Body=buf.getvalue())
        return len(rows)


_SQL_OPS = {"eq": "=", "noteq": "<>", "gte": ">=", "ste": "<="}


def filters_to_sql(conn: sa.Connection, schema: str, table: str,
                   filters: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """DMS semantics, independently of the core: filters AND, conditions inside one filter OR."""
    binds: dict[str, Any] = {}
    ands = []
    for f in filters:
        col = f["column-name"]
        typ = conn.execute(sa.text(
            "select format_type(atttypid, atttypmod) from pg_attribute "
            "where attrelid = cast(:rel as regclass) and attname = :col"),
            {"rel": f'"{schema}"."{table}"', "col": col}).scalar_one()
        ors = []
        for c in f["filter-conditions"]:
            op = c["filter-operator"]

            def bind(value: str) -> str:
                key = f"v{len(binds)}"
                binds[key] = value
                return f"cast(:{key} as {typ})"  # noqa: B023 - used immediately

            if op in _SQL_OPS:
                ors.append(f'"{col}" {_SQL_OPS[op]} {bind(c["value"])}')
            elif op == "between":
                ors.append(f'"{col}" between {bind(c["start-value"])} and {bind(c["end-value"])}')
            elif op == "notbetween":
                ors.append(f'"{col}" not between {bind(c["start-value"])} and {bind(c["end-value"])}')
            elif op == "null":
                ors.append(f'"{col}" is null')
            elif op == "notnull":
                ors.append(f'"{col}" is not null')
            else:
                raise AssertionError(f"unknown DMS filter operator {op}")
        ands.append("(" + " or ".join(ors) + ")")
    return " and ".join(ands) or "true", binds
