"""Control entries: the reference's attributes, strict validation, errors that name table and attribute."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from delta_platform.control_entry import ControlEntry, NullPolicy
from delta_platform.core.operators import Operator
from delta_platform.errors import ControlEntryError

REFERENCE = {
    "targetTableName": "orders_s3",
    "activeflag": "true",
    "sourceSchema": "dwh",
    "sourceTable": "orders_rds",
    "filtercolumn": "row_id",
    "filteroperator": "gte",
    "startvalue": "0",
    "endvalue": "",
    "ouputs3Prefix": "s3://lake-bucket/raw",
    "replication_task_settings": '{"Logging": {"EnableLogging": true}}',
}


def item(**changes: Any) -> dict[str, Any]:
    out = dict(REFERENCE)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_reference_item_parses() -> None:
    entry = ControlEntry.from_item(REFERENCE)
    assert entry.name == "orders_s3" and entry.active and entry.filter_operator is Operator.GTE
    assert entry.output_prefix == "s3://lake-bucket/raw"
    assert entry.replication_task_settings == {"Logging": {"EnableLogging": True}}
    assert entry.null_policy is NullPolicy.WARN and entry.safety_lag == timedelta(0)


def test_extensions_and_aliases() -> None:
    entry = ControlEntry.from_item(
        item(
            ouputs3Prefix=...,
            outputS3Prefix="/tmp/lake",
            primaryKey="a, b",
            safetyLagSeconds=Decimal("2.5"),
            nullPolicy="FAIL",
            cursorExpression="coalesce(updated_at, created_at)",
            partitionCadence="daily",
            activeflag=False,
        )
    )
    assert entry.output_prefix == "/tmp/lake" and entry.primary_key == ("a", "b")
    assert entry.safety_lag == timedelta(seconds=2.5) and entry.null_policy is NullPolicy.FAIL
    assert entry.cursor_expression is not None and entry.cursor_expression.columns == (
        "updated_at",
        "created_at",
    )
    assert not entry.active


@pytest.mark.parametrize(
    ("changes", "attribute", "fragment"),
    [
        ({"filteroperator": "gt"}, "filteroperator", "unknown operator"),
        ({"startvalue": ...}, "startvalue", "required"),
        ({"endvalue": "5"}, "endvalue", "only allowed"),
        ({"filteroperator": "between"}, "endvalue", "required"),
        ({"filteroperator": "null"}, "startvalue", "must be empty"),
        ({"replication_task_settings": "{not json"}, "replication_task_settings", "JSON"),
        ({"replication_task_settings": "[1]"}, "replication_task_settings", "object"),
        ({"ouputs3Prefix": "ftp://x/y"}, "ouputs3Prefix", "scheme"),
        ({"ouputs3Prefix": "s3:///nobucket"}, "ouputs3Prefix", "bucket"),
        ({"ouputs3Prefix": "/lake/../etc"}, "ouputs3Prefix", ".."),
        ({"activeflag": "maybe"}, "activeflag", "true or false"),
        ({"startvalue": 1.5}, "startvalue", "floats"),
        ({"sourceTable": 7}, "sourceTable", "text"),
        ({"sourceSchema": "a\nb"}, "sourceSchema", "control characters"),
        ({"nullPolicy": "drop"}, "nullPolicy", "one of"),
        ({"safetyLagSeconds": "-1"}, "safetyLagSeconds", "non-negative"),
        ({"cursorExpression": "updated_at; DROP TABLE x"}, "cursorExpression", "COALESCE"),
        ({"engine": "spark"}, "engine", "streaming"),
    ],
)
def test_errors_name_table_and_attribute(changes: dict[str, Any], attribute: str, fragment: str) -> None:
    with pytest.raises(ControlEntryError) as err:
        ControlEntry.from_item(item(**changes))
    assert err.value.table == "orders_s3" and err.value.attribute == attribute
    assert fragment in str(err.value) and "orders_s3" in str(err.value)


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "x y", "_hidden", "a..b"])
def test_target_table_name_is_a_safe_folder_and_asset_name(name: str) -> None:
    with pytest.raises(ControlEntryError) as err:
        ControlEntry.from_item(item(targetTableName=name))
    assert err.value.attribute == "targetTableName"


def test_hostile_identifiers_are_accepted_as_data_for_quoting() -> None:
    entry = ControlEntry.from_item(item(sourceTable='x"; DROP TABLE y; --', filtercolumn="a b"))
    assert entry.source_table == 'x"; DROP TABLE y; --'


@pytest.mark.parametrize("op", ["lte", "ste", "eq", "noteq"])
def test_single_operand_static_operators(op: str) -> None:
    assert ControlEntry.from_item(item(filteroperator=op)).filter_operator.value == op


def test_not_a_mapping() -> None:
    with pytest.raises(ControlEntryError):
        ControlEntry.from_item(["nope"])  # type: ignore[arg-type]
