"""The control-table sensor and the failure notifier."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from delta_platform.dagster_layer.notify import LogNotifier, SnsNotifier, WebhookNotifier
from delta_platform.dagster_layer.sensors import notifier_for
from delta_platform_tests.dagster_layer.conftest import Platform


def _tick(platform: Platform, defs: dg.Definitions, cursor: str | None = None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("control_table_sensor")
    with (dg.DagsterInstance.ephemeral() as instance,
          dg.build_sensor_context(instance=instance, cursor=cursor, resources=platform.resources) as ctx):
        return sensor(ctx)


def test_sensor_starts_initial_load_once_and_sees_changes(platform: Platform, monkeypatch) -> None:
    monkeypatch.delenv("DELTA_PLATFORM_WEBSERVER", raising=False)
    platform.add(platform.entry("orders_s3", "row_id", "0"))
    defs = platform.defs()
    first = _tick(platform, defs)
    assert [(r.asset_selection, r.run_key, r.tags) for r in first.run_requests] == [
        ([dg.AssetKey(["raw", "dwh", "orders_s3"])], "initial:orders_s3",
         {"delta_platform/table": "orders_s3"})]
    assert first.run_requests[0].partition_key
    again = _tick(platform, defs, first.cursor)
    assert again.run_requests == []
    # a new entry, an invalid one and a changed one: reported, reload asked once, no run for tables
    # the definitions do not have yet
    platform.add(platform.entry("orders_new", "row_id", "0"),
                 {**platform.entry("broken", "row_id", "0"), "filteroperator": "nope"})
    platform.store.update_entry("orders_s3", {"partitionCadence": "daily"})
    changed = _tick(platform, defs, again.cursor)
    assert changed.run_requests == []
    assert "reloaded_for" in json.loads(changed.cursor)
    # the platform's own write-back (startvalue, statistics) is not a configuration change
    platform.store.update_entry("orders_s3", {"startvalue": "10", "lastLoadRows": 10})
    reloaded = platform.defs()
    after = _tick(platform, reloaded, changed.cursor)
    assert [r.run_key for r in after.run_requests] == ["initial:orders_new"]
    assert json.loads(after.cursor)["reloaded_for"] == json.loads(changed.cursor)["reloaded_for"]


def test_notifier_choice_and_webhook(platform: Platform) -> None:
    delta = platform.resources["delta"]
    assert isinstance(notifier_for(delta), LogNotifier)
    assert isinstance(notifier_for(delta.model_copy(update={"notify_sns_topic_arn": "arn:aws:sns:x"})),
                      SnsNotifier)
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        WebhookNotifier(f"http://127.0.0.1:{server.server_port}/hook").notify("load failed", "details")
    finally:
        server.shutdown()
    assert received == [{"subject": "load failed", "text": "load failed\ndetails"}]


@pytest.mark.parametrize("tags", [{"delta_platform/table": "orders_s3"}, {}], ids=["scheduled", "from-ui"])
def test_run_failure_sensor_notifies(platform: Platform, monkeypatch, tags: dict[str, str]) -> None:
    """Scheduled runs carry the table tag; a run started from the UI is named by its asset selection."""
    from delta_platform.dagster_layer import sensors

    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(sensors, "notifier_for", lambda delta: type(
        "Capture", (), {"notify": lambda self, s, m: sent.append((s, m))})())
    platform.add({**platform.entry("orders_s3", "row_id", "0"), "sourceTable": "no_such_table"})
    defs = platform.defs()
    asset = next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition))
    with dg.DagsterInstance.ephemeral() as instance:
        job = defs.resolve_implicit_global_asset_job_def()  # what the schedule and the UI launch
        result = job.execute_in_process(partition_key="2026-01-01-00:00", asset_selection=[asset.key],
                                        instance=instance, raise_on_error=False, tags=tags)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        with dg.build_run_status_sensor_context(
                sensor_name="load_failure_notifier", dagster_event=failure, dagster_instance=instance,
                dagster_run=result.dagster_run, resources=platform.resources) as ctx:
            sensors.load_failure_notifier(ctx.for_run_failure())
    assert sent and sent[0][0] == "delta_platform load failed: orders_s3"
    assert result.dagster_run.run_id in sent[0][1]
