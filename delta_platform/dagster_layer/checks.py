"""Per-partition checks, computed from the lake and the ledger (not from the run's own numbers),
so re-running a check after someone tampered with either shows it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg

from delta_platform.control_entry import ControlEntry
from delta_platform.core.window import Window
from delta_platform.errors import DeltaError

if TYPE_CHECKING:  # run-time only: check specs are built without the lake or the store
    from delta_platform.lake import Lake
    from delta_platform.store import ControlStore

ROW_COUNT = "row_count"
WATERMARK = "watermark_monotonic"
SCHEMA_DRIFT = "schema_drift"


def check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(ROW_COUNT, asset=key, blocking=True,
                          description="rows in the published files = rows the engine read = source count"),
        dg.AssetCheckSpec(WATERMARK, asset=key, blocking=True,
                          description="window contiguous with the previous one, high >= low, "
                                      "startvalue = last committed high; manual resets are reported"),
        dg.AssetCheckSpec(SCHEMA_DRIFT, asset=key,
                          description="columns and types equal the previous partition's (warning)"),
    ]


def evaluate(entry: ControlEntry, store: ControlStore, lake: Lake, key: dg.AssetKey,
             partition_key: str) -> list[dg.AssetCheckResult]:
    """All three checks for one partition."""
    ledger_entry = store.ledger_entry(entry.name, partition_key)
    return [
        row_count(entry, lake, key, partition_key, ledger_entry),
        watermark(entry, store, key, partition_key, ledger_entry),
        schema_drift(entry, store, key, partition_key, ledger_entry),
    ]


def _result(key: dg.AssetKey, name: str, passed: bool, description: str, *,
            severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
            **metadata: Any) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(asset_key=key, check_name=name, passed=passed, severity=severity,
                               description=description,
                               metadata={k: v for k, v in metadata.items() if v is not None})


def row_count(entry: ControlEntry, lake: Lake, key: dg.AssetKey, partition_key: str,
              ledger_entry: dict[str, Any] | None) -> dg.AssetCheckResult:
    """Blocking: manifest rows = rows actually in the listed files = ledger rows = source count."""
    if ledger_entry is None:
        return _result(key, ROW_COUNT, False, f"partition {partition_key} has no ledger entry")
    try:  # footers only: a check must stay cheap on a large partition
        manifest = lake.read_manifest(entry.source_schema, entry.name, partition_key)
        if manifest is None:
            return _result(key, ROW_COUNT, False, f"partition {partition_key} has no published manifest")
        if not lake.is_complete(entry.source_schema, entry.name, partition_key):
            return _result(key, ROW_COUNT, False, "a file listed in the manifest is missing or has "
                           "another size than recorded (changed after publish)")
        pdir = lake.partition_dir(entry.source_schema, entry.name, partition_key)
        files = lake.count_rows([f"{pdir}/{f.name}" for f in manifest.files])
    except (DeltaError, OSError) as exc:
        return _result(key, ROW_COUNT, False, f"the published partition cannot be read: {exc}")
    counts = {"files": files, "manifest": manifest.rows, "ledger": int(ledger_entry["rows"]),
              "source": int(ledger_entry["sourceCount"])}
    passed = len(set(counts.values())) == 1 and manifest.attempt_id == ledger_entry.get("attemptId")
    why = ", ".join(f"{k} {v}" for k, v in counts.items())
    if manifest.attempt_id != ledger_entry.get("attemptId"):
        why += f"; manifest attempt {manifest.attempt_id} is not the ledger's {ledger_entry.get('attemptId')}"
    return _result(key, ROW_COUNT, passed, ("counts agree: " if passed else "counts disagree: ") + why,
                   **{f"{k}_rows": v for k, v in counts.items()})


def _incremental_windows(ledger: list[dict[str, Any]]) -> list[tuple[str, Window]]:
    out = []
    for item in ledger:
        window = Window.from_json(item["window"])
        if window.incremental and not window.empty and window.low and window.high:
            out.append((item["partitionKey"], window))
    return out


def watermark(entry: ControlEntry, store: ControlStore, key: dg.AssetKey, partition_key: str,
              ledger_entry: dict[str, Any] | None) -> dg.AssetCheckResult:
    """Blocking: no row in two windows, no hole unless a manual reset explains it, startvalue in step."""
    if ledger_entry is None:
        return _result(key, WATERMARK, False, f"partition {partition_key} has no ledger entry")
    window = Window.from_json(ledger_entry["window"])
    text = window.describe()
    if not window.incremental:
        return _result(key, WATERMARK, True, f"static filter ({text}): the watermark does not move",
                       window=text)
    if window.empty or window.low is None or window.high is None:
        return _result(key, WATERMARK, True, f"empty window ({text}); nothing loaded, watermark unchanged",
                       window=text, mode=ledger_entry.get("mode"))
    if window.high.as_high_key() < window.low.as_low_key():
        return _result(key, WATERMARK, False, f"high below low in {text}", window=text)
    others = [(p, w) for p, w in _incremental_windows(store.ledger(entry.name)) if p != partition_key]
    overlaps = [p for p, w in others
                if w.low.as_low_key() < window.high.as_high_key()
                and window.low.as_low_key() < w.high.as_high_key()]
    below = [(p, w) for p, w in others if w.high.as_high_key() <= window.low.as_low_key()]
    reset = any("reset by hand" in n for n in window.notes) or ledger_entry.get("mode") == "reset"
    if overlaps and not reset:
        return _result(key, WATERMARK, False, f"window {text} overlaps partition(s) {', '.join(overlaps)}: "
                       "rows loaded twice", window=text)
    notes: list[str] = []
    if below and not overlaps:
        prev_key, prev = max(below, key=lambda pw: pw[1].high.as_high_key())
        if prev.high.next_low() != window.low:
            if not reset:
                return _result(key, WATERMARK, False,
                               f"window {text} does not start where partition {prev_key} ended "
                               f"({prev.describe()}): a hole, and no manual reset recorded", window=text)
            notes.append(f"manual reset skipped ahead: partition {prev_key} ended at "
                         f"{prev.high.value.encode()}, this window is {text}")
    if reset and overlaps:
        notes.append(f"manual reset rewound: window {text} reloads rows of partition(s) "
                     f"{', '.join(overlaps)}")
    elif reset and not notes:
        notes.append(f"manual reset: window {text}")
    newest = max([w for _, w in others] + [window], key=lambda w: w.high.as_high_key())
    current = store.get_entry(entry.name) or {}
    if newest is window and str(current.get("startvalue")) != window.high.value.encode():
        return _result(key, WATERMARK, False,
                       f"control table startvalue {current.get('startvalue')!r} is not the last committed "
                       f"high {window.high.value.encode()!r}: edited by hand (the next window starts "
                       "at the new value)", window=text)
    if notes:  # a deliberate reset: reported as a warning, never hidden, never blocking
        return _result(key, WATERMARK, False, "; ".join(notes), severity=dg.AssetCheckSeverity.WARN,
                       window=text, manual_reset=True, mode=ledger_entry.get("mode"))
    return _result(key, WATERMARK, True, f"contiguous window {text}", window=text,
                   mode=ledger_entry.get("mode"))


def schema_drift(entry: ControlEntry, store: ControlStore, key: dg.AssetKey, partition_key: str,
                 ledger_entry: dict[str, Any] | None) -> dg.AssetCheckResult:
    """Warning: compare columns and types with the nearest earlier partition in the ledger."""
    warn = dg.AssetCheckSeverity.WARN
    if ledger_entry is None:
        return _result(key, SCHEMA_DRIFT, False, f"partition {partition_key} has no ledger entry",
                       severity=warn)
    mine = ledger_entry.get("partitionStart") or partition_key
    earlier = [e for e in store.ledger(entry.name) if (e.get("partitionStart") or e["partitionKey"]) < mine]
    if not earlier:
        return _result(key, SCHEMA_DRIFT, True, "first partition: nothing to compare", severity=warn)
    prev = max(earlier, key=lambda e: e.get("partitionStart") or e["partitionKey"])
    old = {c["name"]: c["type"] for c in prev.get("schema", [])}
    new = {c["name"]: c["type"] for c in ledger_entry.get("schema", [])}
    changes = [f"+{c} {t}" for c, t in new.items() if c not in old]
    changes += [f"-{c}" for c in old if c not in new]
    changes += [f"~{c} {old[c]} -> {new[c]}" for c in new if c in old and old[c] != new[c]]
    return _result(key, SCHEMA_DRIFT, not changes,
                   f"schema changed since partition {prev['partitionKey']}: " + ", ".join(changes)
                   if changes else f"same schema as partition {prev['partitionKey']}", severity=warn)
