"""Hostile identifiers and values in the control table are quoted or refused, never executed."""

from __future__ import annotations

import pytest

from delta_platform.errors import ControlEntryError
from delta_platform_tests.scenarios.harness import Db, Rig, db_fixture, pairs, rig_fixture  # noqa: F401

HOSTILE_TABLE = 'we"ird; DROP TABLE victim; -- tab`le'
HOSTILE_COLUMN = 'c"ol; -- x'


def _setup(db: Db) -> None:
    db.create("victim", {"id": "pk"})
    db.insert("victim", [{"id": 1}])
    db.create(HOSTILE_TABLE, {"id": "pk", HOSTILE_COLUMN: "int", "why not": "text"})
    db.insert(HOSTILE_TABLE, [{"id": i, HOSTILE_COLUMN: i * 10, "why not": f"'; --{i}"}
                              for i in range(1, 11)])


def test_hostile_table_and_column_names_load_quoted(rig: Rig, db: Db) -> None:
    """A table and cursor column named with quotes, semicolons, `--` and spaces load correctly."""
    _setup(db)
    rig.entry("hostile", HOSTILE_TABLE, HOSTILE_COLUMN, "30")
    result = rig.run("hostile", "p1")
    assert result.window.describe() == "[30, 100]"
    rows = rig.partition("hostile", "p1")
    assert pairs(rows, "id", HOSTILE_COLUMN, "why not") == [(i, i * 10, f"'; --{i}") for i in range(3, 11)]
    assert rig.startvalue("hostile") == "100"
    assert db.table_exists("victim")
    assert db.scalar(f"SELECT COUNT(*) FROM {db.qualified('victim')}") == 1


@pytest.mark.parametrize("attribute,value", [
    ("startvalue", "1; DROP TABLE victim; --"),
    ("startvalue", "1 OR 1=1"),
    ("startvalue", "0) OR (1=1"),
    ("endvalue", "9; DROP TABLE victim; --"),
])
def test_hostile_values_are_rejected_not_executed(rig: Rig, db: Db, attribute: str, value: str) -> None:
    """A value that is not an integer is refused for an integer cursor; nothing reaches SQL."""
    _setup(db)
    if attribute == "startvalue":
        rig.entry("hostile", HOSTILE_TABLE, HOSTILE_COLUMN, value)
    else:
        rig.entry("hostile", HOSTILE_TABLE, HOSTILE_COLUMN, "1", operator="between", end=value)
    with pytest.raises(ControlEntryError, match="not an integer") as err:
        rig.run("hostile", "p1")
    assert err.value.attribute == attribute
    assert rig.lake.list_partitions(db.schema, "hostile") == []
    assert rig.store.ledger("hostile") == []
    assert rig.startvalue("hostile") == (value if attribute == "startvalue" else "1")
    assert db.table_exists("victim") and db.table_exists(HOSTILE_TABLE)
    assert db.scalar(f"SELECT COUNT(*) FROM {db.qualified('victim')}") == 1
    # The lease was released: a corrected entry loads at once.
    rig.entry("hostile", HOSTILE_TABLE, HOSTILE_COLUMN, "0")
    assert rig.run("hostile", "p1").rows == 10


def test_hostile_text_cursor_value_is_a_bound_parameter(rig: Rig, db: Db) -> None:
    """A text cursor takes any string; it is bound as a parameter, so it only filters."""
    _setup(db)
    rig.entry("hostile", HOSTILE_TABLE, "why not", "'; --5' OR '1'='1", operator="eq")
    assert rig.run("hostile", "p1").rows == 0
    rig.entry("hostile2", HOSTILE_TABLE, "why not", "'; --5", operator="eq")
    rig.run("hostile2", "p1")
    assert pairs(rig.partition("hostile2", "p1"), "id") == [(5,)]
    assert db.scalar(f"SELECT COUNT(*) FROM {db.qualified('victim')}") == 1
