"""Dagster overhead for N control-table entries: code-location load, one hourly tick, load imports.

    python benchmarks/dagster_overhead.py --tables 1000 [--repeat 3]

Builds N valid hourly entries (each with its own partitionStart, as tables onboarded at different
times have) in a LocalStore in a temp folder, then measures each figure in a fresh subprocess
(best of --repeat), so no import or cache of one measurement helps another:

- code location load: `import dagster`, then `import delta_platform.definitions` (scans the
  store, builds the Definitions and resolves its repository with the GC paused, see
  `definitions.load_code_location`), `Definitions.validate_loadable` (validates every job), and
  the repository snapshot the code server sends to the webserver;
- one hourly tick: every schedule evaluated at one :10 tick with `build_schedule_context`, the
  RunRequests counted (must equal N) — the repository is loaded before the clock starts, as it is
  in a running code server;
- imports of one load: the modules a load run needs, timed inside the child (interpreter start
  excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = "2026-03-02T05:10:00+00:00"  # after every entry's first partition has ended
LOAD_MODULES = ("delta_platform.delta_task", "delta_platform.engine", "delta_platform.source",
                "delta_platform.lake", "delta_platform.store", "delta_platform.runtime")
WORKER_MODULES = ("dagster", "delta_platform.dagster_layer.factory")
TARGETS = {"definitions": 2.0, "tick": 5.0, "imports": 1.0}


def build_store(home: Path, tables: int) -> None:
    """N valid hourly entries with staggered partition starts, and the files local mode expects."""
    import sqlite3
    from datetime import UTC, datetime, timedelta

    from delta_platform.store import LocalStore

    home.mkdir(parents=True, exist_ok=True)
    for db in ("main.db", "dwh.db"):
        sqlite3.connect(home / db).close()
    store = LocalStore(str(home / "control.db"))
    store.init()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(tables):
        store.put_entry({
            "targetTableName": f"table_{i:05d}", "activeflag": "true", "sourceSchema": "dwh",
            "sourceTable": f"orders_{i:05d}", "filtercolumn": "updated_at", "filteroperator": "gte",
            "startvalue": "2025-12-31 00:00:00", "ouputs3Prefix": str(home / "lake"),
            "partitionStart": (t0 + timedelta(hours=i % 720)).isoformat(),
        })


# --- children: each prints one JSON object on its last stdout line -------------------------------

def child_definitions() -> dict[str, float]:
    """Everything a code server does before it can answer the webserver."""
    import warnings

    t0 = time.perf_counter()
    import dagster as dg

    t1 = time.perf_counter()
    import delta_platform.definitions as location

    t2 = time.perf_counter()
    dg.Definitions.validate_loadable(location.defs)
    repo = location.defs.get_repository_def()
    jobs = len(repo.get_all_jobs())
    t3 = time.perf_counter()
    from dagster._core.remote_representation.external_data import RepositorySnap

    with warnings.catch_warnings():  # Dagster's snapshot code reads a deprecated schedule property
        warnings.simplefilter("ignore", DeprecationWarning)
        RepositorySnap.from_def(repo)
    t4 = time.perf_counter()
    return {"import_dagster": t1 - t0, "build": t2 - t1, "resolve": t3 - t2, "snapshot": t4 - t3,
            "total": t4 - t0, "after_dagster": t4 - t1, "jobs": jobs,
            "schedules": len(list(repo.schedule_defs)), "assets": len(repo.asset_graph.get_all_asset_keys())}


def child_tick() -> dict[str, float]:
    """Evaluate every schedule at one hourly tick against the already-loaded repository."""
    from datetime import datetime

    import dagster as dg

    import delta_platform.definitions as location

    repo = location.defs.get_repository_def()
    dg.Definitions.validate_loadable(location.defs)
    when = datetime.fromisoformat(TICK)
    t0 = time.perf_counter()
    requests = 0
    for schedule in repo.schedule_defs:
        ctx = dg.build_schedule_context(scheduled_execution_time=when, repository_def=repo)
        requests += len(schedule.evaluate_tick(ctx).run_requests or [])
    return {"tick": time.perf_counter() - t0, "run_requests": requests,
            "schedules": len(list(repo.schedule_defs))}


def child_worker() -> dict[str, float]:
    """What `dagster api execute_run` does before the op starts: imports, the definitions from the
    shared snapshot (no store scan), the implicit asset job cut down to the run's one asset."""
    t0 = time.perf_counter()
    sys.argv = ["dagster", "api", "execute_run"]  # state.in_run_worker(): read the snapshot
    import dagster as dg

    import delta_platform.definitions as location

    t1 = time.perf_counter()
    key = next(a.key for a in location.defs.assets if isinstance(a, dg.AssetsDefinition))
    job = location.defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={key})
    t2 = time.perf_counter()
    return {"worker": t2 - t0, "defs": t1 - t0, "job": t2 - t1, "nodes": len(job.nodes_in_topological_order)}


