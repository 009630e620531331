"""The one resource the assets, checks and sensors use, and the local/aws environment switch."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from delta_platform.control_entry import ControlEntry

if TYPE_CHECKING:  # imported where used: loading definitions must not import engines and drivers
    from delta_platform.delta_task import DeltaTask
    from delta_platform.engine import Engine
    from delta_platform.lake import Lake
    from delta_platform.source import Source
    from delta_platform.store import ControlStore

ENV_VAR = "DELTA_PLATFORM_ENV"
ENV_PREFIX = "env:"


def _resolve(value: str) -> str:
    """`env:NAME` reads the variable at run time, so named-source secrets never sit in config."""
    if value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX):]
        if name not in os.environ:
            raise dg.DagsterInvalidConfigError(f"environment variable {name} is not set", [], None)
        return os.environ[name]
    return value


class DeltaPlatformResource(dg.ConfigurableResource):
    """Control store, sources, lake settings and engine choice; builds the core's `DeltaTask`."""

    control_store: str = Field(description="sqlite:///path.db (local) or dynamodb://table?ledger=...")
    source_url: str = Field(description="SQLAlchemy URL of the 'default' source; pass dg.EnvVar for secrets")
    sources: dict[str, str] = Field(default_factory=dict,
                                    description="other sources: name -> URL or env:VAR holding the URL")
    sqlite_attach: dict[str, str] = Field(default_factory=dict,
                                          description="SQLite only: schema alias -> database file")
    engine: str = Field(default="streaming", description="default engine: streaming or dms")
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    lease_ttl_seconds: int = 3600
    notify_webhook_url: str | None = None
    notify_sns_topic_arn: str | None = None
    dms: dg.ConfigurableResource | None = None  # AWS mode: delta_platform.aws.resource.DmsResource

    def store(self) -> ControlStore:
        from delta_platform.store import store_from_uri

        return store_from_uri(self.control_store)

    def source_urls(self) -> dict[str, str]:
        """Unresolved URLs by source name; `env:` references stay unresolved (safe to show)."""
        return {"default": self.source_url, **self.sources}

    def source(self, name: str) -> Source:
        urls = self.source_urls()
        if name not in urls:
            raise dg.DagsterInvariantViolationError(
                f"control entry names source {name!r}; configured sources: {sorted(urls)}")
        from delta_platform.source import Source

        return Source(_resolve(urls[name]), attach=self.sqlite_attach or None)

    def lake(self, prefix: str) -> Lake:
        from delta_platform.lake import Lake

        return Lake(prefix, s3_endpoint_url=self.s3_endpoint_url, s3_region=self.s3_region)

    def engine_for(self, entry: ControlEntry) -> Engine:
        from delta_platform.engine import builtin_engine_for

        choice = entry.engine or self.engine
        if choice == "dms":
            if self.dms is None:
                raise dg.DagsterInvariantViolationError(
                    f"table {entry.name} wants the dms engine but no DMS resource is configured "
                    f"(set {ENV_VAR}=aws)")
            return self.dms.engine()
        return builtin_engine_for(entry)

    def delta_task(self) -> DeltaTask:
        """One task per run; sources are cached per name so a run reflects each table once."""
        from delta_platform.delta_task import DeltaTask

        cache: dict[str, Source] = {}

        def source_for(entry: ControlEntry) -> Source:
            if entry.source not in cache:
                cache[entry.source] = self.source(entry.source)
            return cache[entry.source]

        return DeltaTask(self.store(), source_for, lambda e: self.lake(e.output_prefix), self.engine_for,
                         lease_ttl=timedelta(seconds=self.lease_ttl_seconds))


def dialect_of(url: str) -> str:
    """Dialect name from a URL without connecting (for asset kinds); `env:` URLs are unknown."""
    if isinstance(url, dg.EnvVar) or "://" not in url and ":///" not in url:
        return "database"
    return url.split(":", 1)[0].split("+", 1)[0] or "database"


def local_resources(home: str) -> dict[str, Any]:
    """Local default: embedded store, local lake, streaming engine, the demo SQLite source."""
    return {"delta": DeltaPlatformResource(
        control_store=f"sqlite:///{home}/control.db",
        source_url=os.environ.get("DELTA_PLATFORM_SOURCE_URL", f"sqlite:///{home}/main.db"),
        sqlite_attach={"dwh": f"{home}/dwh.db"},
        notify_webhook_url=os.environ.get("DELTA_PLATFORM_WEBHOOK_URL") or None,
    )}


def aws_resources() -> dict[str, Any]:
    """AWS: DynamoDB store, S3 lake, DMS engine, credentials from the environment at launch."""
    from delta_platform.aws.resource import DmsResource  # lazy: only AWS mode needs it

    return {"delta": DeltaPlatformResource(
        control_store=os.environ.get("DELTA_PLATFORM_CONTROL_STORE", "dynamodb://etlConfiguration"),
        source_url=dg.EnvVar("DELTA_PLATFORM_SOURCE_URL"),
        engine=os.environ.get("DELTA_PLATFORM_ENGINE", "dms"),
        s3_region=os.environ.get("AWS_REGION") or None,
        notify_sns_topic_arn=os.environ.get("DELTA_PLATFORM_SNS_TOPIC_ARN") or None,
        dms=DmsResource(),
    )}


RESOURCE_SETS: dict[str, Callable[..., dict[str, Any]]] = {"local": local_resources, "aws": aws_resources}


def resources_for_env(home: str, env: str | None = None) -> dict[str, Any]:
    """The resource dict of `DELTA_PLATFORM_ENV` (default local)."""
    env = env or os.environ.get(ENV_VAR, "local")
    if env not in RESOURCE_SETS:
        raise ValueError(f"{ENV_VAR}={env!r}; expected one of {sorted(RESOURCE_SETS)}")
    return local_resources(home) if env == "local" else aws_resources()
