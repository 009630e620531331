"""The code location: `DELTA_PLATFORM_ENV` picks the resources, the control table picks the assets."""

from __future__ import annotations

import gc

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


def load_code_location() -> dg.Definitions:
    """`make_defs` without the cyclic garbage collector, whose full passes re-scanned every object of
    Dagster and of the definitions being built (~0.3 s of a 1,000-table load).

    Building allocates ~200,000 objects that live as long as the code server and almost no cyclic
    garbage (<100 objects), so the collector is paused while building and everything alive then is
    frozen (`gc.freeze`): later passes (the snapshot, ticks) skip it. The repository (its jobs,
    schedules and sensors), which every process that imports this module resolves next anyway, is
    resolved inside the pause too."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        defs = make_defs()
        defs.get_repository_def().load_all_definitions()
        return defs
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


defs = load_code_location()
