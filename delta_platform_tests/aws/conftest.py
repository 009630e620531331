"""AWS-mode fixtures: moto's server, a real PostgreSQL source, the DMS player and an engine."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pyarrow.fs as pafs
import pytest
import sqlalchemy as sa
from botocore.config import Config

from delta_platform.aws.dms import DmsEngine, DmsOptions
from delta_platform.aws.settings import DmsConnection, identifier
from delta_platform_tests.aws.harness import DmsPlayer, Scenario
from delta_platform_tests.conftest import PG_ADMIN_URL

PASSWORD = "pw-Zq81-never-logged"  # what the secret holds; must never surface anywhere


@dataclass
class Aws:
    url: str
    dms: Any
    moto_dms: Any
    s3: Any
    secrets: Any
    bucket: str
    secret_arn: str

    def client(self, name: str) -> Any:
        return boto3.client(name, endpoint_url=self.url, region_name="us-east-1",
                            config=Config(retries={"mode": "standard", "max_attempts": 1}))

    def filesystem(self) -> pafs.FileSystem:
        return pafs.S3FileSystem(endpoint_override=self.url.split("://")[1], scheme="http",
                                 access_key="testing", secret_key="testing", region="us-east-1")

    def leftovers(self, table: str) -> dict[str, list[str]]:
        """DMS resources and output objects this table's runs left behind."""
        slug = identifier("dp", table)
        d = self.moto_dms
        found = {
            "tasks": [t["ReplicationTaskIdentifier"]
                      for t in d.describe_replication_tasks()["ReplicationTasks"]],
            "endpoints": [e["EndpointIdentifier"] for e in d.describe_endpoints()["Endpoints"]],
            "instances": [i["ReplicationInstanceIdentifier"]
                          for i in d.describe_replication_instances()["ReplicationInstances"]],
        }
        out = {k: [n for n in v if n.startswith(slug + "-")] for k, v in found.items()}
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"dms-output/{table}/")
        objects = listed.get("Contents", [])
        out["output"] = [o["Key"] for o in objects]
        return out


@pytest.fixture
def aws(moto_server: str) -> Iterator[Aws]:
    def make(name: str) -> Any:
        return boto3.client(name, endpoint_url=moto_server, region_name="us-east-1",
                            config=Config(retries={"mode": "standard", "max_attempts": 1}))

    bucket = f"dms-{uuid.uuid4().hex[:12]}"
    s3 = make("s3")
    s3.create_bucket(Bucket=bucket)
    secrets = make("secretsmanager")
    url = sa.make_url(PG_ADMIN_URL)
    arn = secrets.create_secret(Name=f"src-{uuid.uuid4().hex[:8]}", SecretString=json.dumps({
        "engine": "postgres", "host": url.host, "port": url.port or 5432, "username": url.username,
        "password": PASSWORD, "dbname": url.database}))["ARN"]
    yield Aws(moto_server, make("dms"), make("dms"), s3, secrets, bucket, arn)


@pytest.fixture
def orders(pg_admin: sa.Engine, pg_schema: str) -> str:
    """20 rows, whole-second UTC timestamps, one NULL cursor value and NULL notes."""
    with pg_admin.begin() as conn:
        conn.execute(sa.text(f'create table "{pg_schema}".orders (id integer primary key, '
                             'amount numeric(12,2) not null, updated_at timestamptz, note text)'))
        conn.execute(sa.text(
            f'insert into "{pg_schema}".orders select i, i * 1.25, '
            "case when i = 20 then null "
            "else timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' end, "
            "case when i % 3 = 0 then null else 'n' || i end from generate_series(1, 20) i"))
    return pg_schema


EngineFactory = Callable[..., tuple[DmsEngine, DmsPlayer]]


@pytest.fixture
def make_engine(aws: Aws, pg_admin: sa.Engine) -> EngineFactory:
    def make(scenario: Scenario | None = None, *, instances: tuple[str, ...] = (), role: str | None = None,
             max_wait: float = 5.0, say: Callable[[str], None] | None = None) -> tuple[DmsEngine, DmsPlayer]:
        player = DmsPlayer(aws.dms, aws.moto_dms, aws.s3, pg_admin, scenario or Scenario())
        options = DmsOptions(
            output_bucket=aws.bucket, target_role_arn="arn:aws:iam::123456789012:role/dms-s3",
            connections={"default": DmsConnection(aws.secret_arn, access_role_arn=role)},
            replication_instance_arns=instances, poll_interval=0.01, max_wait=max_wait, cleanup_wait=5.0)
        engine = DmsEngine(aws.dms, aws.s3, options, secrets=aws.secrets, filesystem=aws.filesystem,
                           say=say)
        return engine, player

    return make
