"""The people, mode and why commands through cli.main on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edged import cli, config, store
from edged.receiver import Receiver, create_app
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
    assert out.split()[0] == "e-1" and "e-2" not in out
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
    assert db(conf).execute("SELECT COUNT(*) FROM people").fetchone()[0] == 0


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
