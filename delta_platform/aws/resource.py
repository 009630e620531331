"""One Dagster resource for AWS mode: DMS engine, DynamoDB store, S3, SNS and Secrets Manager."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

import boto3
import dagster as dg
import pyarrow.fs as pafs
import sqlalchemy as sa
from botocore.config import Config
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field

from delta_platform.aws.dms import DmsEngine, DmsOptions, quiet_wire_logs
from delta_platform.aws.settings import DmsConnection
from delta_platform.store import DynamoStore

# Secrets Manager `engine` (RDS secret format) -> SQLAlchemy driver for counting the window.
_DRIVERS = {"postgres": "postgresql+psycopg", "aurora-postgresql": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql", "aurora": "mysql+pymysql",
            "oracle": "oracle+oracledb"}


class DmsConnectionConfig(dg.Config):
    """A source DMS reads: credentials only in the secret (RDS format: engine/host/port/...)."""

    secret_arn: str
    engine_name: str | None = None
    access_role_arn: str | None = Field(default=None, description="Role DMS assumes to read the "
                                        "secret itself, so credentials never pass through Dagster")
    database_name: str | None = None
    ssl_mode: str = "require"


class DmsResource(ResourceWithBoto3Configuration):
    """AWS clients from one boto3 configuration (region, endpoint URL, profile, credentials)."""

    control_table: str = "etlConfiguration"
    ledger_table: str = "etlLedger"
    output_bucket: str = Field(description="Bucket DMS writes its Parquet into (one folder per attempt)")
    output_prefix: str = "dms-output"
    target_role_arn: str | None = Field(default=None, description="Role DMS assumes to write S3")
    connections: dict[str, DmsConnectionConfig] = Field(default_factory=dict)
    replication_instance_arns: list[str] = Field(default_factory=list, description="Existing instances; "
                                                 "empty creates an ephemeral one per run")
    instance_class: str = "dms.t3.medium"
    instance_storage_gb: int = 50
    subnet_group: str | None = None
    security_group_ids: list[str] = Field(default_factory=list)
    kms_key_id: str | None = None
    topic_arn: str | None = None
    poll_interval_seconds: float = 30.0
    max_wait_seconds: float = 6 * 3600.0

    def session(self) -> boto3.session.Session:
        return boto3.session.Session(
            profile_name=self.profile_name, region_name=self.region_name,
            aws_access_key_id=self.aws_access_key_id, aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token)

    def client(self, service: str) -> Any:
        return self.session().client(
            service, endpoint_url=self.endpoint_url, use_ssl=self.use_ssl, verify=self.verify,
            config=Config(retries={"mode": "standard", "max_attempts": self.max_attempts}))

    def filesystem(self) -> pafs.FileSystem:
        """pyarrow S3 with the same credentials (profile and role chains resolved by boto3)."""
        session = self.session()
        creds = session.get_credentials()
        kwargs: dict[str, Any] = {"region": session.region_name or "us-east-1"}
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key,
                          session_token=frozen.token)
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
        return pafs.S3FileSystem(**kwargs)

    def options(self) -> DmsOptions:
        return DmsOptions(
            output_bucket=self.output_bucket, output_prefix=self.output_prefix,
            target_role_arn=self.target_role_arn,
            connections={k: DmsConnection(**v.model_dump()) for k, v in self.connections.items()},
            replication_instance_arns=tuple(self.replication_instance_arns),
            instance_class=self.instance_class, instance_storage_gb=self.instance_storage_gb,
            subnet_group=self.subnet_group, security_group_ids=tuple(self.security_group_ids),
            kms_key_id=self.kms_key_id, poll_interval=self.poll_interval_seconds,
            max_wait=self.max_wait_seconds)

    def engine(self, say: Any = None) -> DmsEngine:
        """`say` is where progress goes, e.g. `context.log.info` for the run log."""
        return DmsEngine(self.client("dms"), self.client("s3"), self.options(),
                         secrets=self.client("secretsmanager"), filesystem=self.filesystem, say=say)

    def store(self) -> DynamoStore:
        return DynamoStore(self.control_table, self.ledger_table, client=self.client("dynamodb"))

    def notifier(self) -> SnsNotifier:
        return SnsNotifier(self.client("sns"), self.topic_arn)

    def source_url(self, connection: str = "default") -> sa.URL:
        """A SQLAlchemy URL from the connection's secret, for counting windows; repr hides the password."""
        conf = self.connections[connection]
        with quiet_wire_logs():
            secret = json.loads(self.client("secretsmanager").get_secret_value(
                SecretId=conf.secret_arn)["SecretString"])
        engine = conf.engine_name or secret.get("engine", "postgres")
        return sa.URL.create(_DRIVERS[engine], username=secret["username"], password=secret["password"],
                             host=secret["host"], port=int(secret["port"]),
                             database=conf.database_name or secret.get("dbname"))


class SnsNotifier:
    """The reference's status email: one SNS message per event; a missing topic sends nothing."""

    def __init__(self, sns: Any, topic_arn: str | None):
        self.sns, self.topic_arn = sns, topic_arn

    def notify(self, subject: str, message: str) -> str | None:
        if not self.topic_arn:
            return None
        return self.sns.publish(TopicArn=self.topic_arn, Subject=subject[:100], Message=message)["MessageId"]
