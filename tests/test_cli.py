"""The command line on real files and a live daemon."""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from edged import cli, config
from tests.conftest import LiveDaemon, auth_request, recognition

ROOT = Path(__file__).resolve().parent.parent


def write_config(cfg: config.Config, path: Path) -> Path:
    path.write_text(config.to_toml(config.to_dict(cfg, mask=False)))
    return path


@pytest.fixture
def cfg_file(cfg: config.Config, tmp_path: Path) -> Path:
    return write_config(cfg, tmp_path / "edged.toml")


def test_people_import_csv_then_decisions_use_it(
    cfg_file: Path, tmp_path: Path, live: LiveDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"permissions": [{"group": "staff", "door": "lobby"}]}))
    csv = tmp_path / "people.csv"
    csv.write_text(
        "id,name,groups,valid_until,ic_number\ne-1,Ann Example,staff,2999-12-31,111|222\n"
    )
    before = httpx.post(f"{live.url}/auth", json=auth_request(ts=time.time() - 1)).json()
    assert before["data"]["pass"] is False
    assert cli.main(["people", "import", str(rules), "-c", str(cfg_file)]) == 0
    assert cli.main(["people", "import", str(csv), "-c", str(cfg_file)]) == 0
    assert "add 1" in capsys.readouterr().out
    after = httpx.post(f"{live.url}/auth", json=auth_request()).json()  # no restart
    assert after["data"]["pass"] is True
    by_card = auth_request(user_id=None, ts=time.time() - 2)
    by_card["user"] = {"ic_number": "222"}
    assert httpx.post(f"{live.url}/auth", json=by_card).json()["data"]["pass"] is True


def test_people_import_reports_every_bad_row_and_changes_nothing(
    cfg_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"id": "p1", "name": "One"}]))
    assert cli.main(["people", "import", str(good), "-c", str(cfg_file)]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,name,type,valid_from,blocked,ic_number\n"
        "p2,Two,employee,,,12345678\n"
        ",Nameless,,,,\n"
        "p3,Three,alien,,,\n"
        "p4,Four,,31/12/2026,,\n"
        "p5,Five,,,maybe,\n"
        "p6,Six,,,,12345678\n"
    )
    capsys.readouterr()
    assert cli.main(["people", "import", str(bad), "--replace", "-c", str(cfg_file)]) == 65
    err = capsys.readouterr().err
    for line, text in (
        (3, "id: required"),
        (4, "type: 'alien'"),
        (5, "valid_from"),
        (6, "blocked: 'maybe'"),
        (7, "ic ****5678 already on line 2"),
    ):
        assert f"line {line}: {text}" in err, err
    db = sqlite3.connect(config.load(str(cfg_file)).storage.database_path)
    assert [r[0] for r in db.execute("SELECT id FROM people")] == ["p1"]


def test_people_import_replace_and_dry_run(
    cfg_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "a.json"
    first.write_text(json.dumps({"people": [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}]}))
    second = tmp_path / "b.json"
    second.write_text(json.dumps([{"id": "b", "name": "B2"}, {"id": "c", "name": "C"}]))
    assert cli.main(["people", "import", str(first), "-c", str(cfg_file)]) == 0
    capsys.readouterr()
    args = ["people", "import", str(second), "--replace", "-c", str(cfg_file)]
    assert cli.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+ c" in out and "~ b" in out and "- a" in out
    db_path = config.load(str(cfg_file)).storage.database_path
    names = dict(sqlite3.connect(db_path).execute("SELECT id, name FROM people").fetchall())
    assert names == {"a": "A", "b": "B"}  # the dry run changed nothing
    assert cli.main(args) == 0
    names = dict(sqlite3.connect(db_path).execute("SELECT id, name FROM people").fetchall())
    assert names == {"b": "B2", "c": "C"}


def test_events_lists_and_follows(
    cfg: config.Config, tmp_path: Path, live: LiveDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = dataclasses.replace(cfg.admin, listen=[f"127.0.0.1:{live.daemon.admin_port}"])
    path = write_config(dataclasses.replace(cfg, admin=admin), tmp_path / "live.toml")
    httpx.post(f"{live.url}/eventRcv", json=recognition(uuid="one"))
    httpx.post(f"{live.url}/auth", json=auth_request(user_id="stranger-9"))
    assert cli.main(["events", "-c", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "recognition" in lines[0] and "deny (unknown_person)" in lines[1]
    assert cli.main(["events", "--decision", "deny", "--json", "-c", str(path)]) == 0
    (only,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert only["reason"] == "unknown_person"

    # --follow, in a real process, prints what arrives after it started
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "events", "--follow", "-c", str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        time.sleep(1.5)
        httpx.post(f"{live.url}/eventRcv", json=recognition(uuid="three"))
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(5)
        reader.join(5)
    assert len(seen) == 3 and seen[2].split()[0] == "3"


def test_events_without_daemon_is_one_clear_line(
    cfg_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["events", "-c", str(cfg_file)]) == 69
    err = capsys.readouterr().err.strip()
    assert err.startswith("edged: cannot reach edged at http://127.0.0.1:0")
    assert "\n" not in err


def test_run_with_bad_config_exits_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[receiver]\nlisten = 5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edged", "run", "-c", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 78
    assert proc.stderr.strip() == (
        f"edged: {bad}: receiver.listen (line 2): must be a list, not an integer"
    )


def test_run_serves_and_stops_on_sigterm(cfg_file: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "run", "-c", str(cfg_file)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 20
        while "edged ready" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "edged ready" in line
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert "edged stopped" in proc.stderr.read()


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 64
    assert cli.main(["version"]) == 0


def test_snapshot_of_a_pushed_record_over_the_api_and_the_command_line(
    cfg: config.Config, tmp_path: Path, live: LiveDaemon, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    face = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"
    image = base64.b64encode(face).decode()
    for i in range(3):
        reply = httpx.post(f"{live.url}/eventRcv", json=recognition(uuid=f"s{i}", rgb_image=image))
        assert reply.status_code == 200
    httpx.post(f"{live.url}/eventRcv", json=recognition(uuid="plain"))
    events = httpx.get(f"{live.admin_url}/api/v1/events").json()["events"]
    assert [e["image"] for e in events] == [f"/api/v1/events/{i}/snapshot" for i in (1, 2, 3)] + [
        None
    ]
    url = f"{live.admin_url}/api/v1/events/2/snapshot"
    assert httpx.get(url).status_code == 401  # a face: behind the token
    token = {"authorization": "Bearer test-token"}
    got = httpx.get(url, headers=token)
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert got.content == face
    assert httpx.get(f"{live.admin_url}/api/v1/events/4/snapshot", headers=token).status_code == 404
    assert httpx.get(f"{live.admin_url}/api/v1/events/x/snapshot", headers=token).status_code == 400

    path = write_config(cfg, tmp_path / "edged.toml")
    out = tmp_path / "face.jpg"
    assert cli.main(["snapshot", "3", "-o", str(out), "-c", str(path)]) == 0
    assert out.read_bytes() == face
    capsysbinary.readouterr()
    assert cli.main(["snapshot", "1", "-c", str(path)]) == 0  # stdout is not a terminal here
    assert capsysbinary.readouterr().out == face
    assert cli.main(["snapshot", "4", "-c", str(path)]) == 66  # no snapshot with that record
    assert cli.main(["snapshot", "99", "-c", str(path)]) == 66
    assert b"no event 99" in capsysbinary.readouterr().err
    assert cli.main(["snapshot", "1", "-o", str(tmp_path / "no" / "dir.jpg"), "-c", str(path)]) == 1
