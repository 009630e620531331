"""The chunked engine on real SQLite, PostgreSQL and MariaDB: exactly the streaming engine's rows.

Chunk edges fall inside tie groups on the cursor (split by the composite key), NULL keys get
their own chunk, a failed chunk is retried alone, and on PostgreSQL every chunk reads the
leader's exported snapshot.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from delta_platform.control_entry import ControlEntry
from delta_platform.core.operators import Operator
from delta_platform.core.watermark import Kind, Watermark
from delta_platform.core.window import Bound, Window
from delta_platform.engine import ChunkedEngine, StreamingEngine
from delta_platform.engine.base import Engine, EngineResult
from delta_platform.engine.chunked import Chunk
from delta_platform.errors import EngineError
from delta_platform.lake import Lake
from delta_platform.source import Source, TableInfo
from delta_platform_tests.items import gte_item
from delta_platform_tests.scenarios.harness import Db, db_fixture, make_source  # noqa: F401

T0 = datetime(2024, 3, 1, 12, 0, 0, 123456)
LOW = Bound(Watermark(Kind.TIMESTAMP, T0), inclusive=False)  # rows stamped T0 are excluded
HIGH = Bound(Watermark(Kind.TIMESTAMP, T0 + timedelta(days=1)), inclusive=True)
WINDOW = Window(Operator.GTE, low=LOW, high=HIGH)


def _stamp(db: Db, value: datetime) -> object:
    """SQLite keeps timestamps as canonical microsecond text; the servers take datetimes."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if db.name == "sqlite" else value


def _create(db: Db, *, nullable_key: bool = False) -> None:
    """`t(a, b, at, val)` keyed on (a, b); with `nullable_key` the key is only the entry's attribute."""
    key = "" if nullable_key else ", PRIMARY KEY (a, b)"
    null = "" if nullable_key else " NOT NULL"
    suffix = " ENGINE=InnoDB" if db.name == "mariadb" else ""
    db.execute(
        f"CREATE TABLE {db.qualified('t')} (a {db.t('int')}{null}, b VARCHAR(20){null}, "
        f"at {db.t('ts')}, val VARCHAR(20){key}){suffix}"
    )


def _insert(db: Db, rows: list[tuple[Any, Any, datetime | None]]) -> None:
    db.execute(
        f"INSERT INTO {db.qualified('t')} (a, b, at, val) VALUES (:a, :b, :at, 'orig')",
        [{"a": a, "b": b, "at": None if at is None else _stamp(db, at)} for a, b, at in rows],
    )


def _info(db: Db, source: Source, *, primary_key: str | None = "a, b") -> TableInfo:
    item: dict[str, Any] = {
        "targetTableName": "t",
        "activeflag": "true",
        "sourceSchema": db.schema,
        "sourceTable": "t",
        "filtercolumn": "at",
        "filteroperator": "gte",
        "startvalue": "2000-01-01 00:00:00",
        "ouputs3Prefix": "/unused",
    }
    if primary_key:
        item["primaryKey"] = primary_key
    return source.describe(ControlEntry.from_item(item))


@pytest.fixture
def source(db: Db) -> Iterator[Source]:
    s = make_source(db)
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def _run(
    engine: Engine, db: Db, source: Source, lake: Lake, info: TableInfo, window: Window = WINDOW
) -> tuple[EngineResult, list[tuple[Any, ...]]]:
    result = engine.run(source, info, window, lake, uuid.uuid4().hex[:12])
    rows = [r for f in result.staged for r in pq.read_table(f.path).to_pylist()]
    keyed = [(r["a"], r["b"], r["at"], r["val"]) for r in rows]
    return result, keyed


