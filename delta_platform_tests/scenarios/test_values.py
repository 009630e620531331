"""PAIN 7 NULL filter values, PAIN 8 exact decimals and type fidelity, PAIN 14 timestamp units."""

from __future__ import annotations

import importlib.util
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delta_platform.errors import SourceError, VerificationError
from delta_platform_tests.scenarios.harness import Db, Rig, db_fixture, pairs, rig_fixture  # noqa: F401


def _null_table(db: Db) -> None:
    db.create("t", {"id": "pk", "at": "ts"})
    value = "2024-01-01 00:00:01.000000" if db.name == "sqlite" else datetime(2024, 1, 1, 0, 0, 1)
    db.insert("t", [{"id": i, "at": None if i % 4 == 0 else value} for i in range(1, 13)])


@pytest.mark.parametrize("policy", ["warn", "fail", "ignore", None])
def test_null_filter_values_follow_the_policy(rig: Rig, db: Db, policy: str | None) -> None:
    """3 of 12 rows have a NULL cursor: counted and reported; fail blocks; ignore is silent."""
    _null_table(db)
    extra = {"nullPolicy": policy} if policy else {}
    rig.entry("t", "t", "at", "2024-01-01 00:00:00", **extra)
    if policy == "fail":
        with pytest.raises(VerificationError, match="3 rows have a NULL"):
            rig.run("t", "p1")
        assert rig.startvalue("t") == "2024-01-01 00:00:00"
        assert rig.store.ledger("t") == []
        assert rig.lake.list_partitions(db.schema, "t") == []
        return
    result = rig.run("t", "p1")
    assert result.null_count == 3
    assert result.ledger_entry["nullCount"] == 3
    assert pairs(rig.partition("t", "p1"), "id") == [(i,) for i in range(1, 13) if i % 4]
    if policy == "ignore":
        assert result.warnings == []
    else:  # warn is the default
        assert len(result.warnings) == 1 and "3 rows have a NULL at" in result.warnings[0]
    assert rig.store.get_entry("t")["lastNullCount"] == 3  # type: ignore[index]


def _expected_reader(db_name: str) -> str:
    """The Arrow path each database's rows should take (the fastest one this machine has)."""
    if db_name == "sqlite":
        return "adbc-sqlite"
    from delta_platform.source import mysql_binary, pg_copy, snapshot

    if db_name == "postgresql":
        return "pg-copy-binary" if pg_copy.available() and snapshot.PG_COPY != "0" else "adbc-postgresql-copy"

    fast = snapshot.MYSQL_READER != "engine" and importlib.util.find_spec("MySQLdb") is not None
    return "mysql-binary" if fast and mysql_binary.available() else "mysql-packed"


BIG = Decimal("1234567890123456789012345678.0123456789")  # 38 digits, scale 10
SMALL = Decimal("-9999999999.99")  # numeric(12,2) extreme


