"""The code location: `DELTA_PLATFORM_ENV` picks the resources, the control table picks the assets."""

from __future__ import annotations

import dagster as dg

from delta_platform.dagster_layer import state
from delta_platform.dagster_layer.factory import build_defs
from delta_platform.dagster_layer.resources import DeltaPlatformResource, dialect_of, resources_for_env
from delta_platform.dagster_layer.translator import DeltaTranslator


def make_defs(translator: DeltaTranslator | None = None) -> dg.Definitions:
    home = state.home()
    resources = resources_for_env(str(home))
    delta: DeltaPlatformResource = resources["delta"]
    items = state.load_items(delta.control_store, home / state.SNAPSHOT_NAME)
    translator = translator or DeltaTranslator(
        {name: dialect_of(url) for name, url in delta.source_urls().items()})
    return build_defs(items, translator, resources=resources)


defs = make_defs()
