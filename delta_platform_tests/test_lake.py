"""The lake's contract on a real folder and on moto's S3 server: gated publish, crash roll-forward."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from delta_platform.errors import LakeError
from delta_platform.lake import Lake
from delta_platform.manifest import Manifest, ManifestFile, schema_to_json, utc_now_iso

SRC = "sales"
TABLE = "orders"
KEY = "2024-05-01-13:00"


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path) -> Lake:
    if request.param == "local":
        return Lake(str(tmp_path / "lake"))
    import boto3

    endpoint = request.getfixturevalue("moto_server")
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return Lake(f"s3://{bucket}/prefix", s3_endpoint_url=endpoint, s3_region="us-east-1",
                s3_access_key="testing", s3_secret_key="testing")


def typed_table(n: int, offset: int = 0) -> pa.Table:
    """Every type the design promises to keep exactly, with NULLs in every column."""
    base = Decimal("1234567890123456789012345678.0123456789")  # 38 digits, scale 10
    rows = range(offset, offset + n)
    t0 = datetime(2024, 5, 1, 13, 0, 0, 123456, tzinfo=UTC)
    return pa.table({
        "id": pa.array([(2**63 - 1) if i == 1 else (-(2**63) if i == 2 else i) for i in rows],
                       pa.int64()),
        "amount": pa.array([None if i % 5 == 3 else (base if i % 2 else -base) - Decimal(i)
                            for i in rows], pa.decimal128(38, 10)),
        "ts": pa.array([None if i % 5 == 4 else t0 + timedelta(microseconds=i) for i in rows],
                       pa.timestamp("us", tz="UTC")),
        "day": pa.array([None if i % 5 == 0 else date(2024, 5, 1) + timedelta(days=i)
                         for i in rows], pa.date32()),
        "blob": pa.array([None if i % 5 == 1 else bytes([i % 256, 0, 255]) for i in rows],
                         pa.binary()),
        "name": pa.array([None if i % 5 == 2 else ("" if i % 7 == 0 else f"ünï-{i}")
                          for i in rows], pa.string()),
    })


def stage(lake: Lake, attempt: str, data: pa.Table, key: str = KEY, **kw) -> Manifest:
    """Write `data` into the attempt's staging and build the manifest a caller would publish."""
    with lake.open_writer(SRC, TABLE, attempt, data.schema, **kw) as writer:
        writer.write_table(data)
    files = writer.close()
    return Manifest(
        table=TABLE, source_schema=SRC, partition_key=key, attempt_id=attempt,
        window={"low": "0", "high": str(data.num_rows)},
        files=tuple(ManifestFile.of(f) for f in files),
        rows=writer.rows, schema=schema_to_json(writer.schema), engine="test",
        created_at=utc_now_iso(),
    )


def files_under(lake: Lake, folder: str) -> list[str]:
    selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    infos = lake.filesystem.get_file_info(selector)
    return sorted(i.path[len(folder) + 1:] for i in infos if i.type == pafs.FileType.File)


def staged_attempts(lake: Lake) -> list[str]:
    return sorted({p.split("/")[1] for p in files_under(lake, lake.table_root(SRC, TABLE))
                   if p.startswith("_staging/")})


def test_round_trip_keeps_types_exactly(lake: Lake) -> None:
    data = typed_table(40)
    published = lake.publish(stage(lake, "a1", data))
    back = lake.read_partition(SRC, TABLE, KEY)
    assert back.schema.equals(data.schema)
    assert back.to_pylist() == data.to_pylist()
    assert lake.read_manifest(SRC, TABLE, KEY) == published
    assert {c["name"]: c["type"] for c in published.schema}["ts"] == "timestamp[us, tz=UTC]"
    assert {c["name"]: c["type"] for c in published.schema}["amount"] == "decimal128(38, 10)"
    path = f"{lake.partition_dir(SRC, TABLE, KEY)}/{published.files[0].name}"
    with lake.filesystem.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
        ts = meta.schema.column(2)
        assert ts.physical_type == "INT64"  # not INT96
        assert "isAdjustedToUTC=true" in str(ts.logical_type)
        assert "microseconds" in str(ts.logical_type)
        assert meta.row_group(0).column(0).compression == "SNAPPY"
    assert lake.read_partition(SRC, TABLE, KEY, columns=["id"]).column_names == ["id"]
    assert staged_attempts(lake) == []


