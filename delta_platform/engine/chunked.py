"""The chunked engine: one large window read as key ranges over several connections in parallel.

Chunks are ranges of the TOTAL order `(cursor, primary key...)`, so a tie group on the cursor is
split by the key and every row lies in exactly one range: `t <= b1`, `b1 < t <= b2`, ...,
`t > bk`; rows with a NULL in any key column go to one extra chunk. Boundaries are key tuples
read inside the window's snapshot (ROW_NUMBER over the ordered keys).

A single integer primary key is a total order by itself: its chunks are equal-width value ranges
found from MIN/MAX on the key's index, with no sort of the window.

Consistency. PostgreSQL: a leader transaction exports its snapshot; it counts the window and
every chunk connection imports that snapshot, so the count and all chunks are one snapshot.
Other dialects: each chunk is read and counted in its own snapshot and the source count is
the sum of the chunk counts. That is still exact for an incremental window because its high
is fenced: every row with a cursor in the window was committed before the fence, and an update
after it stamps the row beyond the high, which moves it to a later window; it cannot move from
one chunk's range into another's. Static windows (no fence) are not chunked there.

A failed chunk is retried alone (its partial files deleted first); finished chunks are kept.

Speed (2M-row PostgreSQL window, 2 cores shared with the server; `benchmarks/chunked_speed.py`).
The engine used to lose to the single stream (2.73 s vs 1.95 s at 2 chunks, 3.96 s at 4) with
equal client CPU: the loss was server-side. A per-chunk timeline showed the second chunk's
first batch ~0.8 s after its query, and EXPLAIN the cause: the window's bounds are scalar
subqueries, so the planner scanned the cursor's index for every chunk and filtered the key
range row by row, each chunk reading the whole window. Integer-key chunks are now fenced key
ranges (`_fenced`), and checkpointed runs count their chunks on the leader's connection
(`_LeaderCounter`) instead of on each chunk's critical path. Connections default to the cores
the process may use (`available_cores`); with one, chunks run one after another.

Resume across runs (`run(..., checkpoint=True)`, used by DeltaTask). The plan (window, key
columns, schema, chunk edges) and every finished chunk (its staged files, rows and count) are
written to `_staging/<attempt>/_chunks.json` as each chunk completes. If the chunked read then
fails for good, or the process dies, the finished chunks' files and the checkpoint stay in
staging (invisible: nothing is published without a manifest). A later run given the same attempt
and the identical window (DeltaTask reuses the recorded window, high included) re-reads only the
chunks the checkpoint does not list, each in a new snapshot of its own.

Why the union is still exactly the window. The original chunks came from one snapshot (on
PostgreSQL an exported one that is gone by now); the resumed chunks come from later snapshots.
The high is fenced, so no row can newly enter the window by its cursor, and a row updated since
gets a cursor above the high and belongs to a later window. The chunk ranges partition the key
space: with a single integer key a row cannot change range (its key is its identity); with the
`(cursor, key...)` order a row could only move range by changing its cursor, which moves it
beyond the high, out of every chunk of this window. So each row of the window is read at most
once, by the one chunk whose range holds it. Verification compares rows written with the SUM
of the per-chunk counts, each chunk counted in the snapshot it was read in (with a checkpoint,
chunks of the exported snapshot are counted too), so a row deleted between the two runs is
neither read nor counted. Like any snapshot delta, the partition holds each row as of the
snapshot its chunk was read in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import sqlalchemy as sa
from sqlalchemy.sql.util import ClauseAdapter

from delta_platform.core.window import Window
from delta_platform.engine.base import EngineResult, Progress
from delta_platform.engine.chunks import Chunk
from delta_platform.engine.streaming import StreamingEngine, _cap_malloc_retention, _prefetch
from delta_platform.errors import EngineError
from delta_platform.manifest import StagedFile, part_pattern, schema_to_json
from delta_platform.source.snapshot import Snapshot, open_snapshot

if TYPE_CHECKING:
    from delta_platform.lake import Lake, StagedWriter
    from delta_platform.source import Source, TableInfo

# Dialects that compare row values `(a, b) > (x, y)` (SQLite since 3.15); others get the OR form.
ROW_VALUE_DIALECTS = frozenset({"postgresql", "mysql", "mariadb", "sqlite"})
# The chunk checkpoint in an attempt's staging folder (see "Resume across runs" above).
CHECKPOINT = "_chunks.json"
CHECKPOINT_VERSION = 1
#: PostgreSQL integer keys: fence each chunk's key range (`ChunkedEngine._fenced`) when
#: k x window rows >= this share x the table's rows (pg_class.reltuples): the k cursor-index
#: scans would then read more than one pass over the key's index.
FENCE_SHARE = 1.0
#: A chunk whose count is the server's tally of the rows its stream sent (MySQL FOUND_ROWS(), see
#: `MySQLSnapshot.served_rows`; a PostgreSQL binary COPY's tag, `PgSnapshot.copied_rows`): no
#: COUNT(*) pass over the chunk's range (0.25 s per 1M rows on MariaDB, a heap scan on PostgreSQL).
_SERVED = -2
#: Smallest per-chunk read batch and Parquet row group: below these, per-batch overheads and
#: small row groups (slower scans for readers) cost more than the memory they save.
_MIN_CHUNK_BATCH = 64 * 1024
_MIN_CHUNK_ROW_GROUP = 128 * 1024

log = logging.getLogger("delta_platform")


@dataclass
class ChunkResult:
    chunk: Chunk
    rows: int
    count: int | None  # the chunk's own count (per-chunk snapshots), None when shared
    staged: list[StagedFile]
    seconds: float
    attempts: int


@dataclass
class _Run:
    """State shared by the chunk threads of one engine run."""

    source: Source
    info: TableInfo
    window: Window
    lake: Lake
    attempt_id: str
    snapshot_id: str | None  # PostgreSQL exported snapshot; None = one snapshot per chunk
    keys: list[sa.ColumnElement[Any]]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: int = 0
    files: dict[int, list[str]] = field(default_factory=dict)
    # The checkpoint document when resumable (None: plain run, nothing kept on failure).
    checkpoint: dict[str, Any] | None = None
    count_each: bool = False  # count every chunk in its own snapshot, even an exported one
    # PostgreSQL integer-key value ranges: scan each chunk's key range through the key's index
    # (see `ChunkedEngine._fenced`); decided by `_plan` from the window's share of the table.
    fence: bool = False
    # Checkpointed PostgreSQL runs: the chunks' counts, taken on the leader's connection.
    counter: _LeaderCounter | None = None

    def chunk_done(self, result: ChunkResult) -> None:
        """Record a finished chunk durably before it counts as finished (checkpoint runs)."""
        if self.checkpoint is None:
            return
        with self.lock:
            self.checkpoint["done"][str(result.chunk.index)] = {
                "rows": result.rows,
                "count": result.count,
                "seconds": round(result.seconds, 3),
                "attempts": result.attempts,
                "files": [{"name": f.name, "rows": f.rows, "bytes": f.bytes} for f in result.staged],
            }
            self.save()

    def save(self) -> None:
        """Caller holds `lock` (or runs before the chunk threads start)."""
        assert self.checkpoint is not None
        entry = self.info.entry
        self.lake.write_staged_json(
            entry.source_schema, entry.target_table_name, self.attempt_id, CHECKPOINT, self.checkpoint
        )

    def add(self, n: int) -> None:
        with self.lock:
            self.rows += n


class _LeaderCounter:
    """Counts each chunk of an exported snapshot on the leader's connection, while chunks stream.

    A checkpoint records every finished chunk with its count in the snapshot it was read in, so
    a later run can add the counts of chunks read in different snapshots. Each chunk used to
    count its own range on its own connection before its first row: on PostgreSQL that is a
    heap scan of the range (the key is not in the cursor's index), ~0.5 s per million rows on
    every chunk's critical path. The leader's connection sits idle in the same exported
    snapshot while the chunks stream, so it counts the chunks there, one after another, and a
    chunk waits for its count only when it finishes (by then the count is long done: a count is
    a scan without the COPY and the client's decoding). Same snapshot, same number.
    """

    def __init__(self, engine: ChunkedEngine, run: _Run, leader: Snapshot, plan: list[Chunk]):
        self.counts: dict[int, int] = {}
        self.error: BaseException | None = None
        self.ready = {c.index: threading.Event() for c in plan}
        self.done = threading.Event()
        self._stop = threading.Event()

        def work() -> None:
            try:
                for chunk in plan:
                    if self._stop.is_set():
                        break
                    self.counts[chunk.index] = int(leader.scalar(engine._count(run, chunk)) or 0)
                    self.ready[chunk.index].set()
            except BaseException as exc:  # handed to the chunks that wait for a count
                self.error = exc
            finally:
                self.done.set()
                for event in self.ready.values():
                    event.set()

        self.thread = threading.Thread(target=work, name="delta-chunk-count", daemon=True)
        self.thread.start()

    def count(self, chunk: Chunk) -> int:
        self.ready[chunk.index].wait()
        if chunk.index not in self.counts:
            raise EngineError(f"chunk {chunk.index} could not be counted: {self.error!r}")
        return self.counts[chunk.index]

    def close(self) -> None:
        """Stop after the count in progress; the leader's connection is closed after this."""
        self._stop.set()
        self.thread.join()


class _Cancelled(Exception):
    """Another chunk failed for good; this one stops at its next batch."""


class ChunkedEngine:
    """Splits a window on `(cursor, primary key)` and reads the chunks in parallel.

    An entry selects it through `chunkRows` (ControlEntry.chunk_rows); the runtime's engine
    factory passes `ChunkedEngine(min_rows_per_chunk=entry.chunk_rows)` for such entries.
    Without a primary key, or for a small window, it reads like the streaming engine.
    """

    name = "chunked"
    grid: timedelta | None = None
    resumable = True  # DeltaTask passes checkpoint=True and reuses the attempt after a failure

    def __init__(
        self,
        chunks: int = 4,
        workers: int | None = None,
        min_rows_per_chunk: int = 250_000,
        retries: int = 2,
        batch_rows: int = 256 * 1024,
        row_group_rows: int = 256 * 1024,
        queue_depth: int = 2,
    ):
        """`batch_rows` and `row_group_rows` are what one stream would use; each of W concurrent
        chunks gets 1/W of the row group and 1/2W of the batch with a queue of one
        (`_batch_share`; at least `_MIN_CHUNK_BATCH` / `_MIN_CHUNK_ROW_GROUP`), so the
        buffers of W readers and writers together stay near one stream's (peak RSS, 2M rows,
        2 workers, `engine_speed.py`: PostgreSQL 409 -> 305-330 MB, SQLite 516 -> 350-370 MB,
        at the same speed)."""
        if chunks < 1 or (workers is not None and workers < 1) or min_rows_per_chunk < 1 or retries < 0:
            raise ValueError("need chunks >= 1, workers >= 1, min_rows_per_chunk >= 1, retries >= 0")
        self.chunks = chunks
        # Connections read at once; None = one per core this process may run on, at run time.
        self.workers = workers if workers is not None else available_cores()
        self.min_rows_per_chunk = min_rows_per_chunk
        self.retries = retries
        self.batch_rows = batch_rows
        self.row_group_rows = row_group_rows
        self.queue_depth = queue_depth

    # -- hooks (tests inject failures and pauses here) ------------------------------------------
    def _chunk_started(self, chunk: Chunk, attempt: int) -> None:
        """Called in the chunk's thread once its snapshot is open, before its first query."""

    def _chunk_batch(self, chunk: Chunk, attempt: int, rows: int) -> None:
        """Called after each batch of a chunk is written, with the chunk's rows so far."""

    # -- the run -------------------------------------------------------------------------------
    def run(
        self,
        source: Source,
        info: TableInfo,
        window: Window,
        lake: Lake,
        attempt_id: str,
        *,
        progress: Progress | None = None,
        checkpoint: bool = False,
    ) -> EngineResult:
        """Read the window; with `checkpoint`, resume the attempt's checkpoint or start one."""
        started = time.monotonic()
        _cap_malloc_retention()  # each chunk's thread frees what another allocated, as in a stream
        entry = info.entry
        shared = source.dialect_name == "postgresql"
        streaming = StreamingEngine(self.batch_rows, self.row_group_rows, self.queue_depth)
        if not entry.primary_key:
            return _with_details(
                streaming.run(source, info, window, lake, attempt_id, progress=progress),
                {"chunked": "no primaryKey: one stream"},
            )
        if not shared and (not window.incremental or window.high is None):
            return _with_details(
                streaming.run(source, info, window, lake, attempt_id, progress=progress),
                {"chunked": "static window without an exported snapshot: one stream"},
            )
        pk = [info.table.c[k] for k in entry.primary_key]
        # A single integer key is a total order by itself: split it by value (cheap), not by rank.
        keys = pk if _integer_key(info) else [info.cursor, *pk]
        if checkpoint:
            resumed = self._resume(source, info, window, lake, attempt_id, keys, progress)
            if resumed is not None:
                return _result(self.name, info, resumed, started)
        with contextlib.ExitStack() as stack:
            leader = stack.enter_context(
                open_snapshot(
                    source.engine, source.dialect, table=entry.target_table_name, attach=source.attach
                )
            )
            snapshot_id = str(leader.scalar(sa.select(sa.func.pg_export_snapshot()))) if shared else None
            run = _Run(source, info, window, lake, attempt_id, snapshot_id, keys)
            source_count = int(leader.scalar(source.count_window(info, window)) or 0)
            null_count = int(leader.scalar(source.count_nulls(info)) or 0) if window.incremental else 0
            plan = self._plan(leader, run, source_count, shared)
            if checkpoint:
                self._start_checkpoint(run, plan, null_count, "exported" if shared else "per chunk")
            if len(plan) == 1:  # small window: read it in the leader's snapshot, like streaming
                results = [self._read_chunk(run, plan[0], leader, progress, leader_count=source_count)]
            else:
                if not shared:
                    stack.close()  # each chunk brings its own snapshot; release the planning one
                elif run.count_each and not _tallies(leader, info.schema):
                    run.counter = _LeaderCounter(self, run, leader, plan)
                    stack.callback(run.counter.close)  # before the leader's snapshot closes
                with _system_allocator():
                    results = self._read_all(run, plan, progress)
                if not shared or run.count_each:
                    counted = sum(r.count or 0 for r in results)
                    if shared and counted != source_count:  # one snapshot: they must agree
                        raise EngineError(
                            f"chunk counts add up to {counted}, the window counted {source_count}",
                            table=entry.target_table_name,
                        )
                    source_count = counted
        details: dict[str, object] = {
            "snapshot": "exported" if shared else "per chunk",
            "workers": min(self.workers, len(plan)),
            "fenced": run.fence,
        }
        return _result(self.name, info, (results, source_count, null_count, details), started)

    def _start_checkpoint(self, run: _Run, plan: list[Chunk], null_count: int, snapshot: str) -> None:
        """Write the plan before any chunk is read; without an encodable plan, no checkpoint."""
        try:
            chunks = [c.to_json() for c in plan]
        except TypeError as exc:
            log.warning("table %s: chunk plan not resumable: %s", run.info.entry.target_table_name, exc)
            return
        run.checkpoint = {
            "version": CHECKPOINT_VERSION,
            **_identity(run),
            "snapshot": snapshot,
            "nullCount": null_count,
            "plan": chunks,
            "done": {},
        }
        run.count_each = True
        run.save()

    def _resume(
        self,
        source: Source,
        info: TableInfo,
        window: Window,
        lake: Lake,
        attempt_id: str,
        keys: list[sa.ColumnElement[Any]],
        progress: Progress | None,
    ) -> tuple[list[ChunkResult], int, int, dict[str, object]] | None:
        """Finish the attempt's checkpointed plan: read only the chunks it does not list as done.

        None when there is no checkpoint; one that does not match this window, key order or
        schema is discarded with the attempt's staging, and the load starts over.
        """
        entry = info.entry
        doc = lake.read_staged_json(entry.source_schema, entry.target_table_name, attempt_id, CHECKPOINT)
        if doc is None:
            return None
        run = _Run(source, info, window, lake, attempt_id, None, keys, count_each=True)
        if (
            not isinstance(doc, dict)
            or doc.get("version") != CHECKPOINT_VERSION
            or any(doc.get(k) != v for k, v in _identity(run).items())
        ):
            log.warning(
                "table %s: checkpoint of attempt %s does not match the window; starting over",
                entry.target_table_name,
                attempt_id,
            )
            lake.abandon(entry.source_schema, entry.target_table_name, attempt_id)
            return None
        run.checkpoint = doc
        plan = [Chunk.from_json(c) for c in doc["plan"]]
        staging = lake.staging_dir(entry.source_schema, entry.target_table_name, attempt_id)
        fs = lake.filesystem
        done: list[ChunkResult] = []
        kept: set[str] = set()
        for chunk in plan:
            rec = doc["done"].get(str(chunk.index))
            if rec is None:
                continue
            files = [
                StagedFile(f"{staging}/{f['name']}", f["name"], int(f["rows"]), int(f["bytes"]))
                for f in rec["files"]
            ]
            infos = fs.get_file_info([f.path for f in files])
            if any(
                i.type != pafs.FileType.File or i.size != f.bytes for f, i in zip(files, infos, strict=True)
            ):
                del doc["done"][str(chunk.index)]  # a lost file: read that chunk again
                continue
            kept.update(f.name for f in files)
            done.append(ChunkResult(chunk, int(rec["rows"]), rec["count"], files, 0.0, 0))
        # Partial files of unfinished chunks (a kill mid-chunk) are not part of the result.
        pattern = part_pattern(attempt_id)
        _delete(
            fs,
            [
                i.path
                for i in fs.get_file_info(pafs.FileSelector(staging, allow_not_found=True))
                if pattern.fullmatch(i.base_name) and i.base_name not in kept
            ],
        )
        run.save()
        run.rows = sum(r.rows for r in done)
        todo = [c for c in plan if str(c.index) not in doc["done"]]
        log.info(
            "table %s: resuming attempt %s, %d of %d chunks left",
            entry.target_table_name,
            attempt_id,
            len(todo),
            len(plan),
        )
        with _system_allocator():
            results = done + (self._read_all(run, todo, progress) if todo else [])
        details: dict[str, object] = {
            "snapshot": "resumed: per chunk",
            "workers": min(self.workers, max(1, len(todo))),
            "resumed": {"kept": sorted(r.chunk.index for r in done), "read": [c.index for c in todo]},
        }
        return results, sum(r.count or 0 for r in results), int(doc.get("nullCount") or 0), details

    def _plan(self, leader: Snapshot, run: _Run, source_count: int, shared: bool) -> list[Chunk]:
        """How many ranges, and their boundaries, chosen inside the leader's snapshot."""
        null_chunk = self._needs_null_chunk(run.info, run.window)
        null_keys = int(leader.scalar(self._count(run, Chunk(0, null_keys=True))) or 0) if null_chunk else 0
        ordered = source_count - null_keys
        k = max(1, min(self.chunks, ordered // self.min_rows_per_chunk))
        if k == 1:
            return [Chunk(0, whole=True)]
        inner_edges = (
            self._value_edges(leader, run, k)
            if len(run.keys) == 1
            else self._boundaries(leader, run, ordered, k)
        )
        if len(run.keys) == 1 and run.source.dialect_name == "postgresql":
            table_rows = self._table_rows(leader, run)
            run.fence = table_rows is None or k * ordered >= FENCE_SHARE * table_rows
        k = len(inner_edges) + 1
        if k == 1:
            return [Chunk(0, whole=True)]
        edges: list[tuple[Any, ...] | None] = [None, *inner_edges, None]
        plan = [Chunk(i, edges[i], edges[i + 1]) for i in range(k)]
        if null_chunk and (null_keys or not shared):  # per-chunk snapshots may see one appear
            plan.append(Chunk(k, null_keys=True))
        return plan

    def _needs_null_chunk(self, info: TableInfo, window: Window) -> bool:
        """A NULL key can only occur in a nullable primary-key column or a static window's cursor."""
        pk_nullable = any(info.schema.field(k).nullable for k in info.entry.primary_key)
        return pk_nullable or not window.incremental

    # -- SQL -----------------------------------------------------------------------------------
    def _condition(self, run: _Run, chunk: Chunk) -> sa.ColumnElement[bool]:
        pred = run.source.predicate(run.info, run.window)
        if chunk.whole:
            return pred
        if chunk.null_keys:
            return sa.and_(pred, sa.or_(*(k.is_(None) for k in run.keys)))
        parts = [pred, *(k.is_not(None) for k in run.keys)]
        if chunk.low is not None:
            parts.append(_above(run, chunk.low))
        if chunk.high is not None:
            parts.append(sa.not_(_above(run, chunk.high)))
        return sa.and_(*parts)

    def _count(self, run: _Run, chunk: Chunk) -> sa.Select[Any]:
        fenced = self._fenced(run, chunk)
        if fenced is not None:
            inner, pred = fenced
            return sa.select(sa.func.count()).select_from(inner).where(pred)
        return sa.select(sa.func.count()).select_from(run.info.table).where(self._condition(run, chunk))

    def _select(self, run: _Run, chunk: Chunk) -> sa.Select[Any]:
        fenced = self._fenced(run, chunk)
        if fenced is not None:
            inner, pred = fenced
            return sa.select(*run.source.read_columns(run.info, inner.c)).where(pred)
        return sa.select(*run.source.read_columns(run.info)).where(self._condition(run, chunk))

    def _fenced(self, run: _Run, chunk: Chunk) -> tuple[sa.Subquery, sa.ColumnElement[bool]] | None:
        """PostgreSQL, integer key: `SELECT .. FROM (key range OFFSET 0) WHERE window`, or None.

        Measured cause of the chunked engine's loss: the window's bounds are bound as scalar
        subqueries (exact text casts), so the planner cannot see the window's size, guesses a
        few thousand rows and scans the CURSOR's index for every chunk, filtering the key range
        row by row. Each of k chunks then reads the whole window (2M rows, 2 chunks: 0.62 s of
        server time per chunk instead of 0.25 s). The key range with literal integer bounds
        (exact: Python ints) under an `OFFSET 0` fence is planned on its own, as a range scan
        of the key's index; the window predicate filters the rows of that range. That reads
        the table's rows in the range whether or not they are in the window, so `_plan` only
        fences when the window holds most of the table (`FENCE_SHARE`), i.e. large loads.
        """
        if not run.fence or chunk.whole or chunk.null_keys:
            return None
        (key,) = run.keys
        parts: list[sa.ColumnElement[bool]] = []
        if chunk.low is not None:
            parts.append(key > sa.literal_column(str(int(chunk.low[0]))))
        if chunk.high is not None:
            parts.append(key <= sa.literal_column(str(int(chunk.high[0]))))
        inner = (
            sa.select(*run.info.table.columns)
            .where(key.is_not(None), *parts)
            .offset(sa.literal_column("0"))
            .subquery("chunk_range")
        )
        pred = ClauseAdapter(inner).traverse(run.source.predicate(run.info, run.window))
        return inner, pred

    def _table_rows(self, snap: Snapshot, run: _Run) -> float | None:
        """PostgreSQL's estimate of the table's rows (None: never analyzed)."""
        table = run.info.table
        cls = sa.table("pg_class", sa.column("reltuples"), sa.column("relname"), sa.column("relnamespace"))
        ns = sa.table("pg_namespace", sa.column("oid"), sa.column("nspname"))
        stmt = (
            sa.select(cls.c.reltuples)
            .select_from(cls.join(ns, ns.c.oid == cls.c.relnamespace))
            .where(cls.c.relname == table.name, ns.c.nspname == (table.schema or "public"))
        )
        value = snap.scalar(stmt)
        return None if value is None or float(value) < 0 else float(value)

    def _value_edges(self, snap: Snapshot, run: _Run, k: int) -> list[tuple[Any, ...]]:
        """Equal-width ranges of an integer key from MIN/MAX on its index: no sort of the window.

        Any partition of a unique key puts every row in exactly one chunk; sequential ids make
        the ranges even for initial loads, which are the windows large enough to split.
        """
        (key,) = run.keys
        low, high = snap.rows(sa.select(sa.func.min(key), sa.func.max(key)).select_from(run.info.table))[0]
        if low is None or high is None:
            return []
        low, high = int(low), int(high)
        return [(e,) for e in sorted({low + (high - low) * i // k for i in range(1, k)}) if low <= e < high]

    def _boundaries(self, snap: Snapshot, run: _Run, ordered: int, k: int) -> list[tuple[Any, ...]]:
        """The key tuples at row numbers n/k, 2n/k, ... of the ordered window (inclusive highs)."""
        cols = [key.label(f"k{i}") for i, key in enumerate(run.keys)]
        rn = sa.func.row_number().over(order_by=run.keys).label("rn")
        inner = sa.select(*cols, rn).where(self._condition(run, Chunk(0))).subquery("ordered_keys")
        picked = [inner.c[f"k{i}"] for i in range(len(run.keys))]
        if run.source.dialect_name == "postgresql":  # as text, cast back when bound: exact for every type
            picked = [sa.cast(c, sa.Text) for c in picked]
        positions = sorted({max(1, ordered * i // k) for i in range(1, k)})
        stmt = (
            sa.select(*picked)
            .where(inner.c.rn.in_([sa.literal_column(str(int(p))) for p in positions]))
            .order_by(inner.c.rn)
        )
        return [tuple(row) for row in snap.rows(stmt)]

    # -- reading -------------------------------------------------------------------------------
    def _read_all(self, run: _Run, plan: list[Chunk], progress: Progress | None) -> list[ChunkResult]:
        results: list[ChunkResult] = []
        reported = -1
        with ThreadPoolExecutor(
            max_workers=min(self.workers, len(plan)), thread_name_prefix="delta-chunk"
        ) as pool:
            futures: list[Future[ChunkResult]] = [pool.submit(self._read_chunk, run, c, None) for c in plan]
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                    if progress and run.rows != reported:
                        reported = run.rows
                        progress(reported)  # on the caller's thread: it renews the lease
                    for f in done:
                        if f.exception() is not None:
                            raise f.exception()  # type: ignore[misc]
                        results.append(f.result())
            except BaseException as exc:
                run.stop.set()
                wait(pending)
                if run.checkpoint is not None:
                    # Keep the finished chunks (listed in the checkpoint) for a later run to resume.
                    done = run.checkpoint["done"]
                    for index, files in run.files.items():
                        if str(index) not in done:
                            _delete(run.lake.filesystem, files)
                else:
                    for files in run.files.values():
                        _delete(run.lake.filesystem, files)
                    run.lake.abandon(
                        run.info.entry.source_schema, run.info.entry.target_table_name, run.attempt_id
                    )
                if isinstance(exc, EngineError | KeyboardInterrupt | SystemExit):
                    raise
                raise EngineError(
                    f"chunked read failed: {type(exc).__name__}: {exc}",
                    table=run.info.entry.target_table_name,
                ) from exc
        return results

    def _read_chunk(
        self,
        run: _Run,
        chunk: Chunk,
        leader: Snapshot | None,
        progress: Progress | None = None,
        leader_count: int | None = None,
    ) -> ChunkResult:
        """Read one chunk, retrying it alone; its partial files go before each retry.

        `progress` only on the caller's thread (the leader's single chunk): it renews the lease.
        A chunk read in the leader's snapshot is the whole window: its count is `leader_count`.
        """
        table = run.info.entry.target_table_name
        last: BaseException | None = None
        for attempt in range(1 + self.retries):
            if run.stop.is_set():
                raise _Cancelled()
            started = time.monotonic()
            files = run.files.setdefault(chunk.index, [])
            rows = 0
            try:
                with self._snapshot(run, leader) as snap:
                    self._chunk_started(chunk, attempt)
                    if leader is not None:
                        count = leader_count if run.count_each else None
                    elif _tallies(snap, run.info.schema):
                        count = _SERVED  # the server's tally of this chunk's stream, after it
                    elif run.snapshot_id and not run.count_each:
                        count = None  # the leader counted the whole exported snapshot
                    elif run.counter is not None:
                        count = -1  # counted on the leader's connection (`_LeaderCounter`)
                    else:
                        count = int(snap.scalar(self._count(run, chunk)) or 0)
                    batch_rows = self._batch_share()
                    batches = snap.stream(self._select(run, chunk), run.info.schema, batch_rows)
                    with self._writer(run, files) as writer:
                        for batch in _prefetch(batches, self._queue_share()):
                            if run.stop.is_set():
                                raise _Cancelled()
                            writer.write_batch(batch)
                            rows += batch.num_rows
                            run.add(batch.num_rows)
                            self._chunk_batch(chunk, attempt, rows)
                            if progress:
                                progress(run.rows)
                        staged = writer.close()
                    if count == _SERVED:
                        count = self._tally(run, chunk, snap)
                if count == -1 and run.counter is not None:
                    count = run.counter.count(chunk)
                if count is not None and rows != count:
                    raise EngineError(
                        f"chunk {chunk.index} read {rows} rows, its snapshot counted {count}", table=table
                    )
                result = ChunkResult(chunk, rows, count, staged, time.monotonic() - started, attempt + 1)
                run.chunk_done(result)
                return result
            except _Cancelled:
                raise
            except Exception as exc:  # retried alone; the other chunks keep their files
                last = exc
                run.add(-rows)
                _delete(run.lake.filesystem, files)
                files.clear()
                if leader is not None:
                    break  # the leader's snapshot may be unusable after an error
        raise EngineError(
            f"chunk {chunk.index} failed after {self.retries + 1} attempts: {type(last).__name__}: {last}",
            table=table,
        ) from last

    def _tally(self, run: _Run, chunk: Chunk, snap: Snapshot) -> int:
        """The server's count of the rows this chunk's stream sent, read in its still-open snapshot."""
        if hasattr(snap, "copied_rows"):
            copied = snap.copied_rows
            # None: the rows went through ADBC after all (a type the COPY reader does not take).
            return int(snap.scalar(self._count(run, chunk)) or 0) if copied is None else int(copied)
        served = snap.served_rows  # type: ignore[attr-defined]
        if served is None:
            table = run.info.entry.target_table_name
            raise EngineError(f"chunk {chunk.index}: no row count from the server", table=table)
        return int(served)

    def _batch_share(self) -> int:
        """One concurrent chunk's read batch: half its share of a stream's batch, at least
        `_MIN_CHUNK_BATCH`. A chunk's batches wait in its own queue while another chunk's
        writer runs, so W chunks hold more batches at once than one stream does (SQLite 2M
        rows, 2 workers, `memory_profile.py --chunk-rows`: peak ~320-337 MB with 1/W of the
        batch and a queue of 2, ~270-300 MB with 1/2W and a queue of 1, at the same speed).
        PostgreSQL and MySQL binary reads cap their batches lower anyway."""
        if self.workers <= 1:
            return self.batch_rows
        return min(self.batch_rows, max(_MIN_CHUNK_BATCH, self.batch_rows // (2 * self.workers)))

    def _queue_share(self) -> int:
        """Batches a chunk's reader may run ahead of its writer: the stream's queue when one
        chunk reads at a time, else one (the other chunks keep the cores busy meanwhile)."""
        return self.queue_depth if self.workers <= 1 else 1

    def _share(self, rows: int, floor: int) -> int:
        """One concurrent chunk's share of a per-stream buffer size."""
        return min(rows, max(floor, rows // max(1, self.workers)))

    @contextlib.contextmanager
    def _snapshot(self, run: _Run, leader: Snapshot | None) -> Iterator[Snapshot]:
        if leader is not None:
            yield leader
            return
        with open_snapshot(
            run.source.engine,
            run.source.dialect,
            table=run.info.entry.target_table_name,
            attach=run.source.attach,
            snapshot_id=run.snapshot_id,
        ) as snap:
            yield snap

    def _writer(self, run: _Run, files: list[str]) -> StagedWriter:
        """A lake writer whose file paths are recorded, so a failed chunk can delete just its own."""
        entry = run.info.entry
        writer = run.lake.open_writer(
            entry.source_schema,
            entry.target_table_name,
            run.attempt_id,
            run.info.schema,
            row_group_rows=self._share(self.row_group_rows, _MIN_CHUNK_ROW_GROUP),
        )
        reserve: Callable[[], tuple[str, str]] = writer._reserve  # noqa: SLF001

        def tracked() -> tuple[str, str]:
            path, name = reserve()
            files.append(path)
            return path, name

        writer._reserve = tracked  # noqa: SLF001
        return writer


@contextlib.contextmanager
def _system_allocator() -> Iterator[None]:
    """Arrow allocates from the C library while chunks run in parallel, then as before.

    Arrow's default allocator (mimalloc) keeps the pages each thread freed for that thread's
    reuse; W chunks run 2W reader and writer threads, so a chunked load held several of those
    reserves at once. glibc (its mmap threshold capped at 1 MB, `_cap_malloc_retention`) gives
    a batch's buffers back as they are freed. Measured, 2M rows, 2 workers, peak RSS: SQLite
    346-377 -> 286-301 MB, PostgreSQL 254-274 -> 213-222 MB, at the same speed. A buffer
    allocated here is freed by the pool it came from, whatever the default is by then.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _tallies(snap: Snapshot, schema: pa.Schema) -> bool:
    """Whether a stream on `snap` comes with the server's own count of the rows it sent."""
    copies = getattr(snap, "copies", None)
    return copies(schema) if copies is not None else hasattr(snap, "served_rows")


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's cpuset), not the host's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _above(run: _Run, bound: tuple[Any, ...]) -> sa.ColumnElement[bool]:
    """`keys > bound` as a row-value comparison, or its expansion where row values are missing."""
    values = [_bind(run, key, value) for key, value in zip(run.keys, bound, strict=True)]
    if run.source.dialect_name in ROW_VALUE_DIALECTS:
        return sa.tuple_(*run.keys) > sa.tuple_(*values)
    terms = []
    for i, key in enumerate(run.keys):
        equal = [run.keys[j] == values[j] for j in range(i)]
        terms.append(sa.and_(*equal, key > values[i]))
    return sa.or_(*terms)


def _bind(run: _Run, key: sa.ColumnElement[Any], value: Any) -> sa.ColumnElement[Any]:
    if run.source.dialect_name == "postgresql":  # read as text in the snapshot, cast back exactly
        # once per query (a scalar subquery), not once per row: text casts are only STABLE
        return sa.select(sa.cast(sa.literal(str(value), sa.Text), key.type)).scalar_subquery()
    return sa.literal(value, key.type)


def _integer_key(info: TableInfo) -> bool:
    keys = info.entry.primary_key
    return len(keys) == 1 and pa.types.is_integer(info.schema.field(keys[0]).type)


def _delete(fs: pafs.FileSystem, paths: list[str]) -> None:
    for path in list(paths):
        with contextlib.suppress(FileNotFoundError):
            if fs.get_file_info(path).type == pafs.FileType.File:
                fs.delete_file(path)


def _result(
    name: str,
    info: TableInfo,
    outcome: tuple[list[ChunkResult], int, int, dict[str, object]],
    started: float,
) -> EngineResult:
    results, source_count, null_count, details = outcome
    ordered = sorted(results, key=lambda r: r.chunk.index)
    details = {
        **details,
        "chunks": [
            {
                "index": r.chunk.index,
                "rows": r.rows,
                "ms": int(r.seconds * 1000),
                "attempts": r.attempts,
                **r.chunk.describe(),
            }
            for r in ordered
        ],
    }
    return EngineResult(
        name,
        sum(r.rows for r in results),
        source_count,
        null_count,
        [f for r in ordered for f in r.staged],
        info.schema,
        time.monotonic() - started,
        details,
    )


def _identity(run: _Run) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the exact window, key order and schema."""
    return {
        "table": run.info.entry.target_table_name,
        "window": run.window.to_json(),
        "keys": [str(k.name) for k in run.keys],  # type: ignore[attr-defined]
        "dialect": run.source.dialect_name,
        "schema": schema_to_json(run.info.schema),
    }


def _with_details(result: EngineResult, details: dict[str, object]) -> EngineResult:
    result.details = {**result.details, **details}
    return result
