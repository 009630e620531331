"""Wiring outside Dagster: a store, sources, lakes and engines from plain settings (CLI, tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from delta_platform.control_entry import ControlEntry
from delta_platform.delta_task import DeltaTask
from delta_platform.engine import Engine, builtin_engine_for
from delta_platform.errors import ControlEntryError
from delta_platform.lake import Lake
from delta_platform.source import Source
from delta_platform.store import ControlStore, store_from_uri


def default_home() -> Path:
    return Path(os.environ.get("DELTA_PLATFORM_HOME", ".delta_platform")).resolve()


def default_store_uri() -> str:
    return os.environ.get("DELTA_PLATFORM_STORE") or str(default_home() / "control.db")


def sources_from_env() -> dict[str, str]:
    """`DELTA_PLATFORM_SOURCE_<NAME>=<SQLAlchemy URL>`; `DELTA_PLATFORM_SOURCE_URL` is `default`."""
    out = {}
    for key, value in os.environ.items():
        if key == "DELTA_PLATFORM_SOURCE_URL":
            out["default"] = value
        elif key.startswith("DELTA_PLATFORM_SOURCE_"):
            out[key.removeprefix("DELTA_PLATFORM_SOURCE_").lower()] = value
    return out


@dataclass
class Runtime:
    """Caches one Source per connection name and one Lake per prefix for a process."""

    store: ControlStore
    source_urls: dict[str, str]
    sqlite_attach: dict[str, str] = field(default_factory=dict)
    s3_endpoint_url: str | None = None
    engine: Engine | None = None  # None: the built-in engine each entry asks for
    _sources: dict[str, Source] = field(default_factory=dict, repr=False)
    _lakes: dict[str, Lake] = field(default_factory=dict, repr=False)

    def source_for(self, entry: ControlEntry) -> Source:
        if entry.source not in self.source_urls:
            raise ControlEntryError(
                f"no connection named {entry.source!r} is configured "
                f"(known: {', '.join(sorted(self.source_urls)) or 'none'})",
                table=entry.name,
                attribute="source",
            )
        if entry.source not in self._sources:
            self._sources[entry.source] = Source(self.source_urls[entry.source], attach=self.sqlite_attach)
        return self._sources[entry.source]

    def lake_for(self, entry: ControlEntry) -> Lake:
        if entry.output_prefix not in self._lakes:
            self._lakes[entry.output_prefix] = Lake(entry.output_prefix, s3_endpoint_url=self.s3_endpoint_url)
        return self._lakes[entry.output_prefix]

    def engine_for(self, entry: ControlEntry) -> Engine:
        return self.engine or builtin_engine_for(entry)

    def task(self) -> DeltaTask:
        return DeltaTask(self.store, self.source_for, self.lake_for, self.engine_for)


def runtime_from_env(store_uri: str | None = None, sources: dict[str, str] | None = None) -> Runtime:
    attach = {}
    for key, value in os.environ.items():
        if key.startswith("DELTA_PLATFORM_SQLITE_ATTACH_"):
            attach[key.removeprefix("DELTA_PLATFORM_SQLITE_ATTACH_").lower()] = value
    urls = {**sources_from_env(), **(sources or {})}
    return Runtime(
        store_from_uri(store_uri or default_store_uri()),
        urls,
        sqlite_attach=attach,
        s3_endpoint_url=os.environ.get("DELTA_PLATFORM_S3_ENDPOINT"),
    )