def test_types_arrive_exact(rig: Rig, db: Db) -> None:
    """decimal(38,10), numeric(12,2), bigint, text, binary, date, timestamps, boolean and NULLs."""
    tz = "tstz" if db.name != "sqlite" else "ts"
    db.create("ty", {"id": "pk", "big": "NUMERIC(38,10)", "money": "NUMERIC(12,2)", "n": "int",
                     "txt": "text", "bin": "bin", "d": "date", "ts": "ts", "tz": tz, "flag": "bool"})
    ts = datetime(2024, 2, 29, 23, 59, 59, 123456)
    aware = datetime(2024, 2, 29, 23, 59, 59, 654321, tzinfo=UTC)

    def tsv(v: datetime) -> object:
        if db.name == "sqlite":
            return v.strftime("%Y-%m-%d %H:%M:%S.%f")
        return v.replace(tzinfo=None) if db.name == "mariadb" else v

    def dec(v: Decimal) -> object:
        return str(v) if db.name == "sqlite" else v  # the stdlib driver binds no Decimal

    full = {"id": 1, "big": dec(BIG), "money": dec(SMALL),
            "n": 9_007_199_254_740_993, "txt": "héllo ☃ 'quoted'; --", "bin": b"\x00\xff\x10bin",
            "d": date(2024, 2, 29) if db.name != "sqlite" else "2024-02-29", "ts": tsv(ts),
            "tz": tsv(aware), "flag": True}
    nulls = {k: None for k in full} | {"id": 2}
    small = dict(full, id=3, big=dec(Decimal("0.0000000001")), money=dec(Decimal("0.01")), flag=False)
    db.insert("ty", [full, nulls, small])
    rig.entry("ty", "ty", "id", "0")
    result = rig.run("ty", "p1")
    assert result.engine_details["reader"] == _expected_reader(db.name)
    table = rig.lake.read_partition(db.schema, "ty", "p1")
    schema = table.schema
    assert schema.field("big").type == pa.decimal128(38, 10)
    assert schema.field("money").type == pa.decimal128(12, 2)
    assert schema.field("n").type == pa.int64()
    assert schema.field("ts").type == pa.timestamp("us")
    if db.name != "sqlite":
        assert schema.field("tz").type == pa.timestamp("us", tz="UTC")
    rows = {r["id"]: r for r in table.to_pylist()}
    r1, r2, r3 = rows[1], rows[2], rows[3]
    if db.name == "sqlite":
        # SQLite's NUMERIC affinity itself stores this text as a REAL (15-17 digits): the lake
        # must hold exactly the value the source holds, nothing rounded further.
        stored = db.scalar("SELECT big FROM ty WHERE id = 1")
        assert isinstance(stored, float)
        assert r1["big"] == Decimal(repr(stored))
    else:
        assert r1["big"] == BIG and str(r1["big"]) == str(BIG)
    assert r1["money"] == SMALL
    assert r3["big"] == Decimal("0.0000000001") and r3["money"] == Decimal("0.01")
    assert r1["n"] == 9_007_199_254_740_993  # beyond 2**53: would be wrong as a double
    assert r1["txt"] == "héllo ☃ 'quoted'; --"
    assert r1["bin"] == b"\x00\xff\x10bin"
    assert r1["d"] == date(2024, 2, 29)
    assert r1["ts"] == ts
    assert r1["tz"] == (aware if db.name != "sqlite" else aware.replace(tzinfo=None))
    assert r1["flag"] in (True, 1) and r3["flag"] in (False, 0)
    assert all(v is None for k, v in r2.items() if k != "id"), r2  # NULL stays NULL, not 0 / ''
    # PAIN 14: the files themselves carry microsecond timestamps (readers like Athena need it).
    for uri in result.files:
        file_schema = pq.read_schema(uri.removeprefix("file://").replace("%3D", "="))
        assert file_schema.field("ts").type == pa.timestamp("us")
        assert file_schema.field("tz").type.unit == "us"
        assert file_schema.field("big").type == pa.decimal128(38, 10)
    manifest = rig.lake.read_manifest(db.schema, "ty", "p1")
    assert manifest is not None
    assert any("timestamp" in str(c) and "us" in str(c) for c in manifest.schema)


EDGES = {  # column type -> values at the edges of what it can hold
    "NUMERIC(18,0)": ["999999999999999999", "-999999999999999999", "0"],
    "NUMERIC(18,18)": ["0.999999999999999999", "-0.999999999999999999", "0.000000000000000001"],
    "NUMERIC(18,4)": ["99999999999999.9999", "-99999999999999.9999", "-0.0001"],
    "NUMERIC(19,2)": ["99999999999999999.99", "-99999999999999999.99", "0.10"],
}


def test_decimal_edges_arrive_exact(rig: Rig, db: Db) -> None:
    """Decimals at their extremes, on both sides of PostgreSQL's bigint fast path (p <= 18)."""
    if db.name == "sqlite":
        pytest.skip("SQLite keeps such values as REAL; its decimals are covered above")
    cols = {f"c{i}": t for i, t in enumerate(EDGES)}
    db.create("edges", {"id": "pk", **cols})
    rows = [{"id": r + 1, **{c: Decimal(EDGES[t][r]) for c, t in cols.items()}} for r in range(3)]
    db.insert("edges", [*rows, {"id": 4, **{c: None for c in cols}}])
    rig.entry("edges", "edges", "id", "0")
    rig.run("edges", "p1")
    table = rig.lake.read_partition(db.schema, "edges", "p1")
    assert [str(table.schema.field(c).type) for c in cols] == [
        "decimal128(18, 0)", "decimal128(18, 18)", "decimal128(18, 4)", "decimal128(19, 2)"]
    got = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert got == [*rows, {"id": 4, **{c: None for c in cols}}]
    assert [str(got[0][c]) for c in cols] == [EDGES[t][0] for t in EDGES]  # scale kept, not only value


def test_decimal_nan_fails_naming_the_table(rig: Rig, db: Db) -> None:
    """PostgreSQL NUMERIC holds NaN, which no Parquet decimal can: the load fails, nothing lands."""
    if db.name != "postgresql":
        pytest.skip("only PostgreSQL's NUMERIC holds NaN")
    db.create("nan", {"id": "pk", "amount": "NUMERIC(12,2)"})
    db.insert("nan", [{"id": 1, "amount": Decimal("1.50")}, {"id": 2, "amount": Decimal("NaN")}])
    rig.entry("nan", "nan", "id", "0")
    with pytest.raises(SourceError, match="NaN or infinite") as err:
        rig.run("nan", "p1")
    assert err.value.table == "nan" and err.value.attribute == "amount"
    assert rig.lake.list_partitions(db.schema, "nan") == []
    assert rig.startvalue("nan") == "0"
