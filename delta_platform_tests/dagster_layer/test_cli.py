"""One real `dagster asset materialize` in a subprocess against the project's code location."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from delta_platform import demo
from delta_platform.dagster_layer.state import HOME_VAR
from delta_platform.lake import Lake
from delta_platform.store import LocalStore

PROJECT = Path(__file__).resolve().parents[2]


def test_dagster_asset_materialize_subprocess(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv(HOME_VAR, str(home))
    demo.setup(home)
    store = LocalStore(str(home / "control.db"))
    partition = store.get_entry("orders_s3")["partitionStart"][:10] + "-03:00"
    env = {**os.environ, HOME_VAR: str(home), "DAGSTER_HOME": str(home / "dagster"),
           "DELTA_PLATFORM_ENV": "local"}
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "delta_platform.definitions",
         "--select", "raw/dwh/orders_s3", "--partition", partition],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stderr + proc.stdout
    assert Lake(str(home / "lake")).read_partition("dwh", "orders_s3", partition).num_rows == demo.SEED_ROWS
    assert store.ledger_entry("orders_s3", partition)["rows"] == demo.SEED_ROWS
