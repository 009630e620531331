"""The lake: attempt-scoped staging, manifest-gated publish and roll-forward after a crash.

Layout: `<root>/<sourceSchema>/<targetTableName>/partition=<safe key>/` holds `_manifest.json`
and the listed `part-*.parquet`; `<table_root>/_staging/<attempt_id>/` holds unpublished files
(the leading '_' hides it from pyarrow, DuckDB, Spark, Hive and Athena directory scans).
Paths returned by the path methods are filesystem paths for `Lake.filesystem` (no scheme).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from delta_platform.errors import LakeError
from delta_platform.manifest import (
    MANIFEST_NAME,
    PUBLISH_MARKER,
    STAGING,
    Manifest,
    StagedFile,
    StagedWriter,
    check_attempt,
    check_name,
    part_pattern,
    safe_partition_key,
    schema_to_json,
)

if TYPE_CHECKING:
    import pyarrow.dataset as ds

__all__ = ["Lake", "StagedFile", "StagedWriter", "safe_partition_key"]


class Lake:
    """A Parquet lake on a local folder or S3 where a window becomes visible only by its manifest."""

    def __init__(
        self,
        root: str,
        *,
        s3_endpoint_url: str | None = None,
        s3_region: str | None = None,
        s3_access_key: str | None = None,
        s3_secret_key: str | None = None,
    ):
        parsed = urlparse(root)
        self._lock = threading.Lock()
        self._next_part: dict[str, int] = {}
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise LakeError(f"lake root {root!r} names no bucket")
            if (s3_access_key is None) != (s3_secret_key is None):
                raise LakeError("give both s3_access_key and s3_secret_key, or neither")
            kwargs: dict = {}
            if s3_endpoint_url:
                endpoint = urlparse(s3_endpoint_url)
                kwargs["endpoint_override"] = endpoint.netloc or endpoint.path
                kwargs["scheme"] = endpoint.scheme or "https"
            if s3_region:
                kwargs["region"] = s3_region
            if s3_access_key is not None:
                kwargs.update(access_key=s3_access_key, secret_key=s3_secret_key)
            self._fs: pafs.FileSystem = pafs.S3FileSystem(**kwargs)
            self._local = False
            self._root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
        elif parsed.scheme in ("", "file"):
            path = unquote(parsed.path) if parsed.scheme == "file" else root
            self._fs = pafs.LocalFileSystem()
            self._local = True
            self._root = os.path.abspath(os.path.expanduser(path)).rstrip("/") or ""
        else:
            raise LakeError(f"lake root scheme {parsed.scheme!r} unsupported: use s3://, file://")

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"  # never the credentials

    @property
    def uri(self) -> str:
        return self._to_uri(self._root or "/")

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._fs

    # -- names ---------------------------------------------------------------------------------
    def table_root(self, source_schema: str, table: str) -> str:
        check_name(source_schema, "sourceSchema", table)
        check_name(table, "targetTableName", table)
        return f"{self._root}/{source_schema}/{table}"

    def partition_dir(self, source_schema: str, table: str, partition_key: str) -> str:
        key = safe_partition_key(partition_key)
        return f"{self.table_root(source_schema, table)}/partition={key}"

    def partition_uri(self, source_schema: str, table: str, partition_key: str) -> str:
        return self._to_uri(self.partition_dir(source_schema, table, partition_key))

    def staging_dir(self, source_schema: str, table: str, attempt_id: str) -> str:
        check_attempt(attempt_id, table)
        return f"{self.table_root(source_schema, table)}/{STAGING}/{attempt_id}"

    # -- writing ---------------------------------------------------------------------------------
    def open_writer(
        self,
        source_schema: str,
        table: str,
        attempt_id: str,
        schema: pa.Schema,
        *,
        row_group_rows: int = 512 * 1024,
        file_rows: int = 8_000_000,
        compression: str = "snappy",
    ) -> StagedWriter:
        staging = self.staging_dir(source_schema, table, attempt_id)
        if self._local:
            self._fs.create_dir(staging, recursive=True)
        return StagedWriter(
            self._fs, lambda: self._reserve_part(staging, attempt_id), table, schema,
            row_group_rows=row_group_rows, file_rows=file_rows, compression=compression,
        )

    def publish(self, manifest: Manifest) -> Manifest:
        """Verify the staged files, write the manifest (the visibility moment), then move them."""
        m = manifest
        staging = self.staging_dir(m.source_schema, m.table, m.attempt_id)
        current = self.read_manifest(m.source_schema, m.table, m.partition_key)
        if current is not None and current.attempt_id == m.attempt_id:
            if current != m:
                raise LakeError(f"attempt {m.attempt_id} already published another manifest",
                                table=m.table)
            return self._roll_forward(current, staging)
        self._verify_staged(m, staging)
        self._write_bytes(f"{staging}/{PUBLISH_MARKER}",
                          json.dumps({"partition_key": m.partition_key}).encode())
        pdir = self.partition_dir(m.source_schema, m.table, m.partition_key)
        self._write_bytes(f"{pdir}/{MANIFEST_NAME}", m.to_json().encode())
        return self._roll_forward(m, staging)

    def complete_publish(
        self, source_schema: str, table: str, partition_key: str, attempt_id: str
    ) -> Manifest | None:
        """Roll a crashed publish forward if its manifest landed, else abandon the attempt."""
        staging = self.staging_dir(source_schema, table, attempt_id)
        current = self.read_manifest(source_schema, table, partition_key)
        if current is None or current.attempt_id != attempt_id:
            self.abandon(source_schema, table, attempt_id)
            return None
        return self._roll_forward(current, staging)

    def abandon(self, source_schema: str, table: str, attempt_id: str) -> None:
        staging = self.staging_dir(source_schema, table, attempt_id)
        self._delete_dir(staging)
        with self._lock:
            self._next_part.pop(staging, None)

    def write_staged_json(self, source_schema: str, table: str, attempt_id: str, name: str,
                          data: object) -> None:
        """Atomically replace a small JSON file in an attempt's staging (e.g. a chunk checkpoint).

        It lives beside the attempt's parts, so abandon/cleanup/roll-forward remove it with them.
        """
        check_name(name.lstrip("_"), "file name", table)
        staging = self.staging_dir(source_schema, table, attempt_id)
        self._write_bytes(f"{staging}/{name}", json.dumps(data, sort_keys=True).encode())

    def read_staged_json(self, source_schema: str, table: str, attempt_id: str,
                         name: str) -> object | None:
        """The JSON file written by `write_staged_json`, or None if it is not there."""
        text = self._read_bytes(f"{self.staging_dir(source_schema, table, attempt_id)}/{name}")
        return None if text is None else json.loads(text)

    def cleanup_staging(
        self, source_schema: str, table: str, keep: Collection[str] = ()
    ) -> list[str]:
        """Remove other attempts' staging; one that reached publish is rolled forward instead."""
        removed = []
        for info in self._list(f"{self.table_root(source_schema, table)}/{STAGING}"):
            attempt = info.base_name
            if info.type != pafs.FileType.Directory or attempt in keep:
                continue
            marker = self._read_bytes(f"{info.path}/{PUBLISH_MARKER}")
            if marker is not None:
                key = json.loads(marker)["partition_key"]
                self.complete_publish(source_schema, table, key, attempt)
            else:
                self._delete_dir(info.path)
            removed.append(attempt)
        return sorted(removed)

    def delete_partition(self, source_schema: str, table: str, partition_key: str) -> None:
        """Manifest first, so the partition turns invisible at once rather than file by file."""
        pdir = self.partition_dir(source_schema, table, partition_key)
        if self._fs.get_file_info(f"{pdir}/{MANIFEST_NAME}").type == pafs.FileType.File:
            self._fs.delete_file(f"{pdir}/{MANIFEST_NAME}")
        self._delete_dir(pdir)

    # -- reading ---------------------------------------------------------------------------------
    def read_manifest(self, source_schema: str, table: str, partition_key: str) -> Manifest | None:
        pdir = self.partition_dir(source_schema, table, partition_key)
        text = self._read_bytes(f"{pdir}/{MANIFEST_NAME}")
        if text is None:
            return None
        m = Manifest.from_json(text)
        if (m.source_schema, m.table, m.partition_key) != (source_schema, table, partition_key):
            raise LakeError(
                f"{pdir} holds the manifest of {m.source_schema}.{m.table} partition "
                f"{m.partition_key!r}, not {partition_key!r} (keys collide once sanitised)",
                table=table,
            )
        return m

    def list_partitions(self, source_schema: str, table: str) -> list[str]:
        return [m.partition_key for m in self._manifests(source_schema, table)]

    def is_complete(self, source_schema: str, table: str, partition_key: str) -> bool:
        """Complete iff the manifest exists and every listed file exists with its recorded size."""
        m = self.read_manifest(source_schema, table, partition_key)
        try:
            return m is not None and bool(self._published_paths(m))
        except LakeError:
            return False

    def read_partition(
        self, source_schema: str, table: str, partition_key: str,
        columns: list[str] | None = None,
    ) -> pa.Table:
        m = self.read_manifest(source_schema, table, partition_key)
        if m is None:
            raise LakeError(f"partition {partition_key!r} has no published manifest", table=table)
        import pyarrow.dataset as ds  # lazy: it pulls in pandas (~0.2 s); loads only write

        result = ds.dataset(self._published_paths(m), filesystem=self._fs, format="parquet")
        data = result.to_table(columns=columns)
        if data.num_rows != m.rows:
            raise LakeError(f"partition {partition_key!r} read {data.num_rows} rows, manifest "
                            f"says {m.rows}", table=table)
        return data

    def dataset(self, source_schema: str, table: str) -> ds.Dataset:
        """Only manifest-listed files; the newest partition's schema wins (new columns -> NULL)."""
        import pyarrow.dataset as ds

        paths: list[str] = []
        for m in self._manifests(source_schema, table):
            paths.extend(self._published_paths(m))
        if not paths:
            return ds.dataset([], schema=pa.schema([]), format="parquet")
        schema = self._footer(paths[-1])[1]
        return ds.dataset(paths, schema=schema, filesystem=self._fs, format="parquet")

    def count_rows(self, paths: Iterable[str]) -> int:
        return sum(self._footer(self._to_path(p))[0].num_rows for p in paths)

    # -- internals -------------------------------------------------------------------------------
    def _manifests(self, source_schema: str, table: str) -> list[Manifest]:
        found = []
        for info in self._list(self.table_root(source_schema, table)):
            if info.type == pafs.FileType.Directory and info.base_name.startswith("partition="):
                text = self._read_bytes(f"{info.path}/{MANIFEST_NAME}")
                if text is not None:
                    found.append(Manifest.from_json(text))
        return sorted(found, key=lambda m: m.partition_key)

    def _published_paths(self, m: Manifest) -> list[str]:
        pdir = self.partition_dir(m.source_schema, m.table, m.partition_key)
        paths = [f"{pdir}/{f.name}" for f in m.files]
        bad = [
            f"{f.name} is " + ("missing" if i.type != pafs.FileType.File else f"{i.size} bytes")
            + f" (manifest: {f.bytes} bytes)"
            for f, i in zip(m.files, self._fs.get_file_info(paths), strict=True)
            if i.type != pafs.FileType.File or i.size != f.bytes
        ]
        if bad:
            raise LakeError(f"partition {m.partition_key!r} is incomplete: {'; '.join(bad)}; "
                            "run complete_publish or replay it", table=m.table)
        return paths

    def _verify_staged(self, m: Manifest, staging: str) -> None:
        """Publish only what this attempt staged, exactly as the manifest describes it."""
        problems = []
        if not m.files:
            problems.append("lists no file (the schema travels in the files)")
        if sum(f.rows for f in m.files) != m.rows:
            problems.append(f"rows {m.rows} != sum of file rows")
        if len({f.name for f in m.files}) != len(m.files):
            problems.append("lists a file twice")
        pattern = part_pattern(m.attempt_id)
        for f in m.files:
            path = f"{staging}/{f.name}"
            info = self._fs.get_file_info(path) if pattern.fullmatch(f.name) else None
            if info is None or info.type != pafs.FileType.File:
                problems.append(f"{f.name} is not a staged file of attempt {m.attempt_id}")
                continue
            meta, schema = self._footer(path)
            if info.size != f.bytes or meta.num_rows != f.rows:
                problems.append(f"{f.name}: staged {info.size} bytes/{meta.num_rows} rows, "
                                f"manifest {f.bytes}/{f.rows}")
            if schema_to_json(schema) != m.schema:
                problems.append(f"{f.name}: schema {schema_to_json(schema)} != manifest schema")
        if problems:
            raise LakeError("manifest rejected, nothing published: " + "; ".join(problems),
                            table=m.table)

    def _roll_forward(self, m: Manifest, staging: str) -> Manifest:
        """Idempotent: move what is still staged, drop unlisted files, then drop staging."""
        pdir = self.partition_dir(m.source_schema, m.table, m.partition_key)
        if self._local:
            self._fs.create_dir(pdir, recursive=True)
        for f in m.files:
            final = self._fs.get_file_info(f"{pdir}/{f.name}")
            if final.type == pafs.FileType.File and final.size == f.bytes:
                continue
            if self._fs.get_file_info(f"{staging}/{f.name}").type != pafs.FileType.File:
                raise LakeError(f"partition {m.partition_key!r}: listed file {f.name} is neither "
                                "published nor staged; replay the window", table=m.table)
            self._move(f"{staging}/{f.name}", f"{pdir}/{f.name}")
        listed = {f.name for f in m.files} | {MANIFEST_NAME}
        for info in self._list(pdir):
            if info.base_name in listed:
                continue
            if info.type == pafs.FileType.Directory:
                self._fs.delete_dir(info.path)
            else:
                self._fs.delete_file(info.path)
        self.abandon(m.source_schema, m.table, m.attempt_id)
        return m

    def _move(self, src: str, dst: str) -> None:
        self._fs.move(src, dst)  # local: rename; S3: copy + delete

    def _reserve_part(self, staging: str, attempt_id: str) -> tuple[str, str]:
        """Unique part names across writers of one attempt (parallel chunks, or a reopened one)."""
        with self._lock:
            if staging not in self._next_part:
                pattern = part_pattern(attempt_id)
                used = [int(m.group(1)) for i in self._list(staging)
                        if (m := pattern.fullmatch(i.base_name))]
                self._next_part[staging] = max(used, default=-1) + 1
            n = self._next_part[staging]
            self._next_part[staging] = n + 1
        name = f"part-{attempt_id}-{n:05d}.parquet"
        return f"{staging}/{name}", name

    def _write_bytes(self, path: str, data: bytes) -> None:
        """Atomic replace: local temp file + fsync + rename; on S3 an object appears whole."""
        if not self._local:
            with self._fs.open_output_stream(path) as out:
                out.write(data)
            return
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f"_tmp-{uuid.uuid4().hex}")
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_bytes(self, path: str) -> bytes | None:
        try:
            with self._fs.open_input_stream(path) as src:
                return src.read()
        except FileNotFoundError:
            return None

    def _footer(self, path: str) -> tuple[pq.FileMetaData, pa.Schema]:
        with self._fs.open_input_file(path) as src:
            parquet = pq.ParquetFile(src)
            return parquet.metadata, parquet.schema_arrow

    def _list(self, folder: str) -> list[pafs.FileInfo]:
        return self._fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))

    def _delete_dir(self, folder: str) -> None:
        if self._fs.get_file_info(folder).type == pafs.FileType.Directory:
            self._fs.delete_dir(folder)

    def _to_uri(self, path: str) -> str:
        # Keep '=' readable in hive folder names (as_uri() would escape it to %3D).
        return "file://" + quote(path, safe="/=:,+@-_.~") if self._local else f"s3://{path}"

    def _to_path(self, path_or_uri: str) -> str:
        parsed = urlparse(path_or_uri)
        if parsed.scheme == "s3":
            return f"{parsed.netloc}{parsed.path}"
        return unquote(parsed.path) if parsed.scheme == "file" else path_or_uri
