"""``edged events --format csv|jsonl``: the audit export on a real state file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from edged import config
from edged.cli import main as cli
from edged.receive.normalize import normalize
from edged.store import events as store
from edged.store import export
from tests.conftest import recognition

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z
COUNT = 1100  # more than two pages


@pytest.fixture
def cfg_file(cfg: config.Config, tmp_path: Path) -> Path:
    st = store.Store(cfg.storage.database_path)
    try:
        names = ["+SUM(A1)" if i == 3 else f"Person {i}" for i in range(COUNT)]
        records = [
            store.Record(
                normalize(recognition(uuid=f"u{i}", user={"name": n, "user_id": f"p{i}"})),
                START + i,
                None,
                "lobby",
                {"code": 200},
            )
            for i, n in enumerate(names)
        ]
        assert asyncio.run(st.save_bulk(iter(records))) == COUNT
    finally:
        st.close()
    path = tmp_path / "edged.toml"
    path.write_text(config.to_toml(config.to_dict(cfg, mask=False)))
    return path


def test_csv_export_to_standard_output(cfg_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["events", "--format", "csv", "-c", str(cfg_file)]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert tuple(table[0]) == export.CSV_COLUMNS and len(table) == COUNT + 1
    assert table[4][export.CSV_COLUMNS.index("user_name")] == "'+SUM(A1)"


def test_jsonl_export_to_a_file_over_a_range(
    cfg_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit.jsonl"
    argv = ["events", "--format", "jsonl", "--since", "2027-01-15T08:10:00Z"]
    argv += ["--until", str(START + 900), "-o", str(out), "-c", str(cfg_file)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == f"{out}: 300 events\n"
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == list(range(601, 901))


def test_export_with_a_limit(cfg_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["events", "--format", "jsonl", "--limit", "3", "-c", str(cfg_file)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--format", "csv", "--tail", "2"], "not with --tail"),
        (["--format", "csv", "--follow"], "not with --follow"),
        (["--format", "jsonl", "--json"], "not with --json"),
        (["-o", "x.csv"], "-o FILE is for the export"),
        (["--format", "xml"], "invalid choice"),
        (["--until", "soon"], "'soon' is not an ISO date-time"),
    ],
)
def test_export_usage_errors(
    cfg_file: Path, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["events", *argv, "-c", str(cfg_file)]) == 64
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err


def test_export_to_an_unwritable_file_is_73(
    cfg_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "audit.csv"
    assert cli.main(["events", "--format", "csv", "-o", str(target), "-c", str(cfg_file)]) == 73
    assert str(target) in capsys.readouterr().err
