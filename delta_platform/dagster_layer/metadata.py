"""Materialization metadata from a `LoadResult`: standard dagster/* keys plus the window story."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:  # run-time only: the code server never builds metadata
    import pyarrow as pa

    from delta_platform.delta_task import LoadResult

PREVIEW_ROWS = 5


def column_schema(schema: list[dict[str, Any]]) -> dg.TableSchema:
    return dg.TableSchema(columns=[
        dg.TableColumn(c["name"], str(c["type"]),
                       constraints=dg.TableColumnConstraints(nullable=bool(c.get("nullable", True))))
        for c in schema
    ])


def preview_markdown(table: pa.Table, limit: int = PREVIEW_ROWS) -> str:
    """A few rows as a markdown table (no pandas/tabulate needed)."""
    rows = table.slice(0, limit).to_pylist()
    if not table.num_columns:
        return "(no columns)"
    cells = lambda v: "NULL" if v is None else str(v).replace("|", "\\|")[:60]  # noqa: E731
    lines = ["| " + " | ".join(table.column_names) + " |", "|" + "---|" * table.num_columns]
    lines += ["| " + " | ".join(cells(r[c]) for c in table.column_names) + " |" for r in rows]
    if table.num_rows > limit:
        lines.append(f"\n{table.num_rows - limit:,} more rows")
    return "\n".join(lines)


def load_metadata(result: LoadResult, table_name: str, preview: pa.Table | None) -> dict[str, Any]:
    window = result.window
    meta: dict[str, Any] = {
        "dagster/partition_row_count": result.rows,
        "dagster/uri": result.partition_uri,
        "dagster/column_schema": column_schema(result.schema),
        "dagster/table_name": table_name,
        "mode": result.mode.value,
        "window": window.describe(),
        "window_low": window.low.value.encode() if window.low else None,
        "window_high": window.high.value.encode() if window.high else None,
        "fence_term": result.fence.term if result.fence else None,
        "fence_wait_seconds": round(result.fence.wait_seconds, 3) if result.fence else None,
        "source_count": result.source_count,
        "null_filter_values": result.null_count,
        "bytes": result.bytes,
        "files": dg.MetadataValue.json(result.files),
        "engine": result.engine,
        "engine_details": _json(result.engine_details) if result.engine_details else None,
        "duration_seconds": round(result.seconds, 3),
        "watermark_before": result.watermark_before,
        "watermark_after": result.watermark_after,
        "attempt_id": result.attempt_id,
        "warnings": "\n".join(result.warnings) or None,
        "recovered": result.recovered,
        "preview": dg.MetadataValue.md(preview_markdown(preview)) if preview is not None else None,
    }
    return {k: v for k, v in meta.items() if v is not None}


def _json(data: dict[str, Any]) -> dg.MetadataValue:
    """A JSON metadata value of anything an engine reports (non-JSON values as their text)."""
    return dg.MetadataValue.json(json.loads(json.dumps(data, default=str)))