def test_zstd_compression_and_bad_options(lake: Lake) -> None:
    m = stage(lake, "z1", typed_table(5), compression="zstd")
    path = f"{lake.staging_dir(SRC, TABLE, 'z1')}/{m.files[0].name}"
    with lake.filesystem.open_input_file(path) as f:
        assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"
    with pytest.raises(LakeError):
        lake.open_writer(SRC, TABLE, "z2", typed_table(1).schema, compression="gzip")


def test_dictionaries_only_on_repetitive_columns(lake: Lake) -> None:
    n = 1000
    data = pa.table({
        "id": pa.array(range(n), pa.int64()),  # unique: plain pages
        "status": pa.array([("new", "paid", "shipped")[i % 3] for i in range(n)]),
        "customer": pa.array([i % 40 for i in range(n)], pa.int32()),
        "note": pa.array([f"note {i}" for i in range(n)]),  # unique text: plain pages
        "empty": pa.array([None] * n, pa.string()),
    })
    m = stage(lake, "d1", data)
    with lake.filesystem.open_input_file(f"{lake.staging_dir(SRC, TABLE, 'd1')}/{m.files[0].name}") as f:
        group = pq.ParquetFile(f).metadata.row_group(0)
        dictionary = {group.column(i).path_in_schema: group.column(i).has_dictionary_page
                      for i in range(group.num_columns)}
    assert dictionary == {"id": False, "status": True, "customer": True, "note": False, "empty": True}
    assert lake.publish(m) and lake.read_partition(SRC, TABLE, KEY).to_pylist() == data.to_pylist()