def _sorted(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(rows, key=lambda r: tuple((x is None, x if x is not None else 0) for x in r))


def _check_exact(
    db: Db, source: Source, lake: Lake, info: TableInfo, engine: ChunkedEngine, window: Window = WINDOW
) -> EngineResult:
    """The chunked rows equal the streaming engine's, none twice, and the counts agree."""
    expected_result, expected = _run(StreamingEngine(batch_rows=500), db, source, lake, info, window)
    result, got = _run(engine, db, source, lake, info, window)
    assert result.engine == "chunked"
    assert len(got) == len(set(got)), "a row was read twice"
    assert _sorted(got) == _sorted(expected)
    assert result.rows_read == result.source_count == expected_result.source_count == len(expected)
    assert result.null_count == expected_result.null_count
    return result


def _ranges(result: EngineResult) -> list[dict[str, Any]]:
    chunks = result.details["chunks"]
    assert isinstance(chunks, list)
    return chunks


def test_same_rows_as_streaming_with_exclusive_low(db: Db, source: Source, lake: Lake) -> None:
    """Ties at the exclusive low are left out by every chunk; ties inside are split by the key."""
    _create(db)
    rows = [(i, f"k{i % 7}", T0) for i in range(50)]  # exactly at the low: excluded
    rows += [(i, f"k{i % 7}", T0 + timedelta(seconds=i // 40)) for i in range(50, 2050)]
    rows += [(i, "late", HIGH.value.value + timedelta(microseconds=1)) for i in range(20)]
    rows += [(i, "nul", None) for i in range(10)]  # NULL cursor: counted, never read
    _insert(db, rows)
    info = _info(db, source)
    result = _check_exact(
        db, source, lake, info, ChunkedEngine(chunks=4, workers=2, min_rows_per_chunk=100, batch_rows=97)
    )
    assert result.rows_read == 2000 and result.null_count == 10
    chunks = _ranges(result)
    assert len(chunks) == 4 and all(c["rows"] > 0 for c in chunks)
    assert sum(c["rows"] for c in chunks) == 2000


def test_heavy_ties_on_the_cursor_across_chunk_edges(db: Db, source: Source, lake: Lake) -> None:
    """10,000 rows share one cursor value: every edge falls inside the tie, split by (a, b)."""
    _create(db)
    tie = T0 + timedelta(hours=1)
    rows = [(i // 3, f"b{i % 3:02d}", tie) for i in range(10_000)]
    rows += [(i, "x", T0 + timedelta(minutes=5)) for i in range(100)]
    rows += [(i, "y", T0 + timedelta(hours=2)) for i in range(100)]
    _insert(db, rows)
    info = _info(db, source)
    result = _check_exact(
        db, source, lake, info, ChunkedEngine(chunks=5, workers=3, min_rows_per_chunk=1000, batch_rows=1000)
    )
    chunks = _ranges(result)
    assert len(chunks) == 5
    edges = [c["high"] for c in chunks[:-1]]
    assert all(str(tie) in e for e in edges), edges  # every edge inside the tie group
    assert min(c["rows"] for c in chunks) >= 1000


def test_null_key_values_get_their_own_chunk(db: Db, source: Source, lake: Lake) -> None:
    """A nullable key column: rows whose key is NULL are read once, in the NULL-key chunk."""
    _create(db, nullable_key=True)
    rows: list[tuple[Any, Any, datetime | None]] = [
        (i, f"k{i % 5}", T0 + timedelta(seconds=1 + i % 13)) for i in range(1, 3001)
    ]
    rows += [(None, f"n{i}", T0 + timedelta(seconds=1 + i % 13)) for i in range(30)]
    rows += [(i, None, T0 + timedelta(seconds=3)) for i in range(30)]
    rows += [(None, None, T0 + timedelta(seconds=4)) for _ in range(3)]  # duplicate NULL keys
    _insert(db, rows)
    info = _info(db, source)
    expected_result, expected = _run(StreamingEngine(), db, source, lake, info)
    result, got = _run(ChunkedEngine(chunks=3, min_rows_per_chunk=500), db, source, lake, info)
    assert Counter(got) == Counter(expected)  # duplicates of a NULL key kept exactly
    assert result.rows_read == result.source_count == 3063
    chunks = _ranges(result)
    assert chunks[-1]["range"] == "a key column IS NULL" and chunks[-1]["rows"] == 63


def test_small_window_and_no_primary_key_read_as_one_stream(db: Db, source: Source, lake: Lake) -> None:
    _create(db)
    _insert(db, [(i, "b", T0 + timedelta(seconds=i)) for i in range(1, 101)])
    small = _check_exact(db, source, lake, _info(db, source), ChunkedEngine(min_rows_per_chunk=1000))
    assert len(_ranges(small)) == 1
    result, got = _run(
        ChunkedEngine(min_rows_per_chunk=10), db, source, lake, _info(db, source, primary_key=None)
    )
    assert result.engine == "streaming" and len(got) == result.source_count == 100


class _Flaky(ChunkedEngine):
    """Fails chunk `target` on its first `failures` attempts, after its first batch was written."""

    def __init__(self, target: int, failures: int, **kw: Any):
        super().__init__(**kw)
        self.target, self.failures = target, failures
        self.starts: Counter[int] = Counter()

    def _chunk_started(self, chunk: Chunk, attempt: int) -> None:
        self.starts[chunk.index] += 1

    def _chunk_batch(self, chunk: Chunk, attempt: int, rows: int) -> None:
        if chunk.index == self.target and attempt < self.failures:
            raise ConnectionError(f"injected failure in chunk {chunk.index}")


def _staged_files(lake: Lake, info: TableInfo) -> list[str]:
    root = Path(lake.table_root(info.entry.source_schema, info.entry.target_table_name)) / "_staging"
    return sorted(p.name for p in root.rglob("*.parquet")) if root.exists() else []


def test_failed_chunk_is_retried_alone(db: Db, source: Source, lake: Lake) -> None:
    _create(db)
    _insert(db, [(i, f"k{i % 3}", T0 + timedelta(seconds=i // 50)) for i in range(1, 4001)])
    info = _info(db, source)
    engine = _Flaky(
        target=1, failures=1, chunks=4, workers=2, min_rows_per_chunk=500, batch_rows=200, row_group_rows=200
    )
    result = _check_exact(db, source, lake, info, engine)
    assert engine.starts == {0: 1, 1: 2, 2: 1, 3: 1}  # finished chunks were not re-read
    assert [c["attempts"] for c in _ranges(result)] == [1, 2, 1, 1]
    staged = {f.name for f in result.staged}
    assert set(_staged_files(lake, info)) >= staged
    attempt_dir = Path(result.staged[0].path).parent
    assert sorted(p.name for p in attempt_dir.glob("*.parquet")) == sorted(staged)  # partials deleted


def test_chunk_failing_beyond_retries_leaves_nothing(db: Db, source: Source, lake: Lake) -> None:
    _create(db)
    _insert(db, [(i, "k", T0 + timedelta(seconds=i // 50)) for i in range(1, 4001)])
    info = _info(db, source)
    engine = _Flaky(
        target=2,
        failures=99,
        chunks=4,
        workers=2,
        min_rows_per_chunk=500,
        batch_rows=200,
        row_group_rows=200,
        retries=2,
    )
    with pytest.raises(EngineError, match="chunk 2 failed after 3 attempts"):
        engine.run(source, info, WINDOW, lake, "attempt0001")
    assert engine.starts[2] == 3
    assert _staged_files(lake, info) == []


class _Meddler(ChunkedEngine):
    """Before chunk 0's first query, another session changes, adds and deletes rows and commits."""

    def __init__(self, db: Db, **kw: Any):
        super().__init__(**kw)
        self.db = db
        self.done = False

    def _chunk_started(self, chunk: Chunk, attempt: int) -> None:
        if chunk.index == 0 and not self.done:
            self.done = True
            t = self.db.qualified("t")
            with self.db.engine.begin() as conn:
                conn.execute(sa.text(f"UPDATE {t} SET val = 'changed'"))
                conn.execute(sa.text(f"DELETE FROM {t} WHERE a = 7"))
                conn.execute(
                    sa.text(f"INSERT INTO {t} (a, b, at, val) VALUES (-1, 'new', :at, 'new')"),
                    {"at": T0 + timedelta(seconds=1)},
                )


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_postgres_chunks_read_the_exported_snapshot(db: Db, source: Source, lake: Lake) -> None:
    """Writes committed while chunks are read are invisible to every chunk and to the count."""
    _create(db)
    rows = [(i, f"k{i % 4}", T0 + timedelta(seconds=1 + i // 100)) for i in range(1, 3001)]
    _insert(db, rows)
    info = _info(db, source)
    engine = _Meddler(db, chunks=3, workers=1, min_rows_per_chunk=500, batch_rows=250)
    result, got = _run(engine, db, source, lake, info)
    assert engine.done and result.details["snapshot"] == "exported"
    assert result.rows_read == result.source_count == 3000
    assert _sorted(got) == _sorted([(a, b, at, "orig") for a, b, at in rows])
    assert db.scalar(f"SELECT count(*) FROM {db.qualified('t')} WHERE val = 'changed'") == 2999


def test_progress_reports_the_total_so_far(db: Db, source: Source, lake: Lake) -> None:
    _create(db)
    _insert(db, [(i, "k", T0 + timedelta(seconds=1 + i // 50)) for i in range(1, 3001)])
    seen: list[int] = []
    engine = ChunkedEngine(chunks=3, workers=3, min_rows_per_chunk=500, batch_rows=100)
    result = engine.run(source, _info(db, source), WINDOW, lake, "attempt0002", progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == result.rows_read == 3000


def test_a_delta_task_publishes_the_chunks(db: Db, tmp_path: Path) -> None:
    """Through DeltaTask: verification and publish accept the chunks' staged files as one window."""
    from delta_platform_tests.scenarios.harness import Rig

    rig = Rig(db, tmp_path, engine_for=lambda e: ChunkedEngine(chunks=3, min_rows_per_chunk=200))
    try:
        _create(db)
        _insert(db, [(i, f"k{i % 3}", T0 + timedelta(seconds=i // 100)) for i in range(1, 1201)])
        rig.entry("t", "t", "at", "2024-03-01 00:00:00", primaryKey="a, b")
        loaded = rig.run("t", "p1")
        assert loaded.engine == "chunked" and loaded.rows == loaded.source_count == 1200
        assert sorted((r["a"], r["b"]) for r in rig.partition("t", "p1")) == sorted(
            (i, f"k{i % 3}") for i in range(1, 1201)
        )
    finally:
        rig.close()


def _w_entry(db: Db) -> ControlEntry:
    """Table `w` of `db`, loaded on `at`, chunked on `id`."""
    return ControlEntry.from_item(gte_item(
        targetTableName="w", sourceSchema=db.schema, sourceTable="w", filtercolumn="at",
        startvalue="2000-01-01 00:00:00", primaryKey="id",
    ))


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_postgres_integer_key_chunks_scan_their_key_range(db: Db, source: Source, lake: Lake) -> None:
    """A window holding the table: each chunk is a fenced range of the key's index, rows exact.

    Without the fence the planner scans the cursor's index for every chunk (it cannot see the
    window's bound values) and every chunk reads the whole window.
    """
    db.create("w", {"id": "pk", "at": "ts", "v": "int"})
    db.insert("w", [{"id": i, "at": T0 + timedelta(seconds=i % 500), "v": i} for i in range(1, 6001)])
    db.execute(f"CREATE INDEX w_at ON {db.qualified('w')} (at)")
    db.execute(f"ANALYZE {db.qualified('w')}")
    info = source.describe(_w_entry(db))
    window = Window(Operator.GTE, low=Bound(Watermark(Kind.TIMESTAMP, T0), False), high=HIGH)
    engine = ChunkedEngine(chunks=3, workers=2, min_rows_per_chunk=500, batch_rows=700)
    result = engine.run(source, info, window, lake, "fenced000001")
    assert result.details["fenced"] is True
    got = sorted(r["id"] for f in result.staged for r in pq.read_table(f.path, columns=["id"]).to_pylist())
    expected = [i for i in range(1, 6001) if i % 500]  # at == T0 is below the exclusive low
    assert got == expected and result.rows_read == result.source_count == len(expected)
    # The chunk's query is planned on the key's index, not the cursor's.
    from delta_platform.engine.chunked import _Run

    run = _Run(source, info, window, lake, "x", None, [info.table.c.id], fence=True)
    stmt = engine._select(run, Chunk(1, (2000,), (4000,)))
    sql = str(stmt.compile(dialect=source.engine.dialect, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.execute(sa.text(f"EXPLAIN {sql}")))
    assert "w_pkey" in plan and "w_at" not in plan, plan


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_postgres_small_share_of_the_table_is_not_fenced(db: Db, source: Source, lake: Lake) -> None:
    """A window that is a small share of an analyzed table keeps the planner's own plan."""
    db.create("w", {"id": "pk", "at": "ts", "v": "int"})
    db.insert("w", [{"id": i, "at": T0 - timedelta(days=1), "v": i} for i in range(1, 20001)])
    db.insert("w", [{"id": i, "at": T0 + timedelta(seconds=i), "v": i} for i in range(20001, 21001)])
    db.execute(f"ANALYZE {db.qualified('w')}")
    info = source.describe(_w_entry(db))
    engine = ChunkedEngine(chunks=2, workers=2, min_rows_per_chunk=100)
    result = engine.run(source, info, WINDOW, lake, "unfenced0001")
    assert result.details["fenced"] is False and result.rows_read == result.source_count == 1000


class _CountThreads(ChunkedEngine):
    """Records the thread each chunk count runs on."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.count_threads: list[str] = []

    def _count(self, run: Any, chunk: Chunk) -> Any:
        import threading

        if not chunk.whole:
            self.count_threads.append(threading.current_thread().name)
        return super()._count(run, chunk)


@pytest.fixture
def adbc_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL rows through ADBC, as without the binary COPY reader (whose tag counts them)."""
    from delta_platform.source import snapshot

    monkeypatch.setattr(snapshot, "PG_COPY", "0")


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_postgres_checkpointed_chunks_are_counted_on_the_leader(
    db: Db, source: Source, lake: Lake, adbc_reads: None
) -> None:
    """Checkpointed: every chunk's count is taken in the exported snapshot, off the chunks' path."""
    from delta_platform.engine.chunked import CHECKPOINT

    _create(db)
    _insert(db, [(i, f"k{i % 3}", T0 + timedelta(seconds=1 + i // 50)) for i in range(1, 3001)])
    info = _info(db, source)
    engine = _CountThreads(chunks=3, workers=2, min_rows_per_chunk=500, batch_rows=200)
    result = engine.run(source, info, WINDOW, lake, "leadercnt001", checkpoint=True)
    assert result.rows_read == result.source_count == 3000
    assert engine.count_threads == ["delta-chunk-count"] * 3
    doc = lake.read_staged_json(db.schema, "t", "leadercnt001", CHECKPOINT)
    assert isinstance(doc, dict)
    done = sorted((int(i), d["rows"], d["count"]) for i, d in doc["done"].items())
    assert done == [(c["index"], c["rows"], c["rows"]) for c in _ranges(result)]


class _Miscounted(ChunkedEngine):
    """The leader's count of chunk 1 is off by one: the chunk must fail its verification."""

    def _count(self, run: Any, chunk: Chunk) -> Any:
        stmt = super()._count(run, chunk)
        return sa.select(stmt.scalar_subquery() + 1) if chunk.index == 1 else stmt


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_postgres_copied_chunks_count_themselves(db: Db, source: Source, lake: Lake) -> None:
    """With the binary COPY reader each chunk's count is its COPY's tag: no count query at all,
    and the tags still add up to the leader's count of the window."""
    from delta_platform.engine.chunked import CHECKPOINT
    from delta_platform.source import snapshot

    if not snapshot.copies_postgresql():
        pytest.skip("PostgreSQL rows are read through ADBC here (no _pg_copy, or DELTA_PLATFORM_PG_COPY=0)")
    _create(db)
    _insert(db, [(i, f"k{i % 3}", T0 + timedelta(seconds=1 + i // 50)) for i in range(1, 3001)])
    engine = _CountThreads(chunks=3, workers=2, min_rows_per_chunk=500, batch_rows=200)
    result = engine.run(source, _info(db, source), WINDOW, lake, "copycount001", checkpoint=True)
    assert result.rows_read == result.source_count == 3000
    assert engine.count_threads == []
    doc = lake.read_staged_json(db.schema, "t", "copycount001", CHECKPOINT)
    assert isinstance(doc, dict)
    done = sorted((int(i), d["rows"], d["count"]) for i, d in doc["done"].items())
    assert done == [(c["index"], c["rows"], c["rows"]) for c in _ranges(result)]


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_postgres_leader_count_mismatch_fails_the_chunk(
    db: Db, source: Source, lake: Lake, adbc_reads: None
) -> None:
    _create(db)
    _insert(db, [(i, "k", T0 + timedelta(seconds=1 + i // 50)) for i in range(1, 3001)])
    engine = _Miscounted(chunks=3, workers=2, min_rows_per_chunk=500, retries=1)
    with pytest.raises(EngineError, match="chunk 1 failed after 2 attempts.*its snapshot counted"):
        engine.run(source, _info(db, source), WINDOW, lake, "miscount0001", checkpoint=True)
