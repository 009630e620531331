"""The Dagster shell around the core: control-table entries become partitioned assets."""

from delta_platform.dagster_layer.factory import build_defs
from delta_platform.dagster_layer.resources import DeltaPlatformResource, resources_for_env
from delta_platform.dagster_layer.translator import DeltaTranslator

__all__ = ["DeltaPlatformResource", "DeltaTranslator", "build_defs", "resources_for_env"]
