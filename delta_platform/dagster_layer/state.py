"""The control-table snapshot every process of a run shares.

The code server (`dagster dev`, "Reload definitions", `dagster asset materialize`) scans the
control store and writes the snapshot; run workers read it instead of scanning, so the job a run
was launched with always exists in the worker even if the control table changed meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("delta_platform")
HOME_VAR = "DELTA_PLATFORM_HOME"
SNAPSHOT_NAME = "control_snapshot.json"
_RUN_WORKER_COMMANDS = ("execute_run", "execute_step", "resume_run")


def home() -> Path:
    """Where local state lives: $DELTA_PLATFORM_HOME, else `.delta_platform/` in the current folder."""
    return Path(os.environ.get(HOME_VAR) or Path.cwd() / ".delta_platform").resolve()


def in_run_worker() -> bool:
    return any(cmd in sys.argv for cmd in _RUN_WORKER_COMMANDS)


def write_snapshot(store_uri: str, path: Path) -> list[dict[str, Any]]:
    """Scan the store and replace the snapshot atomically (readers never see half a file)."""
    from delta_platform.store import store_from_uri  # run workers never scan: keep it off their imports

    items = sorted(store_from_uri(store_uri).scan_entries(), key=lambda i: str(i.get("targetTableName")))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".snapshot-")
    with os.fdopen(fd, "w") as fh:  # one line: without indent json uses its C encoder (1,000 entries)
        fh.write(json.dumps(items, default=str, sort_keys=True))
    os.replace(tmp, path)
    return items


def read_snapshot(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else []


def load_items(store_uri: str, path: Path, *, refresh: bool | None = None) -> list[dict[str, Any]]:
    """Fresh scan in the code server, the shared snapshot in run workers; a store outage
    falls back to the last snapshot rather than emptying the code location."""
    refresh = (not in_run_worker()) if refresh is None else refresh
    if refresh or not path.exists():
        try:
            return write_snapshot(store_uri, path)
        except Exception as exc:  # the code location must load even when the store is down
            log.error("control store %s unreadable (%s); using the last snapshot %s",
                      store_uri.split("?")[0], type(exc).__name__, path)
    return read_snapshot(path)
