"""The people, mode and why commands through cli.main on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edged import config
from edged.cli import main as cli
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from tests.conftest import asgi_client, auth_request

pytestmark = pytest.mark.anyio

DOC = {
    "people": [
        {"id": "e-1", "name": "Ann", "groups": ["staff"], "ic_number": "11223344"},
        {"id": "e-2", "name": "Bob", "groups": ["visitors"], "blocked": True},
    ],
    "groups": [{"id": "security", "name": "Security"}],
    "permissions": [{"group": "staff", "door": "lobby"}],
}


@pytest.fixture
def conf(tmp_path: Path) -> tuple[str, config.Config]:
    path = tmp_path / "edged.toml"
    path.write_text(
        f'[site]\ntimezone = "Europe/Berlin"\n[storage]\nstate_dir = "{tmp_path / "state"}"\n'
        '[[terminals]]\nname = "lobby"\nserial = "PS71HD01MC22C00014"\n'
        '[[terminals]]\nname = "side-gate"\nserial = "PS71HD01MC22C00016"\n'
    )
    return str(path), config.load(str(path))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def db(conf: tuple[str, config.Config]) -> sqlite3.Connection:
    return sqlite3.connect(conf[1].storage.database_path)


def test_import_list_show_export_remove(
    tmp_path: Path, conf: tuple[str, config.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = conf
    file = write(tmp_path, "site.json", DOC)
    code, out, _ = run(capsys, "people", "import", file, "--dry-run", "-c", path)
    assert code == 0 and "would add 2" in out and "+ e-1" in out
    code, out, _ = run(capsys, "people", "import", file, "-c", path)
    assert code == 0 and "people: 2 read; did add 2" in out
    code, out, _ = run(capsys, "people", "list", "--group", "staff", "-c", path)
    header, *listed = out.splitlines()
    assert header.split() == ["ID", "NAME", "TYPE", "GROUPS"]
    assert [line.split()[0] for line in listed] == ["e-1"]
    code, out, _ = run(capsys, "people", "show", "e-2", "-c", path)
    shown_text = dict(line.split(None, 1) for line in out.splitlines() if " " in line.strip())
    assert shown_text["blocked"] == "yes" and shown_text["valid_from"] == "-"
    assert shown_text["groups"] == "visitors"
    code, out, _ = run(capsys, "people", "show", "e-1", "--json", "-c", path)
    shown = json.loads(out)
    assert shown["groups"] == ["staff"] and shown["ic_number"] == ["****3344"]
    code, out, _ = run(capsys, "people", "export", "-c", path)
    exported = json.loads(out)
    assert [p["id"] for p in exported["people"]] == ["e-1", "e-2"]
    assert exported["people"][0]["ic_number"] == ["11223344"]
    code, out, _ = run(capsys, "people", "export", "--format", "csv", "-c", path)
    assert out.splitlines()[0].startswith("id,name,type") and "staff" in out
    code, out, err = run(capsys, "people", "remove", "e-2", "ghost", "-c", path)
    assert code == 66 and "removed 1: e-2" in out and "ghost" in err
    code, _, err = run(capsys, "people", "show", "e-2", "-c", path)
    assert code == 66 and "no person" in err


def test_bad_file_exits_65_and_changes_nothing(
    tmp_path: Path, conf: tuple[str, config.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = conf
    file = write(tmp_path, "bad.csv", "id,name,type\na,A,employee\n,B,employee\nc,C,robot\n")
    code, _, err = run(capsys, "people", "import", file, "--replace", "-c", path)
    assert code == 65
    assert err.splitlines() == [
        "edged: line 3: id: required",
        "edged: line 4: type: 'robot' is not one of employee, visitor, contractor, other",
    ]
    assert not conf[1].storage.database_path.exists()  # refused before the database opened


def test_mode_switches_are_audited_with_the_os_user(
    conf: tuple[str, config.Config],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path, _ = conf
    monkeypatch.setenv("SUDO_USER", "alice")
    run(capsys, "people", "import", write(tmp_path, "d.json", DOC), "-c", path)
    code, out, _ = run(capsys, "mode", "lockdown", "on", "--override-group", "security", "-c", path)
    assert code == 0 and "site: lockdown on" in out
    code, out, _ = run(capsys, "mode", "free-access", "on", "--door", "lobby", "-c", path)
    assert code == 0 and "door lobby" in out
    code, _, err = run(capsys, "mode", "lockdown", "on", "--override-group", "nope", "-c", path)
    assert code == 65 and "group 'nope' does not exist" in err
    code, _, err = run(capsys, "mode", "lockdown", "on", "--override-group", "securty", "-c", path)
    assert code == 65 and "did you mean 'security'?" in err
    code, out, _ = run(capsys, "mode", "show", "--json", "-c", path)
    shown = json.loads(out)
    assert [c["by"] for c in shown["changes"]] == ["cli:alice", "cli:alice"]
    assert {m["scope"]: m["lockdown"] for m in shown["modes"]} == {"*": True, "lobby": False}


async def test_why_explains_a_stored_decision(
    conf: tuple[str, config.Config],
    make_config: Callable[..., config.Config],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, _ = conf
    run(capsys, "people", "import", write(tmp_path, "d.json", DOC), "-c", path)
    live_cfg = make_config(state=tmp_path / "state")
    st = store.Store(live_cfg.storage.database_path)
    try:
        async with asgi_client(create_app(Receiver(live_cfg, st))) as client:
            ok = await client.post("/auth", json=auth_request(ts=time.time()))
            no = await client.post("/auth", json=auth_request(user_id="e-2", ts=time.time() + 1))
    finally:
        st.close()
    assert ok.json()["data"]["pass"] is True and no.json()["data"]["pass"] is False
    code, out, _ = run(capsys, "why", "1", "-c", path)
    assert code == 0
    assert "decision: pass (granted), rule permission:staff@lobby/always" in out
    assert "door lobby" in out and "PASS granted" in out
    code, out, _ = run(capsys, "why", "2", "-c", path)
    assert "deny (blocked)" in out and "person is blocked" in out
    code, _, err = run(capsys, "why", "99", "-c", path)
    assert code == 66 and "no event 99" in err


@pytest.mark.parametrize("mode", ["lockdown", "free-access"])
def test_a_mode_switch_for_a_door_that_is_not_configured_fails(
    mode: str, conf: tuple[str, config.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = conf
    code, out, err = run(capsys, "mode", mode, "on", "--door", "lobyy", "-c", path)
    assert code == 65 and out == ""
    assert err == "edged: door 'lobyy' does not exist; did you mean 'lobby'?\n"
    code, _, err = run(capsys, "mode", mode, "on", "--door", "nosuch", "-c", path)
    assert code == 65 and "(known: lobby, side-gate)" in err
    assert db(conf).execute("SELECT COUNT(*) FROM modes").fetchone()[0] == 0  # no phantom scope
    assert db(conf).execute("SELECT COUNT(*) FROM mode_changes").fetchone()[0] == 0
    code, out, _ = run(capsys, "mode", mode, "on", "--door", "side-gate", "-c", path)
    assert code == 0 and "door side-gate" in out


def test_a_stray_scope_from_before_can_still_be_switched_off(
    conf: tuple[str, config.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    path, cfg = conf
    conn = store.open_database(cfg.storage.database_path).conn
    conn.execute("INSERT INTO modes (scope, lockdown) VALUES ('nosuch', 1)")  # an older edged
    conn.close()
    code, out, _ = run(capsys, "mode", "show", "-c", path)
    assert "nosuch" in out and "(not a configured door)" in out
    code, out, _ = run(capsys, "mode", "lockdown", "off", "--door", "nosuch", "-c", path)
    assert code == 0 and "lockdown off" in out


def test_import_warns_of_unconfigured_doors_and_near_duplicate_groups(
    tmp_path: Path, conf: tuple[str, config.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = conf
    run(capsys, "people", "import", write(tmp_path, "d.json", DOC), "-c", path)
    doc = {
        "people": [{"id": "e-3", "name": "Cy", "groups": ["staf"]}],
        "permissions": [
            {"group": "visitors", "door": "lobyy"},
            {"group": "team-b", "door": "side-gate"},
        ],
        "doors": [{"name": "cellar"}],
        "groups": [{"id": "team-a"}],
    }
    file = write(tmp_path, "typos.json", doc)
    code, _, err = run(capsys, "people", "import", file, "--strict", "-c", path)
    expected = [
        "edged: line 1: permission for group 'visitors' names door 'lobyy', which is not "
        "configured; did you mean 'lobby'?",
        "edged: line 1: settings for door 'cellar', which is not configured",
        "edged: line 1: group 'staf' is new, one typo away from 'staff'",
        "edged: line 1: group 'team-b' is new, one typo away from 'team-a'",
        "edged: --strict: nothing was imported",
    ]
    assert code == 65 and err.splitlines() == expected
    assert db(conf).execute("SELECT COUNT(*) FROM people").fetchone()[0] == 2
    code, out, err = run(capsys, "people", "import", file, "-c", path)
    assert code == 0 and "people: 1 read; did add 1" in out
    assert err.splitlines() == [
        line.replace("edged: ", "edged: warning: ", 1) for line in expected[:-1]
    ]
    groups = {r[0] for r in db(conf).execute("SELECT id FROM groups")}
    assert {"staf", "team-b"} <= groups


def test_an_unclosed_quote_in_a_csv_imports_nothing(
    tmp_path: Path, conf: tuple[str, config.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = conf
    file = write(tmp_path, "p.csv", 'id,name,groups\n50,Bea,staff\n51,"Carol,staff\n52",Dan\n')
    code, out, err = run(capsys, "people", "import", file, "-c", path)
    assert code == 65 and out == ""
    assert err == "edged: line 3: name: the quoted value runs over lines 3-4 (an unclosed quote?)\n"
    code, _, err = run(capsys, "people", "import", str(tmp_path / "nope.csv"), "-c", path)
    assert code == 66 and "nope.csv: cannot read: No such file or directory" in err


def test_a_face_is_imported_shown_exported_and_removed_with_its_person(
    tmp_path: Path, conf: tuple[str, config.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import face_jpeg

    path, cfg = conf
    (tmp_path / "ann.jpg").write_bytes(face_jpeg(5))
    (tmp_path / "people.csv").write_text("id,name,face\ne-1,Ann,ann.jpg\ne-2,Bob,\n")
    code, out, _ = run(capsys, "people", "import", str(tmp_path / "people.csv"), "-c", path)
    assert code == 0 and "did add 2" in out
    faces_dir = cfg.storage.faces_path
    assert [p.read_bytes() for p in faces_dir.glob("*/*.jpg")] == [face_jpeg(5)]
    code, out, _ = run(capsys, "people", "show", "e-1", "-c", path)
    line = next(x for x in out.splitlines() if x.startswith("face "))
    assert f"on file ({len(face_jpeg(5))} bytes, sha256 " in line
    code, out, _ = run(capsys, "people", "show", "e-2", "-c", path)
    assert next(x for x in out.splitlines() if x.startswith("face ")).split() == ["face", "none"]
    code, out, _ = run(capsys, "people", "export", "-c", path)
    assert json.loads(out)["people"][0]["face_base64"]
    code, out, _ = run(capsys, "people", "remove", "e-1", "-c", path)
    assert code == 0 and list(faces_dir.glob("*/*.jpg")) == []
