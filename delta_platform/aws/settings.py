"""DMS endpoint and task settings: explicit where AWS defaults lose data (reference limitation 4)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

# DMS engine name -> the CreateEndpoint settings parameter for that engine.
SETTINGS_PARAM = {
    "postgres": "PostgreSQLSettings",
    "aurora-postgresql": "PostgreSQLSettings",
    "mysql": "MySQLSettings",
    "mariadb": "MySQLSettings",
    "aurora": "MySQLSettings",
    "oracle": "OracleSettings",
    "sqlserver": "MicrosoftSQLServerSettings",
}
# SQLAlchemy dialect -> DMS engine name, when the connection does not say.
DIALECT_ENGINE = {"postgresql": "postgres", "mysql": "mysql", "oracle": "oracle", "mssql": "sqlserver"}

# Unconstrained NUMBER lands as decimal(38, 10) in the catalog (source.catalog); DMS must agree.
ORACLE_NUMBER_SCALE = 10


@dataclass(frozen=True)
class DmsConnection:
    """How DMS reaches one source. Credentials live only in the Secrets Manager secret.

    With `access_role_arn` DMS reads the secret itself and the credentials never pass through
    this process; without it the secret is read here and handed to CreateEndpoint (never logged).
    """

    secret_arn: str
    engine_name: str | None = None
    access_role_arn: str | None = None
    database_name: str | None = None
    ssl_mode: str = "require"


def source_engine_settings(engine_name: str, database: str | None) -> dict[str, Any]:
    """Per-engine source settings: UTC sessions, exact Oracle numbers, loud LOB truncation."""
    if engine_name in ("postgres", "aurora-postgresql"):
        out: dict[str, Any] = {"AfterConnectScript": "SET TIME ZONE 'UTC'",
                               "FailTasksOnLobTruncation": True, "MapBooleanAsBoolean": True}
    elif engine_name in ("mysql", "mariadb", "aurora"):
        out = {"AfterConnectScript": "SET time_zone = '+00:00'", "ServerTimezone": "UTC"}
    elif engine_name == "oracle":
        out = {"NumberDatatypeScale": ORACLE_NUMBER_SCALE, "ConvertTimestampWithZoneToUTC": True}
    else:
        out = {}
    if database:
        out["DatabaseName"] = database
    return out


def s3_target_settings(bucket: str, folder: str, role_arn: str | None, *,
                       kms_key_id: str | None = None, expected_owner: str | None = None) -> dict[str, Any]:
    """Parquet with microsecond timestamps, no extra columns, no date folders: one plain table."""
    out: dict[str, Any] = {
        "BucketName": bucket,
        "BucketFolder": folder,
        "DataFormat": "parquet",
        "ParquetVersion": "parquet-2-0",
        "ParquetTimestampInMillisecond": False,
        "EnableStatistics": True,
        "IncludeOpForFullLoad": False,
        "TimestampColumnName": "",  # blank: DMS adds no timestamp column
        "DatePartitionEnabled": False,
        "CdcInsertsOnly": False,
        "MaxFileSize": 262144,  # KB: bounded files keep the copy into the lake streaming-sized
        "EncryptionMode": "sse-kms" if kms_key_id else "sse-s3",
    }
    if role_arn:
        out["ServiceAccessRoleArn"] = role_arn
    if kms_key_id:
        out["ServerSideEncryptionKmsKeyId"] = kms_key_id
    if expected_owner:
        out["ExpectedBucketOwner"] = expected_owner
    return out


DEFAULT_TASK_SETTINGS: dict[str, Any] = {
    "TargetMetadata": {"SupportLobs": True, "FullLobMode": False, "LimitedSizeLobMode": True,
                       "LobMaxSize": 64},
    "FullLoadSettings": {"TargetTablePrepMode": "DO_NOTHING", "MaxFullLoadSubTasks": 8,
                         "CommitRate": 10000},
    # LOG_ERROR (the AWS default) skips bad rows silently; stop instead, the gate reports it.
    "ErrorBehavior": {"DataErrorPolicy": "STOP_TASK", "DataTruncationErrorPolicy": "STOP_TASK",
                      "TableErrorPolicy": "STOP_TASK", "FailOnNoTablesCaptured": True},
    "Logging": {"EnableLogging": True},
    "ValidationSettings": {"EnableValidation": False},
}


def merge_settings(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: the entry's `replication_task_settings` win key by key, sections stay whole."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def identifier(*parts: str, limit: int = 255) -> str:
    """A DMS identifier: starts with a letter, letters/digits/single hyphens, no trailing hyphen."""
    text = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower())
    text = re.sub(r"-{2,}", "-", text).strip("-")
    if not text or not text[0].isalpha():
        text = f"dp-{text}"
    return text[:limit].rstrip("-")