def child_imports(modules: str) -> dict[str, float]:
    import importlib

    t0 = time.perf_counter()
    for name in modules.split(","):
        importlib.import_module(name)
    heavy = sorted(m for m in ("boto3", "botocore", "pandas", "pyarrow.dataset", "adbc_driver_manager",
                               "sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.mysql",
                               "sqlalchemy.dialects.oracle", "psycopg", "pymysql", "oracledb")
                   if m in sys.modules)
    return {"imports": time.perf_counter() - t0, "heavy": heavy}


# --- parent -------------------------------------------------------------------------------------

def run_child(home: Path, mode: str, arg: str = "") -> dict:
    env = {**os.environ, "DELTA_PLATFORM_HOME": str(home), "DELTA_PLATFORM_ENV": "local",
           "DAGSTER_HOME": str(home / "dagster"), "PYTHONPATH": str(REPO)}
    env.pop("DELTA_PLATFORM_SOURCE_URL", None)
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--arg", arg], cwd=home, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best(home: Path, mode: str, key: str, repeat: int, arg: str = "") -> dict:
    runs = [run_child(home, mode, arg) for _ in range(repeat)]
    return min(runs, key=lambda r: r[key])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--arg", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        fn = {"definitions": child_definitions, "tick": child_tick, "worker": child_worker}.get(args.child)
        print(json.dumps(fn() if fn else child_imports(args.arg)))
        return 0

    with tempfile.TemporaryDirectory(prefix="dagster_overhead_") as tmp:
        home = Path(tmp) / "home"
        build_store(home, args.tables)
        run_child(home, "definitions")  # warm-up: writes the snapshot, fills the OS file cache
        d = best(home, "definitions", "total", args.repeat)
        t = best(home, "tick", "tick", args.repeat)
        core = best(home, "imports", "imports", args.repeat, ",".join(LOAD_MODULES))
        worker = best(home, "imports", "imports", args.repeat, ",".join(WORKER_MODULES))
        start = best(home, "worker", "worker", args.repeat)

    n = args.tables
    rows = [
        ("import dagster (fixed cost of any code location)", d["import_dagster"], None),
        (f"build Definitions from {n} entries (import delta_platform.definitions)", d["build"], None),
        (f"resolve: validate_loadable, {d['jobs']} job(s)", d["resolve"], None),
        ("repository snapshot for the webserver", d["snapshot"], None),
        (f"definitions load for {n} entries, after import dagster", d["after_dagster"],
         TARGETS["definitions"]),
        (f"definitions load for {n} entries, incl. import dagster", d["total"], None),
        (f"one hourly tick: {t['schedules']} schedule(s) -> {t['run_requests']} RunRequests",
         t["tick"], TARGETS["tick"]),
        ("imports of one load run (core: " + ", ".join(m.split(".")[-1] for m in LOAD_MODULES) + ")",
         core["imports"], TARGETS["imports"]),
        ("imports of one Dagster run worker (dagster + dagster_layer)", worker["imports"],
         TARGETS["imports"]),
        (f"run worker start-up: imports + definitions from the snapshot + the run's job "
         f"({start['nodes']} op)", start["worker"], None),
    ]
    print(f"Dagster overhead, {n} control-table entries, best of {args.repeat} fresh processes "
          f"({d['assets']} asset keys, {d['schedules']} schedule(s))\n")
    width = max(len(r[0]) for r in rows)
    print(f"| {'what'.ljust(width)} | seconds | target | verdict |")
    print(f"|{'-' * (width + 2)}|--------:|-------:|---------|")
    failed = False
    for what, seconds, target in rows:
        verdict = "" if target is None else ("ok" if seconds <= target else "MISSED")
        failed |= verdict == "MISSED"
        tgt = f"≤ {target:g}" if target is not None else ""
        print(f"| {what.ljust(width)} | {seconds:7.3f} | {tgt:>6} | {verdict:<7} |")
    if t["run_requests"] != n:
        print(f"\nERROR: the tick produced {t['run_requests']} RunRequests for {n} active tables")
        failed = True
    print(f"\nheavy modules loaded by the core load imports: {', '.join(core['heavy']) or 'none'}")
    print(f"heavy modules loaded by the run-worker imports: {', '.join(worker['heavy']) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
