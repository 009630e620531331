"""`delta-platform`: manage the control table and run one load outside Dagster.

Exit codes: 0 ok, 1 a load or store operation failed, 2 invalid input (entries, arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from delta_platform.control_entry import RUNTIME_ATTRIBUTES, ControlEntry
from delta_platform.errors import ControlEntryError, DeltaError
from delta_platform.partitions import last_complete, spec_from_key
from delta_platform.runtime import default_store_uri, runtime_from_env
from delta_platform.store import ControlStore, store_from_uri

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def load_items(path: str) -> list[dict[str, Any]]:
    """Entries from YAML or JSON: a list, or a mapping with an `entries` list, or one entry."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    data = yaml.safe_load(text)  # YAML is a superset of JSON
    if isinstance(data, dict) and "entries" in data:
        data = data["entries"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ControlEntryError(f"{path}: expected a list of entries")
    return data  # a YAML float such as 1.5 stays a float: validation refuses it by name


def _store(args: argparse.Namespace) -> ControlStore:
    return store_from_uri(args.store)


def cmd_init(args: argparse.Namespace) -> int:
    _store(args).init()
    print(f"control store ready: {args.store}")
    return EXIT_OK


def cmd_put(args: argparse.Namespace) -> int:
    store = _store(args)
    store.init()
    bad = 0
    for item in load_items(args.file):
        try:
            entry = ControlEntry.from_item(item)
        except ControlEntryError as exc:
            print(f"invalid: {exc}", file=sys.stderr)
            bad += 1
            continue
        existing = store.get_entry(entry.name)
        if existing and not args.reset_watermark:
            # Re-putting configuration must not rewind a table that has been loading.
            for key in RUNTIME_ATTRIBUTES:
                if key in existing:
                    item[key] = existing[key]
            if existing.get("startvalueType"):
                item["startvalue"] = existing.get("startvalue")
        elif existing:
            # A deliberate rewind: keep the recorded watermark so the next window shows as a reset.
            for key in RUNTIME_ATTRIBUTES - {"startvalueType"}:
                if key in existing:
                    item[key] = existing[key]
        store.put_entry(item)
        print(f"stored {entry.name}")
    return EXIT_INVALID if bad else EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for item in sorted(_store(args).scan_entries(), key=lambda i: str(i.get("targetTableName"))):
        try:
            entry = ControlEntry.from_item(item)
            status = "active" if entry.active else "inactive"
            what = f"{entry.source_schema}.{entry.source_table} {entry.filter_operator.value} "
            what += entry.filter_column
        except ControlEntryError as exc:
            status, what = "INVALID", str(exc)
        rows.append((str(item.get("targetTableName")), status, str(item.get("startvalue", "")), what))
    if args.json:
        print(
            json.dumps([dict(zip(("table", "status", "startvalue", "source"), r, strict=True)) for r in rows])
        )
        return EXIT_OK
    for r in rows:
        print(f"{r[0]:<30} {r[1]:<9} {r[2]:<32} {r[3]}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    items = load_items(args.file) if args.file else list(_store(args).scan_entries())
    bad = 0
    for item in items:
        try:
            entry = ControlEntry.from_item(item)
            unknown = sorted(set(item) - _KNOWN)
            hint = f" (unknown attributes ignored: {', '.join(unknown)})" if unknown else ""
            print(f"ok: {entry.name}{hint}")
        except ControlEntryError as exc:
            print(f"invalid: {exc}", file=sys.stderr)
            bad += 1
    return EXIT_INVALID if bad else EXIT_OK


def cmd_flag(args: argparse.Namespace, active: bool) -> int:
    store = _store(args)
    if store.get_entry(args.table) is None:
        print(f"no entry {args.table!r}", file=sys.stderr)
        return EXIT_INVALID
    store.update_entry(args.table, {"activeflag": "true" if active else "false"})
    print(f"{args.table}: {'enabled' if active else 'disabled'}")
    return EXIT_OK


def cmd_ledger(args: argparse.Namespace) -> int:
    store = _store(args)
    item = store.get_entry(args.table)
    if item is None:
        print(f"no entry {args.table!r}", file=sys.stderr)
        return EXIT_INVALID
    ledger = store.ledger(args.table)
    if args.json:
        print(json.dumps({"startvalue": item.get("startvalue"), "ledger": ledger}, default=str))
        return EXIT_OK
    print(
        f"{args.table}: startvalue={item.get('startvalue')!s} ({item.get('startvalueType', 'as configured')})"
    )
    for e in ledger:
        fence = (e.get("fence") or {}).get("term", "-")
        print(
            f"  {e['partitionKey']:<18} {e['mode']:<7} {e.get('window_text', ''):<60} rows={e['rows']:<9} "
            f"fence={fence} committed={e.get('committedAt')}"
        )
    return EXIT_OK


def cmd_load(args: argparse.Namespace) -> int:
    sources = dict(s.split("=", 1) for s in args.source or [])
    runtime = runtime_from_env(args.store, sources)
    task = runtime.task()
    entry = task.entry(args.table)
    partition = (
        spec_from_key(entry.cadence, args.partition) if args.partition else last_complete(entry.cadence)
    )
    result = task.run(args.table, partition, run_id="cli", log_progress=print)
    summary = {
        "table": result.table,
        "partition": result.partition_key,
        "mode": result.mode.value,
        "window": result.window.describe(),
        "fence": result.fence.term if result.fence else None,
        "rows": result.rows,
        "bytes": result.bytes,
        "seconds": round(result.seconds, 3),
        "watermark": result.watermark_after,
        "uri": result.partition_uri,
        "warnings": result.warnings,
    }
    print(json.dumps(summary, indent=None if args.json else 2))
    return EXIT_OK


_KNOWN = {
    "targetTableName",
    "activeflag",
    "sourceSchema",
    "sourceTable",
    "filtercolumn",
    "filteroperator",
    "startvalue",
    "endvalue",
    "ouputs3Prefix",
    "outputs3Prefix",
    "outputS3Prefix",
    "replication_task_settings",
    "primaryKey",
    "safetyLagSeconds",
    "nullPolicy",
    "cursorExpression",
    "partitionCadence",
    "partitionStart",
    "source",
    "engine",
    "maxTxnWaitSeconds",
    "chunkRows",
    "chunkWorkers",
    "group",
    "description",
} | RUNTIME_ATTRIBUTES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="delta-platform", description=__doc__)
    p.add_argument(
        "--store",
        default=default_store_uri(),
        help="control store: a local file path or dynamodb://<table>?ledger=..&region=..",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create the control store").set_defaults(func=cmd_init)
    put = sub.add_parser("put", help="put entries from a YAML/JSON file ('-' for stdin)")
    put.add_argument("file")
    put.add_argument("--reset-watermark", action="store_true", help="overwrite startvalue of existing tables")
    put.set_defaults(func=cmd_put)
    lst = sub.add_parser("list", help="list entries")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)
    val = sub.add_parser("validate", help="validate a file, or every entry in the store")
    val.add_argument("file", nargs="?")
    val.set_defaults(func=cmd_validate)
    for name, active in (("enable", True), ("disable", False)):
        sp = sub.add_parser(name, help=f"{name} a table")
        sp.add_argument("table")
        sp.set_defaults(func=lambda a, active=active: cmd_flag(a, active))
    led = sub.add_parser("ledger", help="show a table's watermark and ledger")
    led.add_argument("table")
    led.add_argument("--json", action="store_true")
    led.set_defaults(func=cmd_ledger)
    load = sub.add_parser("load", help="run one load of a table outside Dagster")
    load.add_argument("table")
    load.add_argument("--partition", help="partition key (default: the last complete partition)")
    load.add_argument("--source", action="append", metavar="NAME=URL", help="SQLAlchemy URL for a connection")
    load.add_argument("--json", action="store_true")
    load.set_defaults(func=cmd_load)
    try:
        from delta_platform.aws.cli import register
    except ImportError:
        pass
    else:
        register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ControlEntryError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (DeltaError, ValueError, OSError) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