def test_rolling_files_and_row_groups(lake: Lake) -> None:
    data = typed_table(25)
    with lake.open_writer(SRC, TABLE, "r1", data.schema, row_group_rows=4, file_rows=10) as w:
        for batch in data.to_batches(max_chunksize=3):
            w.write_batch(batch)
    files = w.close()
    assert w.close() == files  # idempotent
    assert [(f.name, f.rows) for f in files] == [
        ("part-r1-00000.parquet", 10), ("part-r1-00001.parquet", 10),
        ("part-r1-00002.parquet", 5)]
    groups = []
    for f in files:
        with lake.filesystem.open_input_file(f.path) as src:
            meta = pq.ParquetFile(src).metadata
            groups.append([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        assert lake.filesystem.get_file_info(f.path).size == f.bytes
    assert groups == [[4, 4, 2], [4, 4, 2], [4, 1]]
    assert lake.count_rows([f.path for f in files]) == 25
    with pytest.raises(LakeError, match="closed"):
        w.write_table(data)


def test_empty_window_publishes_one_file_with_the_schema(lake: Lake) -> None:
    data = typed_table(0)
    m = lake.publish(stage(lake, "e1", data))
    assert len(m.files) == 1 and m.files[0].rows == 0 and m.rows == 0
    back = lake.read_partition(SRC, TABLE, KEY)
    assert back.num_rows == 0 and back.schema.equals(data.schema)
    assert lake.dataset(SRC, TABLE).count_rows() == 0
    assert lake.is_complete(SRC, TABLE, KEY)


def test_replay_replaces_the_partition_files(lake: Lake) -> None:
    lake.publish(stage(lake, "old", typed_table(10), file_rows=6))
    pdir = lake.partition_dir(SRC, TABLE, KEY)
    assert files_under(lake, pdir) == ["_manifest.json", "part-old-00000.parquet",
                                       "part-old-00001.parquet"]
    replay = typed_table(7, offset=100)
    lake.publish(stage(lake, "new", replay))
    assert files_under(lake, pdir) == ["_manifest.json", "part-new-00000.parquet"]
    assert lake.read_partition(SRC, TABLE, KEY).to_pylist() == replay.to_pylist()
    assert lake.dataset(SRC, TABLE).count_rows() == 7
    assert lake.list_partitions(SRC, TABLE) == [KEY]
    assert staged_attempts(lake) == []


def test_publish_twice_is_idempotent(lake: Lake) -> None:
    m = lake.publish(stage(lake, "a1", typed_table(3)))
    assert lake.publish(m) == m
    assert lake.read_partition(SRC, TABLE, KEY).num_rows == 3
    with pytest.raises(LakeError, match="another manifest"):
        lake.publish(dataclasses.replace(m, engine="other"))


def test_staged_but_unpublished_is_invisible_and_cleaned(lake: Lake) -> None:
    lake.publish(stage(lake, "kept", typed_table(4), key="2024-05-01-12:00"))
    stage(lake, "crashed", typed_table(9))
    stage(lake, "running", typed_table(2), key="2024-05-01-14:00")
    assert lake.read_manifest(SRC, TABLE, KEY) is None
    assert lake.list_partitions(SRC, TABLE) == ["2024-05-01-12:00"]
    assert lake.dataset(SRC, TABLE).count_rows() == 4
    with pytest.raises(LakeError, match="no published manifest"):
        lake.read_partition(SRC, TABLE, KEY)
    assert staged_attempts(lake) == ["crashed", "running"]
    assert lake.cleanup_staging(SRC, TABLE, keep={"running"}) == ["crashed"]
    assert staged_attempts(lake) == ["running"]
    lake.abandon(SRC, TABLE, "running")
    lake.abandon(SRC, TABLE, "running")  # absent: no error
    assert staged_attempts(lake) == []
    assert lake.dataset(SRC, TABLE).count_rows() == 4


def test_complete_publish_without_manifest_abandons(lake: Lake) -> None:
    stage(lake, "a1", typed_table(3))
    assert lake.complete_publish(SRC, TABLE, KEY, "a1") is None
    assert staged_attempts(lake) == [] and lake.read_manifest(SRC, TABLE, KEY) is None


def _crash_after_first_move(monkeypatch: pytest.MonkeyPatch) -> None:
    real_move = Lake._move
    moved: list[str] = []

    def move_then_die(self: Lake, src: str, dst: str) -> None:
        if moved:
            raise OSError("killed in the middle of publish")
        moved.append(src)
        real_move(self, src, dst)

    monkeypatch.setattr(Lake, "_move", move_then_die)


def test_crash_between_moves_rolls_forward(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    lake.publish(stage(lake, "old", typed_table(10)))
    replay = typed_table(25, offset=50)
    m = stage(lake, "new", replay, file_rows=10)
    _crash_after_first_move(monkeypatch)
    with pytest.raises(OSError, match="killed"):
        lake.publish(m)
    monkeypatch.undo()
    pdir = lake.partition_dir(SRC, TABLE, KEY)
    assert "part-new-00000.parquet" in files_under(lake, pdir)  # half moved
    assert not lake.is_complete(SRC, TABLE, KEY)
    with pytest.raises(LakeError, match="incomplete"):
        lake.read_partition(SRC, TABLE, KEY)
    with pytest.raises(LakeError, match="incomplete"):
        lake.dataset(SRC, TABLE)
    assert lake.complete_publish(SRC, TABLE, KEY, "new") == m
    assert lake.complete_publish(SRC, TABLE, KEY, "new") == m  # idempotent
    assert lake.read_partition(SRC, TABLE, KEY).to_pylist() == replay.to_pylist()
    assert files_under(lake, pdir) == ["_manifest.json"] + [f.name for f in m.files]
    assert staged_attempts(lake) == []


def _interrupted_publish(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> Manifest:
    """Stage two files of `a1` and crash its publish after the first file moved."""
    m = stage(lake, "a1", typed_table(20), file_rows=10)
    _crash_after_first_move(monkeypatch)
    with pytest.raises(OSError):
        lake.publish(m)
    monkeypatch.undo()
    return m


def test_cleanup_staging_rolls_an_interrupted_publish_forward(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupted_publish(lake, monkeypatch)
    # Deleting this staging folder would lose the second file for good.
    assert lake.cleanup_staging(SRC, TABLE) == ["a1"]
    assert lake.is_complete(SRC, TABLE, KEY)
    assert lake.read_partition(SRC, TABLE, KEY).num_rows == 20


def test_crash_before_manifest_leaves_nothing_visible(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = stage(lake, "a1", typed_table(5))
    real_write = Lake._write_bytes

    def die_on_manifest(self: Lake, path: str, data: bytes) -> None:
        if path.endswith("_manifest.json"):
            raise OSError("killed before the manifest")
        real_write(self, path, data)

    monkeypatch.setattr(Lake, "_write_bytes", die_on_manifest)
    with pytest.raises(OSError):
        lake.publish(m)
    monkeypatch.undo()
    assert lake.list_partitions(SRC, TABLE) == []
    assert lake.cleanup_staging(SRC, TABLE) == ["a1"]
    assert staged_attempts(lake) == [] and lake.read_manifest(SRC, TABLE, KEY) is None


def test_complete_publish_fails_when_a_listed_file_is_gone(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = _interrupted_publish(lake, monkeypatch)
    lake.filesystem.delete_file(f"{lake.staging_dir(SRC, TABLE, 'a1')}/{m.files[1].name}")
    with pytest.raises(LakeError, match="neither published nor staged"):
        lake.complete_publish(SRC, TABLE, KEY, "a1")


@pytest.mark.parametrize("tamper", ["file_rows", "file_bytes", "total_rows", "schema",
                                    "other_attempt", "no_files", "duplicate"])
def test_publish_rejects_a_manifest_that_does_not_match_staging(lake: Lake, tamper: str) -> None:
    m = stage(lake, "a1", typed_table(6))
    other = stage(lake, "b1", typed_table(6))
    f = m.files[0]
    bad = {
        "file_rows": dataclasses.replace(m, files=(dataclasses.replace(f, rows=7),), rows=7),
        "file_bytes": dataclasses.replace(m, files=(dataclasses.replace(f, bytes=f.bytes + 1),)),
        "total_rows": dataclasses.replace(m, rows=5),
        "schema": dataclasses.replace(m, schema=schema_to_json(pa.schema([("id", pa.int64())]))),
        "other_attempt": dataclasses.replace(m, files=other.files),
        "no_files": dataclasses.replace(m, files=(), rows=0),
        "duplicate": dataclasses.replace(m, files=(f, f), rows=12),
    }[tamper]
    with pytest.raises(LakeError, match="nothing published"):
        lake.publish(bad)
    assert lake.read_manifest(SRC, TABLE, KEY) is None
    assert lake.publish(m).rows == 6  # staging untouched by the rejected attempt


def test_tampered_partition_is_detected(lake: Lake) -> None:
    m = lake.publish(stage(lake, "a1", typed_table(8), file_rows=5))
    pdir = lake.partition_dir(SRC, TABLE, KEY)
    with lake.filesystem.open_output_stream(f"{pdir}/part-stray-00000.parquet") as out:
        pq.write_table(typed_table(100), out)
    assert lake.read_partition(SRC, TABLE, KEY).num_rows == 8  # unlisted file ignored
    assert lake.dataset(SRC, TABLE).count_rows() == 8
    assert lake.is_complete(SRC, TABLE, KEY)
    with lake.filesystem.open_output_stream(f"{pdir}/{m.files[0].name}") as out:
        pq.write_table(typed_table(1), out)  # swapped file: size no longer matches
    assert not lake.is_complete(SRC, TABLE, KEY)
    with pytest.raises(LakeError, match="incomplete"):
        lake.read_partition(SRC, TABLE, KEY)
    lake.filesystem.delete_file(f"{pdir}/{m.files[1].name}")
    with pytest.raises(LakeError, match=f"{m.files[1].name} is missing"):
        lake.dataset(SRC, TABLE)


def test_nanosecond_timestamps_raise_instead_of_truncating(lake: Lake) -> None:
    ns = pa.timestamp("ns", tz="UTC")
    exact = pa.table({"ts": pa.array([1_714_568_400_123_456_000], ns)})
    m = lake.publish(stage(lake, "us", exact))
    assert m.schema == [{"name": "ts", "type": "timestamp[us, tz=UTC]", "nullable": True}]
    assert lake.read_partition(SRC, TABLE, KEY).column("ts").to_pylist() == [
        datetime(2024, 5, 1, 13, 0, 0, 123456, tzinfo=UTC)]
    lossy = pa.table({"ts": pa.array([1_714_568_400_123_456_789], ns)})
    with lake.open_writer(SRC, TABLE, "ns", lossy.schema) as w, pytest.raises(LakeError) as err:
        w.write_table(lossy)
    assert err.value.attribute == "ts" and "truncated" in str(err.value)


def test_batch_with_another_schema_is_refused(lake: Lake) -> None:
    with lake.open_writer(SRC, TABLE, "a1", typed_table(1).schema) as w, \
            pytest.raises(LakeError, match="differs"):
        w.write_table(pa.table({"id": [1]}))


@pytest.mark.parametrize("name", ["", "a/b", "..", "a..b", ".hidden", "_staging", "a\\b", "a:b",
                                  "x\x00y", "../../etc"])
@pytest.mark.parametrize("attribute", ["sourceSchema", "targetTableName"])
def test_hostile_names_are_rejected(tmp_path, name: str, attribute: str) -> None:
    lake = Lake(str(tmp_path))
    args = (name, "orders") if attribute == "sourceSchema" else ("sales", name)
    with pytest.raises(LakeError) as err:
        lake.open_writer(*args, "a1", pa.schema([("id", pa.int64())]))
    assert err.value.attribute == attribute and err.value.table == args[1]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("attempt", ["", "../x", "a/b", "_x", ".x", "a b"])
def test_hostile_attempt_ids_are_rejected(tmp_path, attempt: str) -> None:
    with pytest.raises(LakeError, match="attempt id"):
        Lake(str(tmp_path)).staging_dir(SRC, TABLE, attempt)


def test_partition_key_is_sanitised_and_collisions_refused(lake: Lake) -> None:
    root = lake.table_root(SRC, TABLE)
    assert lake.partition_dir(SRC, TABLE, KEY) == f"{root}/partition=2024-05-01-1300"
    assert lake.partition_dir(SRC, TABLE, "../x y") == f"{root}/partition=.._x_y"
    with pytest.raises(LakeError):
        lake.partition_dir(SRC, TABLE, "::")
    lake.publish(stage(lake, "a1", typed_table(2)))
    assert lake.read_manifest(SRC, TABLE, KEY).partition_key == KEY  # original key kept
    with pytest.raises(LakeError, match="collide"):
        lake.read_manifest(SRC, TABLE, "2024-05-01-1300")
    with pytest.raises(LakeError, match="collide"):
        lake.publish(stage(lake, "a2", typed_table(2), key="2024-05-01-1300"))
    assert lake.read_partition(SRC, TABLE, KEY).num_rows == 2


def test_delete_partition(lake: Lake) -> None:
    lake.publish(stage(lake, "a1", typed_table(3)))
    lake.delete_partition(SRC, TABLE, KEY)
    lake.delete_partition(SRC, TABLE, KEY)  # absent: no error
    assert lake.read_manifest(SRC, TABLE, KEY) is None
    assert files_under(lake, lake.partition_dir(SRC, TABLE, KEY)) == []
    assert lake.dataset(SRC, TABLE).count_rows() == 0


def test_parallel_writers_of_one_attempt_get_distinct_files(lake: Lake) -> None:
    data = typed_table(6)
    with lake.open_writer(SRC, TABLE, "a1", data.schema) as one, \
            lake.open_writer(SRC, TABLE, "a1", data.schema) as two:
        one.write_table(data.slice(0, 3))
        two.write_table(data.slice(3))
    files = one.close() + two.close()
    assert len({f.name for f in files}) == 2
    m = stage(lake, "b1", typed_table(0))
    m = dataclasses.replace(m, attempt_id="a1", rows=6,
                            files=tuple(ManifestFile.of(f) for f in files))
    lake.publish(m)
    assert sorted(lake.read_partition(SRC, TABLE, KEY).column("id").to_pylist()) == sorted(
        data.column("id").to_pylist())


def test_uris_and_no_credentials_in_repr(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Lake("rel/lake").uri == (tmp_path / "rel" / "lake").as_uri()
    assert Lake((tmp_path / "x").as_uri()).table_root(SRC, TABLE) == f"{tmp_path}/x/{SRC}/{TABLE}"
    s3 = Lake("s3://bucket/pre/", s3_endpoint_url="http://127.0.0.1:9", s3_region="us-east-1",
              s3_access_key="AKIDEXAMPLE", s3_secret_key="SUPERSECRET")
    assert s3.uri == "s3://bucket/pre"
    assert s3.partition_uri(SRC, TABLE, KEY) == f"s3://bucket/pre/{SRC}/{TABLE}/partition=2024-05-01-1300"
    assert "SUPERSECRET" not in repr(s3) and "AKIDEXAMPLE" not in repr(s3)
    with pytest.raises(LakeError) as err:
        Lake("s3://bucket", s3_access_key="AKIDEXAMPLE")
    assert "AKIDEXAMPLE" not in str(err.value)
    with pytest.raises(LakeError, match="unsupported"):
        Lake("gs://bucket/x")


def test_s3_default_credential_chain(moto_server: str) -> None:
    import boto3

    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    lake = Lake(f"s3://{bucket}", s3_endpoint_url=moto_server)  # creds and region from the env
    lake.publish(stage(lake, "a1", typed_table(4)))
    assert lake.count_rows([f"s3://{lake.partition_dir(SRC, TABLE, KEY)}/part-a1-00000.parquet"]) == 4


def test_duckdb_reads_the_hive_layout(tmp_path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    first, second = typed_table(30), typed_table(12, offset=30)
    lake.publish(stage(lake, "a1", first, file_rows=10))
    lake.publish(stage(lake, "a2", second, key="2024-05-01-14:00"))
    stage(lake, "pending", typed_table(99), key="2024-05-01-15:00")  # staged only: must not count
    glob = f"{lake.table_root(SRC, TABLE)}/partition=*/*.parquet"
    rel = duckdb.sql(f"select * from read_parquet('{glob}', hive_partitioning=true, "
                     "hive_types_autocast=false)")
    assert duckdb.sql("select count(*) from rel").fetchall()[0][0] == 42
    parts = duckdb.sql("select partition, count(*) from rel group by 1 order by 1").fetchall()
    assert parts == [("2024-05-01-1300", 30), ("2024-05-01-1400", 12)]
    types = dict(zip(rel.columns, [str(t) for t in rel.types], strict=True))
    assert types["amount"] == "DECIMAL(38,10)" and types["ts"] == "TIMESTAMP WITH TIME ZONE"
    total = duckdb.sql("select sum(amount) from rel").fetchall()[0][0]
    expected = sum(v for v in first.column("amount").to_pylist() + second.column(
        "amount").to_pylist() if v is not None)
    assert total == expected
    assert lake.dataset(SRC, TABLE).count_rows() == 42
