"""ADBC PostgreSQL connections share one database object per source URI (see pg_connections)."""

from __future__ import annotations

from pathlib import Path

import pytest

from delta_platform.control_entry import ControlEntry
from delta_platform.core.operators import Operator
from delta_platform.core.watermark import Kind, Watermark
from delta_platform.core.window import Bound, Window
from delta_platform.source import pg_connections
from delta_platform.source.snapshot import adbc_uri
from delta_platform_tests.items import gte_item
from delta_platform_tests.scenarios.harness import Db, make_db, make_source


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    return make_db("postgresql", request, tmp_path)


def _one(conn: object) -> int:
    with conn.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute("SELECT 1")
        return int(cur.fetchone()[0])


def test_connections_share_the_database_until_it_ages(pg: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = adbc_uri(pg.engine.url)
    first, second = pg_connections.connect(uri), pg_connections.connect(uri)
    try:
        assert first._db is second._db  # one database object, one type-catalog read
        assert _one(first) == _one(second) == 1
    finally:
        first.close()
        second.close()
    monkeypatch.setattr(pg_connections, "MAX_AGE_S", 0.0)
    third = pg_connections.connect(uri)
    try:
        assert third._db is not first._db and _one(third) == 1  # renewed: new server types are seen
    finally:
        third.close()


def test_an_unreachable_server_fails_with_the_driver_error_and_is_retried(pg: Db) -> None:
    uri = adbc_uri(pg.engine.url.set(port=1))  # nothing listens there
    for _ in range(2):  # the failed database object is not kept: each try reaches the server
        with pytest.raises(Exception, match="(?i)connect|refused"):
            pg_connections.connect(uri)
        assert uri not in pg_connections._databases


def test_types_created_after_the_database_opened_still_load_exactly(pg: Db) -> None:
    source = make_source(pg)
    uri = adbc_uri(source.engine.url)
    pg_connections.connect(uri).close()  # the database object (and its type catalog) exists now
    mood = f"{pg.q(pg.schema)}.mood"
    pg.execute(f"CREATE TYPE {mood} AS ENUM ('ok', 'sad')")
    pg.execute(f"CREATE TABLE {pg.qualified('t')} (id bigint PRIMARY KEY, v bigint, m {mood})")
    pg.insert("t", [{"id": i, "v": i, "m": m} for i, m in ((1, "ok"), (2, "sad"), (3, None))])
    info = source.describe(ControlEntry.from_item(gte_item(sourceSchema=pg.schema)))
    every = Window(Operator.GTE, Bound(Watermark(Kind.INT, 0), True), Bound(Watermark(Kind.INT, 10), True))
    select = source.select_window(info, every)
    with source.snapshot(info) as snap:
        rows = [r for b in snap.stream(select, info.schema, 100) for r in b.to_pylist()]
    assert sorted((r["id"], r["m"]) for r in rows) == [(1, "ok"), (2, "sad"), (3, None)]

