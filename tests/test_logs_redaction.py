"""Journal priorities on every line, and no card numbers, PINs or images in any log line."""

from __future__ import annotations

import json
import logging

import pytest

from edged import logs
from edged.config import Config
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from tests.conftest import SERIAL, asgi_client, recognition

PIN = "4711"
CARD = "99887766"
IMAGE = "/9j/" + "A" * 400


pytestmark = pytest.mark.usefixtures("restore_root_logger")


def emit(capsys: pytest.CaptureFixture[str], fmt: str, level: int, msg: str, *args: object) -> str:
    logs.setup("debug", fmt)
    logging.getLogger("edged.test").log(level, msg, *args)
    return capsys.readouterr().err


def test_journal_lines_carry_priority_and_no_timestamp(capsys: pytest.CaptureFixture[str]) -> None:
    assert emit(capsys, "journal", logging.ERROR, "terminal %s down", "lobby") == (
        "<3>edged.test: terminal lobby down\n"
    )
    assert emit(capsys, "journal", logging.WARNING, "w").startswith("<4>")
    assert emit(capsys, "journal", logging.INFO, "i").startswith("<6>")
    assert emit(capsys, "journal", logging.DEBUG, "d").startswith("<7>")


def test_journal_traceback_lines_all_keep_the_priority(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", "journal")
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("edged.test").exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)


def test_auto_means_journal_under_journald(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert logs.choose_format("auto") == "journal"
    monkeypatch.delenv("JOURNAL_STREAM")
    assert logs.choose_format("auto") == "text"
    assert logs.choose_format("json") == "json"


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(recognition(rgb_image=IMAGE, user={"pin": PIN, "ic_number": CARD})),
        str({"pin": PIN, "ic_number": int(CARD), "qrcode_content": "QR" + CARD}),
        f"user.pin: expected a string, got [{PIN}]",
        f'user.ic_number: expected a string, got {{"n": "{CARD}"}}',
        f"snapshot {IMAGE}",
        f'{{"id_number": ["{CARD}", "{PIN}"]}}',
    ],
)
def test_secrets_never_survive_redaction(text: str) -> None:
    clean = logs.redact(text)
    assert PIN not in clean and CARD not in clean and IMAGE[:200] not in clean


def test_redaction_keeps_ordinary_lines() -> None:
    line = "door lobby: relay on pin=17; user.name: expected a string, got 3"
    assert logs.redact(line) == line


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("serial", "status", "logged"),
    [
        ("UNKNOWN1", 400, "<4>edged.receive.receiver: refused /eventRcv"),
        (SERIAL, 200, "<4>edged.receive.receiver: stored malformed record #1"),  # docs/receiver.md
    ],
)
async def test_refused_payload_logs_no_card_number(
    cfg: Config, capsys: pytest.CaptureFixture[str], serial: str, status: int, logged: str
) -> None:
    logs.setup("info", "journal")
    st = store.Store(cfg.storage.database_path, None, 0)
    try:
        app = create_app(Receiver(cfg, st))
        bad = recognition(serial=serial)
        bad["data"]["user"]["ic_number"] = {"n": CARD}
        async with asgi_client(app) as client:
            response = await client.post("/eventRcv", json=bad)
    finally:
        st.close()
    assert response.status_code == status
    err = capsys.readouterr().err
    assert logged in err and "user.ic_number" in err
    assert CARD not in err
