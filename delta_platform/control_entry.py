"""A control-table entry: the reference's attributes, strictly validated, plus optional extensions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from delta_platform.core.operators import Operator
from delta_platform.errors import ControlEntryError

_TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_CURSOR_EXPR = re.compile(r"^\s*(COALESCE|GREATEST|LEAST)\s*\((.*)\)\s*$", re.IGNORECASE)
DEFAULT_PARTITION_START = "2026-01-01T00:00:00+00:00"

# Attributes written by the platform itself (statistics and state), never user configuration.
RUNTIME_ATTRIBUTES = frozenset(
    {
        "startvalueType",
        "lastLoadStatus",
        "lastLoadRows",
        "lastLoadAt",
        "lastLoadPartition",
        "lastLoadRunId",
        "lastLoadWindow",
        "lastLoadFence",
        "lastLoadBytes",
        "lastNullCount",
    }
)


class NullPolicy(StrEnum):
    """What to do with rows whose filter value is NULL (invisible to `gte`)."""

    WARN = "warn"
    FAIL = "fail"
    IGNORE = "ignore"


class Cadence(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


@dataclass(frozen=True)
class CursorExpression:
    """A cursor built from several columns, e.g. COALESCE(updated_at, created_at) (PAIN_POINTS 15)."""

    function: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class ControlEntry:
    """One validated item of the control table (`etlConfiguration`)."""

    target_table_name: str
    active: bool
    source_schema: str
    source_table: str
    filter_column: str
    filter_operator: Operator
    start_value: Any
    end_value: Any
    output_prefix: str
    replication_task_settings: dict[str, Any] = field(default_factory=dict)
    primary_key: tuple[str, ...] = ()
    safety_lag: timedelta = timedelta(0)
    null_policy: NullPolicy = NullPolicy.WARN
    cursor_expression: CursorExpression | None = None
    cadence: Cadence = Cadence.HOURLY
    partition_start: datetime = datetime.fromisoformat(DEFAULT_PARTITION_START)
    source: str = "default"
    engine: str | None = None
    max_txn_wait: timedelta = timedelta(seconds=60)
    chunk_rows: int | None = None
    chunk_workers: int | None = None  # connections of a chunked read; None: one per available core
    group: str | None = None
    description: str | None = None
    start_value_type: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.target_table_name

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ControlEntry:
        """Validate a raw store item; the error names the table and the attribute at fault."""
        return _Parser(item).parse()


class _Parser:
    def __init__(self, item: dict[str, Any]):
        if not isinstance(item, dict):
            raise ControlEntryError(f"a control entry must be a mapping, got {type(item).__name__}")
        self.item = item
        raw_name = item.get("targetTableName")
        self.table = raw_name if isinstance(raw_name, str) else "<missing targetTableName>"

    def fail(self, attribute: str, message: str) -> ControlEntryError:
        return ControlEntryError(message, table=self.table, attribute=attribute)

    def text(self, attr: str, *, required: bool = True, aliases: tuple[str, ...] = ()) -> str | None:
        value = self.item.get(attr)
        for alias in aliases:
            if value is None:
                value = self.item.get(alias)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise self.fail(attr, "is required")
            return None
        if not isinstance(value, str):
            raise self.fail(attr, f"must be text, got {type(value).__name__}")
        if any(ord(c) < 32 for c in value):
            raise self.fail(attr, "contains control characters")
        if len(value) > 1024:
            raise self.fail(attr, "is longer than 1024 characters")
        return value

    def identifier(self, attr: str) -> str:
        value = self.text(attr)
        assert value is not None
        if len(value) > 128:
            raise self.fail(attr, "identifiers are at most 128 characters")
        return value

    def parse(self) -> ControlEntry:
        name = self.text("targetTableName")
        assert name is not None
        if not _TABLE_NAME.match(name) or ".." in name:
            raise self.fail(
                "targetTableName",
                "must match [A-Za-z0-9][A-Za-z0-9_.-]* (it names a lake folder and a Dagster asset)",
            )
        op_text = self.text("filteroperator")
        assert op_text is not None
        try:
            operator = Operator(op_text.strip().lower())
        except ValueError:
            raise self.fail(
                "filteroperator",
                f"unknown operator {op_text!r}; expected one of " + ", ".join(o.value for o in Operator),
            ) from None
        start, end = self.item.get("startvalue"), self.item.get("endvalue")
        start = None if isinstance(start, str) and not start.strip() else start
        end = None if isinstance(end, str) and not end.strip() else end
        for attr, value in (("startvalue", start), ("endvalue", end)):
            if isinstance(value, float):
                raise self.fail(attr, "floats lose precision; give the value as text")
            if value is not None and not isinstance(value, str | int | Decimal):
                raise self.fail(attr, f"must be text or a number, got {type(value).__name__}")
        if operator.needs_start and start is None:
            raise self.fail("startvalue", f"is required for operator {operator.value}")
        if not operator.needs_start and start is not None:
            raise self.fail("startvalue", f"must be empty for operator {operator.value}")
        if operator.needs_end and end is None:
            raise self.fail("endvalue", f"is required for operator {operator.value}")
        if not operator.needs_end and end is not None:
            raise self.fail("endvalue", f"is only allowed with between/notbetween, not {operator.value}")
        return ControlEntry(
            target_table_name=name,
            active=self.flag("activeflag"),
            source_schema=self.identifier("sourceSchema"),
            source_table=self.identifier("sourceTable"),
            filter_column=self.identifier("filtercolumn"),
            filter_operator=operator,
            start_value=start,
            end_value=end,
            output_prefix=self.prefix(),
            replication_task_settings=self.settings(),
            primary_key=self.primary_key(),
            safety_lag=self.seconds("safetyLagSeconds", timedelta(0)),
            null_policy=self.enum("nullPolicy", NullPolicy, NullPolicy.WARN),
            cursor_expression=self.cursor_expression(),
            cadence=self.enum("partitionCadence", Cadence, Cadence.HOURLY),
            partition_start=self.partition_start(),
            source=self.text("source", required=False) or "default",
            engine=self.engine(),
            max_txn_wait=self.seconds("maxTxnWaitSeconds", timedelta(seconds=60)),
            chunk_rows=self.positive_int("chunkRows"),
            chunk_workers=self.positive_int("chunkWorkers"),
            group=self.text("group", required=False),
            description=self.text("description", required=False),
            start_value_type=self.text("startvalueType", required=False),
            raw=dict(self.item),
        )

    def flag(self, attr: str) -> bool:
        value = self.item.get(attr)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        if isinstance(value, int | Decimal) and value in (0, 1):
            return bool(value)
        raise self.fail(attr, f"must be true or false, got {value!r}")

    def prefix(self) -> str:
        value = self.text("ouputs3Prefix", aliases=("outputs3Prefix", "outputS3Prefix"))
        assert value is not None
        value = value.strip().rstrip("/")
        if any(c.isspace() for c in value):
            raise self.fail("ouputs3Prefix", "must not contain white space")
        if "://" in value:
            scheme, _, rest = value.partition("://")
            if scheme not in ("s3", "file"):
                raise self.fail(
                    "ouputs3Prefix", f"scheme {scheme!r} is not supported; use s3:// or a local folder"
                )
            if scheme == "s3" and not rest.split("/", 1)[0]:
                raise self.fail("ouputs3Prefix", "an s3:// prefix needs a bucket")
        if ".." in value.split("/"):
            raise self.fail("ouputs3Prefix", "must not contain '..'")
        return value

    def settings(self) -> dict[str, Any]:
        value = self.item.get("replication_task_settings")
        if value is None or value == "":
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise self.fail("replication_task_settings", f"is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise self.fail("replication_task_settings", "must be a JSON object")
        return value

    def primary_key(self) -> tuple[str, ...]:
        value = self.item.get("primaryKey")
        if value is None or value == "":
            return ()
        cols = [c.strip() for c in value.split(",")] if isinstance(value, str) else value
        if not isinstance(cols, list | tuple) or not all(isinstance(c, str) and c for c in cols):
            raise self.fail("primaryKey", "must be a column name or a list of column names")
        return tuple(cols)

    def seconds(self, attr: str, default: timedelta) -> timedelta:
        value = self.item.get(attr)
        if value is None or value == "":
            return default
        try:
            number = Decimal(str(value)) if not isinstance(value, bool) else None
        except ArithmeticError:
            number = None
        if number is None or not number.is_finite() or number < 0:
            raise self.fail(attr, f"must be a non-negative number of seconds, got {value!r}")
        return timedelta(seconds=float(number))

    def positive_int(self, attr: str) -> int | None:
        value = self.item.get(attr)
        if value is None or value == "":
            return None
        try:
            number = int(str(value))
        except ValueError:
            number = 0
        if number <= 0 or isinstance(value, bool):
            raise self.fail(attr, f"must be a positive integer, got {value!r}")
        return number

    def enum(self, attr: str, enum: type[StrEnum], default: Any) -> Any:
        value = self.item.get(attr)
        if value is None or value == "":
            return default
        try:
            return enum(str(value).strip().lower())
        except ValueError:
            raise self.fail(
                attr, f"must be one of {', '.join(e.value for e in enum)}, got {value!r}"
            ) from None

    def engine(self) -> str | None:
        value = self.text("engine", required=False)
        if value is not None and value not in ("streaming", "dms"):
            raise self.fail("engine", f"must be 'streaming' or 'dms', got {value!r}")
        return value

    def partition_start(self) -> datetime:
        value = self.text("partitionStart", required=False) or DEFAULT_PARTITION_START
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail("partitionStart", f"is not an ISO date or timestamp: {value!r}") from None
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)

    def cursor_expression(self) -> CursorExpression | None:
        value = self.text("cursorExpression", required=False)
        if value is None:
            return None
        match = _CURSOR_EXPR.match(value)
        columns = [c.strip() for c in match.group(2).split(",")] if match else []
        if (
            not match
            or len(columns) < 2
            or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", c) for c in columns)
        ):
            raise self.fail(
                "cursorExpression",
                "must be COALESCE, GREATEST or LEAST over two or "
                "more plain column names, e.g. COALESCE(updated_at, created_at)",
            )
        return CursorExpression(match.group(1).lower(), tuple(columns))
