"""The CLI: clear exit codes, bad entries reported by name while good ones are stored, one real load."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from delta_platform.cli import EXIT_INVALID, EXIT_OK, main


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    with sqlite3.connect(tmp_path / "src.db") as conn:
        conn.execute("create table orders(row_id integer primary key, amount NUMERIC(12,2))")
        conn.executemany("insert into orders values(?, ?)", [(i, "1.50") for i in range(1, 101)])
    conn.close()
    (tmp_path / "entries.yaml").write_text(
        "entries:\n"
        "  - {targetTableName: orders_s3, activeflag: 'true', sourceSchema: main, sourceTable: orders,\n"
        "     filtercolumn: row_id, filteroperator: gte, startvalue: '0', ouputs3Prefix: ./lake}\n"
        "  - {targetTableName: broken, activeflag: 'true', sourceSchema: main, sourceTable: orders,\n"
        "     filtercolumn: row_id, filteroperator: gt, startvalue: '0', ouputs3Prefix: ./lake}\n"
    )
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--store", "control.db", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_put_reports_bad_entries_and_keeps_good_ones(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "put", "entries.yaml")
    assert code == EXIT_INVALID
    assert "stored orders_s3" in out
    assert "broken" in err and "filteroperator" in err
    code, out, _ = run(capsys, "list", "--json")
    assert [row["table"] for row in json.loads(out)] == ["orders_s3"]


def test_load_advances_watermark_and_put_does_not_rewind_it(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "put", "entries.yaml")
    code, out, _ = run(
        capsys,
        "load",
        "orders_s3",
        "--source",
        "default=sqlite:///src.db",
        "--partition",
        "2026-01-01-00:00",
        "--json",
    )
    assert code == EXIT_OK, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rows"] == 100 and summary["window"] == "[0, 100]" and summary["watermark"] == "100"
    run(capsys, "put", "entries.yaml")  # re-putting configuration keeps the live watermark
    code, out, _ = run(capsys, "ledger", "orders_s3", "--json")
    data = json.loads(out)
    assert data["startvalue"] == "100" and [e["rows"] for e in data["ledger"]] == [100]
    code, out, _ = run(capsys, "put", "entries.yaml", "--reset-watermark")
    code, out, _ = run(capsys, "ledger", "orders_s3", "--json")
    assert json.loads(out)["startvalue"] == "0"


def test_disable_and_unknown_table(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "put", "entries.yaml")
    assert run(capsys, "disable", "orders_s3")[0] == EXIT_OK
    assert "inactive" in run(capsys, "list")[1]
    code, _, err = run(capsys, "load", "nope")
    assert code == EXIT_INVALID and "nope" in err


def test_validate_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", "entries.yaml")
    assert code == EXIT_INVALID and "ok: orders_s3" in out and "unknown operator" in err
