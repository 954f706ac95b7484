"""The command line on real files and a live daemon."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edged import config
from edged.cli import main as cli
from tests.conftest import LiveDaemon, auth_request, recognition

ROOT = Path(__file__).resolve().parents[2]


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


def rows(out: str) -> list[list[str]]:
    """The data rows of a table the command printed (its header row dropped)."""
    lines = out.strip().splitlines()
    assert lines and lines[0].split()[0] == "ID", out
    return [line.split() for line in lines[1:]]


def test_events_limit_tail_and_the_default_page(
    cfg_file: Path, live: LiveDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(25):
        assert httpx.post(f"{live.url}/eventRcv", json=recognition(uuid=f"r{i}")).status_code == 200
    httpx.post(f"{live.url}/auth", json=auth_request(user_id="stranger-9"))
    assert cli.main(["events", "--limit", "4", "-c", str(cfg_file)]) == 0
    out, err = capsys.readouterr()
    assert [r[0] for r in rows(out)] == ["1", "2", "3", "4"]
    assert "more events match than the 4 shown" in err
    assert cli.main(["events", "--tail", "3", "-c", str(cfg_file)]) == 0
    assert [r[0] for r in rows(capsys.readouterr().out)] == ["26", "25", "24"]
    assert cli.main(["events", "-c", str(cfg_file)]) == 0  # a bare call: the newest page
    out, err = capsys.readouterr()
    assert [int(r[0]) for r in rows(out)] == list(range(7, 27))
    assert "more events match than the 20 shown" in err
    assert cli.main(["events", "--decision", "deny", "--json", "-c", str(cfg_file)]) == 0
    (only,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert only["reason"] == "unknown_person" and only["id"] == 26
    future = str(time.time() + 3600)
    assert cli.main(["events", "--since", future, "-c", str(cfg_file)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no events match" in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--since", "yesterday"], "argument --since: 'yesterday' is not an ISO date-time"),
        (["--since", "nan"], "'nan' is not an ISO date-time"),
        (["--limit", "0"], "argument --limit: '0' is not a whole number of 1 or more"),
        (["--limit", "2", "--tail", "2"], "not allowed with argument"),
        (["--tail", "2", "--follow"], "--tail prints newest first"),
    ],
)
def test_events_usage_errors_are_one_line_and_64(
    cfg_file: Path, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["events", *argv, "-c", str(cfg_file)]) == 64
    err = capsys.readouterr().err
    assert err.startswith("edged: events") and says in err and err.count("\n") == 1, err


def test_events_and_status_read_the_database_with_the_daemon_stopped(
    cfg: config.Config, cfg_file: Path, live: LiveDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    httpx.post(f"{live.url}/eventRcv", json=recognition(uuid="one"))
    httpx.post(f"{live.url}/auth", json=auth_request(user_id="stranger-9"))
    live.stop()
    db = cfg.storage.database_path
    before = db.read_bytes()
    assert cli.main(["events", "-c", str(cfg_file)]) == 0
    found = rows(capsys.readouterr().out)
    assert [r[0] for r in found] == ["1", "2"] and found[1][-2:] == ["deny", "(unknown_person)"]
    assert cli.main(["status", "-c", str(cfg_file)]) == 69
    out, err = capsys.readouterr()
    assert out.startswith("test site: NOT RUNNING") and f"{db}, read-only" in out
    assert "cannot reach edged" in err
    lobby = next(line for line in out.splitlines() if line.strip().startswith("lobby"))
    assert "push 20" in lobby  # the last push, as the daemon stored it
    assert db.read_bytes() == before  # read-only: not migrated, not written


def test_events_without_a_database_is_one_clear_line_and_creates_nothing(
    cfg: config.Config, cfg_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["events", "-c", str(cfg_file)]) == 74
    err = capsys.readouterr().err.strip()
    db = cfg.storage.database_path
    assert err == f"edged: {db}: no database yet (edged has not run with this configuration)"
    assert not db.exists()


def test_events_follow_goes_on_across_a_daemon_restart(
    cfg: config.Config,
    cfg_file: Path,
    start_live: Callable[[config.Config], LiveDaemon],
) -> None:
    first = start_live(cfg)
    httpx.post(f"{first.url}/eventRcv", json=recognition(uuid="before"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "events", "--follow", "-c", str(cfg_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 20
        while len(seen) < count and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)

    try:
        wait_for(2)  # the header and event 1
        assert len(seen) == 2 and seen[1].split()[0] == "1"
        httpx.post(f"{first.url}/eventRcv", json=recognition(uuid="while-up"))
        wait_for(3)
        first.stop()
        second = start_live(cfg)  # the same state folder, other ports
        httpx.post(f"{second.url}/eventRcv", json=recognition(uuid="after-restart"))
        wait_for(4)
        assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.wait(5)
        reader.join(5)
    assert [line.split()[0] for line in seen[1:]] == ["1", "2", "3"]


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
    assert (
        cli.main(["snapshot", "1", "-o", str(tmp_path / "no" / "dir.jpg"), "-c", str(path)]) == 73
    )


DOOR_TOML = """
[gpio]
pin_factory = "mock"

