"""Where a whole delta_platform window load spends its time, phase by phase.

    python benchmarks/load_phases.py --db sqlite --rows 1000000 [--repeat 3]

Imports are preloaded, then one real load (the same as the `delta_platform` peer of
engine_speed.py) runs with timers wrapped around each phase of DeltaTask.run: reflection, the
fence probe (MAX, clock, open transactions), snapshot open, count, NULL count, the reader (time
on the fetch thread), Parquet writes, writer close, count_rows verification, publish, store
commit. The best repetition by total is printed; the phases do not sum exactly to the total
because the reader and the writer overlap.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DBS, default_url  # noqa: E402

TIMES: dict[str, float] = defaultdict(float)


def _timed(name: str | Callable[[tuple[Any, ...]], str], fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name if isinstance(name, str) else name(args)] += time.perf_counter() - t

    return wrapper


def _timed_iter(name: str, it: Iterator[Any]) -> Iterator[Any]:
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            TIMES[name] += time.perf_counter() - t
            return
        TIMES[name] += time.perf_counter() - t
        yield item


def instrument() -> None:
    """Wrap each phase of the load path in a timer (class attributes, so every instance)."""
    from delta_platform import lake as lake_mod
    from delta_platform import manifest as manifest_mod
    from delta_platform import source as source_mod
    from delta_platform import store as store_mod

    src = source_mod.Source
    src.describe = _timed("reflect", src.describe)
    src.probe = _timed("probe (MAX, clock, drain)", src.probe)
    original_snapshot = src.snapshot

    @contextlib.contextmanager
    def snapshot(self: Any, info: Any) -> Iterator[Any]:
        t = time.perf_counter()
        with original_snapshot(self, info) as snap:
            TIMES["snapshot open"] += time.perf_counter() - t
            calls = [0]
            scalar, stream = snap.scalar, snap.stream

            def timed_scalar(stmt: Any) -> Any:
                calls[0] += 1
                name = ("count", "NULL count", "table count (SQLite plan)")[min(calls[0], 3) - 1]
                return _timed(name, scalar)(stmt)

            def timed_stream(*a: Any, **k: Any) -> Iterator[Any]:
                return _timed_iter("reader (fetch thread)", stream(*a, **k))

            snap.scalar, snap.stream = timed_scalar, timed_stream  # type: ignore[method-assign]
            yield snap
            t = time.perf_counter()
        TIMES["snapshot close"] += time.perf_counter() - t

    src.snapshot = snapshot  # type: ignore[method-assign]
    lake_cls = lake_mod.Lake
    writer_cls = manifest_mod.StagedWriter
    writer_cls.write_batch = _timed("parquet write_batch", writer_cls.write_batch)
    writer_cls.close = _timed("parquet close", writer_cls.close)
    lake_cls.count_rows = _timed("verify count_rows", lake_cls.count_rows)
    lake_cls.publish = _timed("publish", lake_cls.publish)
    lake_cls.cleanup_staging = _timed("cleanup staging", lake_cls.cleanup_staging)
    store_cls = store_mod.LocalStore
    store_cls.commit_window = _timed("store commit", store_cls.commit_window)
    store_cls.set_intent = _timed("store intent", store_cls.set_intent)
    store_cls.acquire_lease = _timed("lease", store_cls.acquire_lease)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=DBS, default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    url = default_url(args.db)

    from benchmarks.delta_platform_peer import run_delta_platform
    from benchmarks.tables import ensure_table, source_truth
    from delta_platform.delta_task import DeltaTask

    ensure_table(args.db, url, args.rows)
    truth = source_truth(args.db, url)
    instrument()
    run = DeltaTask.run
    best: dict[str, float] | None = None
    for _ in range(args.repeat):
        TIMES.clear()
        out = tempfile.mkdtemp(prefix="phases-")
        t = time.perf_counter()
        DeltaTask.run = _timed("task.run total", run)  # type: ignore[method-assign]
        try:
            run_delta_platform(args.db, url, out, truth.window.low, truth.window.high)
        finally:
            DeltaTask.run = run  # type: ignore[method-assign]
            shutil.rmtree(out, ignore_errors=True)
        TIMES["harness total"] = time.perf_counter() - t
        if best is None or TIMES["task.run total"] < best["task.run total"]:
            best = dict(TIMES)
    assert best is not None
    print(f"{args.db}, {args.rows:,} rows, best of {args.repeat} by task.run total")
    for name, secs in best.items():
        print(f"  {name:<28} {secs * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
