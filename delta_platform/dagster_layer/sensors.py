"""Sensors: the control-table sensor (new/changed/deactivated/invalid entries, initial loads,
code-location reload) and the run-failure notifier."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from delta_platform.control_entry import RUNTIME_ATTRIBUTES
from delta_platform.dagster_layer.factory import parse_items
from delta_platform.dagster_layer.notify import LogNotifier, Notifier, SnsNotifier, WebhookNotifier
from delta_platform.dagster_layer.resources import DeltaPlatformResource
from delta_platform.dagster_layer.schedules import TABLE_TAG, Target, last_complete_partition

WEBSERVER_VAR = "DELTA_PLATFORM_WEBSERVER"  # host:port of the webserver to ask for a reload
LOCATION_NAME = "delta_platform"
_VOLATILE = RUNTIME_ATTRIBUTES | {"startvalue"}  # written by every load, not configuration


def fingerprint(item: Mapping[str, Any]) -> str:
    """Digest of an entry's configuration (not the state each load writes back)."""
    config = {k: v for k, v in item.items() if k not in _VOLATILE}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def request_reload(location: str = LOCATION_NAME) -> str:
    """Ask the webserver to reload the code location (best effort); says what happened."""
    address = os.environ.get(WEBSERVER_VAR)
    if not address:
        return f"set {WEBSERVER_VAR}=host:port for automatic reloads, or click 'Reload definitions'"
    host, _, port = address.rpartition(":")
    try:
        from dagster_graphql import DagsterGraphQLClient  # installed with dagster-webserver

        DagsterGraphQLClient(host or address, port_number=int(port) if port else None) \
            .reload_repository_location(location)
    except Exception as exc:  # a failed reload must not fail the sensor tick
        return f"reload request to {address} failed: {type(exc).__name__}"
    return f"reload of {location} requested from {address}"


def control_table_sensor(loaded: Mapping[str, str], targets: Mapping[str, Target],
                         *, interval_seconds: int = 30) -> dg.SensorDefinition:
    """`loaded` is {table: fingerprint} (active and invalid entries) the definitions were built from;
    `targets` the loadable tables. Initial loads run in the implicit asset job, one run per table."""

    @dg.sensor(name="control_table_sensor", asset_selection=dg.AssetSelection.assets(
                   *(t.key for t in targets.values())), minimum_interval_seconds=interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Watches the control table: new, changed, deactivated and invalid entries; "
                           "starts a new table's initial load; reloads the code location.")
    def _sense(context: dg.SensorEvaluationContext, delta: DeltaPlatformResource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        store = delta.store()
        items = list(store.scan_entries())
        parsed = parse_items(items)
        by_name = {str(i.get("targetTableName")): i for i in items}
        now_prints = {e.name: fingerprint(by_name[e.name]) for e in parsed.active}
        now_prints |= {b.name: "invalid:" + fingerprint(by_name.get(b.name, {})) for b in parsed.invalid}
        for bad in parsed.invalid:
            context.log.warning(f"invalid control entry {bad.name}: {bad.message}")
        new = sorted(set(now_prints) - set(loaded))
        gone = sorted(set(loaded) - set(now_prints))
        changed = sorted(n for n in set(now_prints) & set(loaded) if now_prints[n] != loaded[n])
        for label, names in (("new", new), ("deactivated or deleted", gone), ("changed", changed)):
            if names:
                context.log.info(f"{label} control entries: {', '.join(names)}")
        digest = fingerprint(now_prints)
        if (new or gone or changed) and cursor.get("reloaded_for") != digest:
            context.log.info(request_reload())
            cursor["reloaded_for"] = digest
        started = set(cursor.get("started", []))
        requests = []
        for entry in parsed.active:
            target = targets.get(entry.name)  # a table new since the last reload waits for the reload
            if target is None or entry.name in started or store.last_committed(entry.name):
                continue
            key = last_complete_partition(target.partitions_def, datetime.now(UTC))
            if key is None:
                continue
            context.log.info(f"starting the initial load of {entry.name}, partition {key}")
            requests.append(dg.RunRequest(asset_selection=[target.key], partition_key=key,
                                          run_key=f"initial:{entry.name}", tags={TABLE_TAG: entry.name}))
            started.add(entry.name)
        cursor["started"] = sorted(started)
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))

    return _sense


def notifier_for(delta: DeltaPlatformResource) -> Notifier:
    if delta.notify_sns_topic_arn:
        return SnsNotifier(delta.notify_sns_topic_arn, region=delta.s3_region)
    if delta.notify_webhook_url:
        return WebhookNotifier(delta.notify_webhook_url)
    return LogNotifier()


@dg.run_failure_sensor(name="load_failure_notifier", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Notifies when a load run fails: SNS in AWS mode, a webhook or a log "
                                   "line locally.")
def load_failure_notifier(context: dg.RunFailureSensorContext, delta: DeltaPlatformResource) -> None:
    run = context.dagster_run
    selected = sorted(k.path[-1] for k in run.asset_selection or ())  # a run started from the UI
    table = run.tags.get(TABLE_TAG) or ", ".join(selected) or "?"
    message = (f"table {table}, job {run.job_name}, run {run.run_id}, "
               f"partition {run.tags.get('dagster/partition', '-')}: {context.failure_event.message}")
    notifier_for(delta).notify(f"delta_platform load failed: {table}", message)