[[doors]]
name = "lobby"
lock = { pin = 17 }
"""


def documented_exit_codes() -> set[int]:
    """The codes in docs/cli.md's exit table."""
    text = (ROOT / "docs" / "cli.md").read_text()
    return {int(m) for m in re.findall(r"^\| (\d+) \|", text, flags=re.MULTILINE)}


EXIT_CODES = [  # (argv, the code docs/cli.md gives for it); {db}: a database exists
    ([], 64),
    (["no-such-command"], 64),
    (["events", "--since", "yesterday"], 64),
    (["events", "--tail", "x"], 64),
    (["why", "abc"], 64),
    (["events"], 74),
    (["people", "import", "{tmp}/missing.csv"], 66),
    (["people", "import", "{tmp}/bad.csv"], 65),
    (["people", "show", "nobody"], 66),
    (["people", "remove", "nobody"], 66),
    (["people", "export", "-o", "{tmp}/no/dir/out.json"], 73),
    (["mode", "lockdown", "on", "--door", "nosuch"], 65),
    (["mode", "free-access", "on", "--schedule", "nosuch"], 65),
    (["why", "99", "{db}"], 66),
    (["snapshot", "99", "{db}"], 66),
    (["door", "open", "nosuch"], 65),
    (["door", "open", "lobby"], 69),  # the daemon is not running
    (["status", "{db}"], 69),
    (["status"], 69),
    (["outbox", "{db}"], 0),
    (["check-config"], 0),
    (["version"], 0),
]


@pytest.mark.parametrize(
    ("argv", "code"), EXIT_CODES, ids=[" ".join(a) or "-" for a, _ in EXIT_CODES]
)
def test_exit_codes_are_the_documented_ones(
    make_config: Callable[..., config.Config],
    tmp_path: Path,
    argv: list[str],
    code: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from edged.store import events as store

    cfg = make_config(DOOR_TOML)
    path = write_config(cfg, tmp_path / "edged.toml")
    (tmp_path / "bad.csv").write_text("id,name\n,Nameless\n")
    if "{db}" in argv:
        store.open_database(cfg.storage.database_path).conn.close()
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv if a != "{db}"]
    assert cli.main([*args, "-c", str(path)] if args else []) == code
    assert code in documented_exit_codes() | {0}
    err = capsys.readouterr().err
    if code not in (0, 64) or args:  # every failure says why, prefixed edged:, no traceback
        assert all(line.startswith("edged: ") for line in err.splitlines()), err
    assert "Traceback" not in err


def test_bad_configuration_is_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[receiver]\nlisten = 5\n")
    assert cli.main(["check-config", "-c", str(bad)]) == 78
    assert 78 in documented_exit_codes()


REPR = re.compile(r"\b(None|True|False)\b|[{}\[\]]")


def test_no_python_reprs_in_any_command_s_output(
    make_config: Callable[..., config.Config],
    mock_factory: object,
    start_live: Callable[[config.Config], LiveDaemon],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.conftest import grant_person

    cfg = make_config(DOOR_TOML)
    path = str(write_config(cfg, tmp_path / "edged.toml"))
    live = start_live(cfg)
    path = str(
        write_config(
            dataclasses.replace(
                cfg,
                admin=dataclasses.replace(
                    cfg.admin, listen=[f"127.0.0.1:{live.daemon.admin_port}"]
                ),
            ),
            tmp_path / "live.toml",
        )
    )
    grant_person(cfg.storage.database_path)
    httpx.post(f"{live.url}/auth", json=auth_request(ts=time.time() - 3))
    httpx.post(f"{live.url}/auth", json=auth_request(user_id="stranger-9", ts=time.time() - 2))
    no_user = auth_request(user_id=None, ts=time.time() - 1, entry_mode=None, recognizeScore=None)
    httpx.post(f"{live.url}/auth", json=no_user)
    httpx.post(f"{live.url}/eventRcv", json=recognition(uuid="seen"))
    people_file = tmp_path / "more.csv"
    people_file.write_text("id,name,groups\nv-1,Vic,visitors\n")
    commands = [
        ["status"],
        ["events"],
        ["events", "--tail", "2"],
        ["why", "1"],
        ["why", "2"],
        ["why", "3"],
        ["why", "4"],
        ["door", "hold", "lobby"],
        ["status"],
        ["door", "lock", "lobby"],
        ["people", "import", str(people_file), "--dry-run"],
        ["people", "import", str(people_file)],
        ["people", "list"],
        ["people", "show", "e-1"],
        ["people", "show", "v-1"],
        ["people", "remove", "v-1", "--dry-run"],
        ["mode", "lockdown", "on", "--door", "lobby"],
        ["mode", "show"],
        ["mode", "lockdown", "off", "--door", "lobby"],
        ["outbox"],
        ["check-config"],
    ]
    outputs = []
    for argv in commands:
        assert cli.main([*argv, "-c", path]) in (0, 1), argv
        out, err = capsys.readouterr()
        outputs.append((argv, out + err))
    live.stop()
    for argv in (["status"], ["events"], ["outbox"]):
        cli.main([*argv, "-c", path])
        out, err = capsys.readouterr()
        outputs.append((argv, out + err))
    for argv, text in outputs:
        assert text.strip(), argv
        leak = REPR.search(text)
        assert leak is None, f"{' '.join(argv)}: {leak.group() if leak else ''} in\n{text}"
