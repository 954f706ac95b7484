"""The web page on a live daemon: login, pages, actions with CSRF, import, the live stream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from edged.config import Config
from tests.conftest import LiveDaemon, auth_request, recognition
from tests.doorfix import DOOR_SERIAL, LOCK, add_person, doors_toml, pin, wire_idle, wire_inputs
from tests.web.helpers import NAME, PASSWORD, csrf_of, login, web_config
from tests.web.helpers import client as web_client

TOKEN = {"authorization": "Bearer test-token"}


@pytest.fixture
def site(
    make_config: Callable[..., Config],
    mock_factory: MockFactory,
    start_live: Callable[[Config], LiveDaemon],
) -> LiveDaemon:
    wire_idle()
    cfg = web_config(make_config, doors_toml())
    live = start_live(cfg)
    wire_inputs()
    deadline = time.monotonic() + 5
    while live.daemon.doors and live.daemon.doors.fire and time.monotonic() < deadline:
        time.sleep(0.01)
    add_person(cfg.storage.database_path)
    return live


@pytest.fixture
def browser(site: LiveDaemon) -> Iterator[httpx.Client]:
    with web_client(site.admin_url) as client:
        assert login(client).status_code == 303
        yield client


def test_pages_need_a_login_and_health_stays_public(site: LiveDaemon) -> None:
    with web_client(site.admin_url) as anon:
        for path in ("/ui/", "/ui/events", "/ui/events/1", "/ui/people", "/ui/people/import"):
            reply = anon.get(path)
            assert reply.status_code == 303, path
            assert reply.headers["location"].startswith("/ui/login?next=")
        assert anon.get("/ui/stream").status_code == 401
        assert anon.get("/").headers["location"] == "/ui/"
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/metrics").status_code == 200
        page = anon.get("/ui/login")
        assert page.status_code == 200 and 'name="password"' in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_login_sets_a_strict_cookie_and_refuses_wrong_passwords(site: LiveDaemon) -> None:
    with web_client(site.admin_url) as client:
        wrong = login(client, password="not the password")
        assert wrong.status_code == 401 and "wrong name or password" in wrong.text
        assert "set-cookie" not in wrong.headers
        right = login(client)
        assert right.status_code == 303 and right.headers["location"] == "/ui/"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    with web_client(site.admin_url, headers={"x-forwarded-proto": "https"}) as tls:
        assert "; Secure" in login(tls).headers["set-cookie"]
    with web_client(site.admin_url) as client:
        reply = client.post(
            "/ui/login", data={"name": NAME, "password": PASSWORD, "next": "//evil.example/"}
        )
        assert reply.headers["location"] == "/ui/"  # no open redirect


def test_logins_are_rate_limited(site: LiveDaemon) -> None:
    with web_client(site.admin_url) as client:
        for _ in range(3):  # web.login_attempts in the helpers' configuration
            assert login(client, password="guess-guess").status_code == 401
        limited = login(client)
        assert limited.status_code == 429 and "too many failed logins" in limited.text


def test_overview_events_and_people_pages(site: LiveDaemon, browser: httpx.Client) -> None:
    with web_client(site.url) as terminal:
        granted = terminal.post("/auth", json=auth_request(serial=DOOR_SERIAL)).json()
        assert granted["data"]["pass"] is True
        terminal.post("/eventRcv", json=recognition(uuid="w1"))
    overview = browser.get("/ui/")
    assert overview.status_code == 200
    assert 'id="door-lobby"' in overview.text and "lobby-door" in overview.text
    assert "Log out ann" in overview.text
    events = browser.get("/ui/events", params={"decision": "pass"})
    assert events.status_code == 200 and "granted" in events.text
    assert "/ui/events/2" not in events.text  # the recognition is filtered out
    detail = browser.get("/ui/events/1")
    assert detail.status_code == 200 and 'id="why"' in detail.text and "granted" in detail.text
    assert browser.get("/ui/events/999").status_code == 404
    found = browser.get("/ui/people", params={"q": "ann"})
    assert "/ui/people/e-1" in found.text
    person = browser.get("/ui/people/e-1")
    assert person.status_code == 200 and "lobby" in person.text
    assert browser.get("/ui/people/nobody").status_code == 404
    export = browser.get("/api/v1/events.csv")  # the session's cookie is enough to read
    assert export.status_code == 200 and export.text.count("\n") == 3


def test_writes_need_session_and_csrf_and_are_audited(
    site: LiveDaemon, browser: httpx.Client
) -> None:
    csrf = csrf_of(browser.get("/ui/").text)
    with web_client(site.admin_url) as anon:
        assert anon.post("/api/v1/doors/lobby/open").status_code == 401
    assert browser.post("/api/v1/doors/lobby/open").status_code == 401  # no CSRF token
    forged = browser.post("/api/v1/doors/lobby/open", headers={"x-csrf-token": "guess"})
    assert forged.status_code == 401
    opened = browser.post("/api/v1/doors/lobby/open", headers={"x-csrf-token": csrf})
    assert opened.status_code == 200 and pin(LOCK).state is True
    log = httpx.get(f"{site.admin_url}/api/v1/doors/log").json()["entries"]
    assert any(e["source"] == f"web:{NAME}@127.0.0.1" for e in log), log
    switch = browser.post(
        "/api/v1/modes",
        json={"mode": "lockdown", "on": True, "by": "someone-else"},
        headers={"x-csrf-token": csrf},
    )
    assert switch.status_code == 200
    modes = httpx.get(f"{site.admin_url}/api/v1/modes").json()
    assert modes["changes"][0]["by"] == f"web:{NAME}"  # not what the body claims
    assert "lockdown ON" in browser.get("/ui/").text
    assert (
        httpx.post(  # the bearer token keeps working beside sessions
            f"{site.admin_url}/api/v1/modes", json={"mode": "lockdown", "on": False}, headers=TOKEN
        ).status_code
        == 200
    )


def test_import_previews_then_applies(site: LiveDaemon, browser: httpx.Client) -> None:
    csrf = csrf_of(browser.get("/ui/people/import").text)
    doc = json.dumps({"people": [{"id": "p-9", "name": "Pia Preview", "groups": "staff"}]})
    form = {"csrf": csrf, "format": "json", "document": doc, "action": "preview"}
    preview = browser.post("/ui/people/import", data=form)
    assert preview.status_code == 200 and "+ p-9" in preview.text and 'id="apply"' in preview.text
    assert "p-9" not in browser.get("/ui/people").text  # nothing written yet
    applied = browser.post("/ui/people/import", data={**form, "action": "apply"})
    assert applied.status_code == 200 and "Applied" in applied.text
    assert "Pia Preview" in browser.get("/ui/people", params={"q": "pia"}).text
    bad = browser.post("/ui/people/import", data={**form, "document": '{"people": [{"id": ""}]}'})
    assert bad.status_code == 422 and 'class="error"' in bad.text
    assert browser.post("/ui/people/import", data={**form, "csrf": "x"}).status_code == 403


def read_stream(
    client: httpx.Client,
    path: str,
    want: Callable[[list[dict]], bool],
    got: list[dict],
    done: threading.Event,
) -> None:
    with client.stream("GET", path, timeout=10) as reply:
        kind = ""
        for raw in reply.iter_lines():
            line = raw.rstrip("\r\n")  # httpx 0.23 (bookworm) keeps the line ends
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                got.append(
                    {"event": kind, **json.loads(line[6:])}
                    if line[6:].startswith("{")
                    else {"event": kind}
                )
                if want(got):
                    done.set()
                    return


def test_the_stream_pushes_records_and_state(site: LiveDaemon, browser: httpx.Client) -> None:
    got: list[dict] = []
    done = threading.Event()
    records = lambda items: any(i["event"] == "record" for i in items)  # noqa: E731
    reader = threading.Thread(
        target=read_stream, args=(browser, "/ui/stream?decision=pass", records, got, done)
    )
    reader.start()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:  # the first state event: subscribed
        time.sleep(0.02)
    assert got and got[0]["event"] == "state" and got[0]["doors"][0]["name"] == "lobby"
    with web_client(site.url) as terminal:
        terminal.post("/auth", json=auth_request(user_id="stranger"))  # a deny: filtered out
        sent = time.monotonic()
        terminal.post("/auth", json=auth_request(serial=DOOR_SERIAL, ts=time.time() + 1))
    assert done.wait(5)
    took = time.monotonic() - sent
    reader.join(5)
    pushed = [i for i in got if i["event"] == "record"]
    assert [(i["decision"], i["person_id"]) for i in pushed] == [("pass", "e-1")]
    assert took < 1.0
    assert any(i["event"] == "state" and not i["doors"][0]["locked"] for i in got)


def test_logout_ends_the_session(site: LiveDaemon, browser: httpx.Client) -> None:
    csrf = csrf_of(browser.get("/ui/").text)
    assert browser.post("/ui/logout", data={"csrf": "wrong"}).status_code == 403
    out = browser.post("/ui/logout", data={"csrf": csrf})
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    assert browser.get("/ui/").status_code == 303
    refused = browser.post("/api/v1/doors/lobby/open", headers={"x-csrf-token": csrf})
    assert refused.status_code == 401


def test_without_web_the_pages_are_not_served(live: LiveDaemon) -> None:
    assert httpx.get(f"{live.admin_url}/ui/").status_code == 404
    assert httpx.get(f"{live.admin_url}/healthz").status_code == 200


def test_an_open_stream_does_not_hold_up_the_stop(make_config: Callable[..., Config]) -> None:
    live = LiveDaemon(web_config(make_config))
    stopped = False
    try:
        client = web_client(live.admin_url, timeout=10)
        assert login(client).status_code == 303
        opened = threading.Event()
        ended = threading.Event()

        def hold() -> None:
            try:
                with client.stream("GET", "/ui/stream") as reply:
                    for _ in reply.iter_lines():
                        opened.set()
            except httpx.HTTPError:
                pass
            ended.set()

        threading.Thread(target=hold, daemon=True).start()
        assert opened.wait(5)
        began = time.monotonic()
        live.stop()
        stopped = True
        took = time.monotonic() - began
        assert ended.wait(5)
        assert took < 3.0, f"the stop took {took:.1f} s with a stream open"
    finally:
        if not stopped:
            live.stop()


def test_bad_input_gets_a_clear_answer(site: LiveDaemon, browser: httpx.Client) -> None:
    csrf = csrf_of(browser.get("/ui/people/import").text)
    assert browser.get("/ui/events/abc").status_code == 404
    assert browser.get("/ui/people/%00x").status_code == 404
    assert browser.get("/ui/static/../pages.py").status_code == 404
    not_utf8 = browser.post(
        "/ui/people/import",
        content=b"csrf=" + csrf.encode() + b"&document=\xff\xfe",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert not_utf8.status_code == 400 and "not UTF-8" in not_utf8.text
    many = "&".join(f"f{i}=x" for i in range(100))
    crowded = browser.post(
        "/ui/people/import",
        content=many.encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert crowded.status_code == 400 and "too many fields" in crowded.text
    with web_client(site.admin_url) as anon:
        junk = anon.post("/ui/login", content=b"\xff" * 100)
        assert junk.status_code == 400
        big = anon.post("/ui/login", content=b"a" * (70 * 1024))
        assert big.status_code == 400 and "larger than" in big.text


def test_trust_a_terminal_from_the_page(
    tmp_path: Path, start_live: Callable[[Config], LiveDaemon]
) -> None:
    import asyncio

    from edged import config
    from edged.web import accounts
    from tests.simfix import free_port, make_sim, managed_config

    sim = make_sim(tmp_path, firmware="1.3.0")
    asyncio.run(sim.start())
    try:
        state = tmp_path / "state"
        state.mkdir()
        base = managed_config(state, sim, gateway_port=free_port(), tls_fingerprint=None)
        data = config.to_dict(base, mask=False)
        data["web"].update(enabled=True)
        cfg = config.parse(config.to_toml(data), "trust.toml")
        accounts.set_password(cfg.web.accounts_path(cfg.storage.state_dir), NAME, PASSWORD)
        live = start_live(cfg)
        with web_client(live.admin_url) as browser:
            assert login(browser).status_code == 303
            deadline = time.monotonic() + 20
            while 'id="trust-lobby"' not in (page := browser.get("/ui/").text):
                assert time.monotonic() < deadline, "the terminal never showed as untrusted"
                time.sleep(0.1)
            assert not sim.registered
            csrf = csrf_of(page)
            url = "/ui/terminals/lobby/trust"
            ask = browser.post(url, data={"csrf": csrf})  # the first step shows the certificate
            assert ask.status_code == 200 and sim.fingerprint in ask.text
            assert 'id="confirm-trust"' in ask.text and not sim.registered
            wrong = browser.post(url, data={"csrf": csrf, "fingerprint": "AA:" * 31 + "AA"})
            assert wrong.status_code == 409 and "nothing was trusted" in wrong.text
            assert browser.post(url, data={"fingerprint": sim.fingerprint}).status_code == 403
            assert (
                browser.post("/ui/terminals/nowhere/trust", data={"csrf": csrf}).status_code == 404
            )
            done = browser.post(url, data={"csrf": csrf, "fingerprint": sim.fingerprint})
            assert done.status_code == 303
            deadline = time.monotonic() + 20
            while not sim.registered:
                assert time.monotonic() < deadline, "not registered after the trust"
                time.sleep(0.05)
    finally:
        asyncio.run(sim.stop())


def test_a_person_page_shows_the_face_and_where_they_are_on_the_terminals(
    site: LiveDaemon, browser: httpx.Client
) -> None:
    import base64

    from tests.conftest import face_jpeg

    photo = face_jpeg(7)
    encoded = base64.b64encode(photo).decode()
    body = {"people": [{"id": "f-1", "name": "Fay", "face_base64": encoded}]}
    with web_client(site.admin_url) as api:
        assert api.post("/api/v1/people", json=body, headers=TOKEN).status_code == 200
    page = browser.get("/ui/people/f-1")
    assert page.status_code == 200
    assert 'src="/ui/people/f-1/face"' in page.text and f"{len(photo)} bytes" in page.text
    assert "not on any terminal" in page.text  # no people sync on this site
    face = browser.get("/ui/people/f-1/face")
    assert face.status_code == 200 and face.headers["content-type"] == "image/jpeg"
    assert face.content == photo
    assert browser.get("/ui/people/nobody/face").status_code == 404
    with web_client(site.admin_url) as anon:
        assert anon.get("/ui/people/f-1/face").status_code == 303  # behind the login


def test_import_keeps_a_base64_face_and_reads_no_file_on_the_gateway(
    site: LiveDaemon, browser: httpx.Client, tmp_path: Path
) -> None:
    import base64

    from tests.conftest import face_jpeg

    photo = face_jpeg(3)
    csrf = csrf_of(browser.get("/ui/people/import").text)
    doc = {
        "people": [{"id": "f-2", "name": "Faye", "face_base64": base64.b64encode(photo).decode()}]
    }
    form = {"csrf": csrf, "format": "json", "document": json.dumps(doc), "action": "apply"}
    applied = browser.post("/ui/people/import", data=form)
    assert applied.status_code == 200 and "Applied" in applied.text
    face = browser.get("/ui/people/f-2/face")
    assert face.status_code == 200 and face.content == photo
    # a file named in the pasted document is never read, however it is named
    (tmp_path / "other.jpg").write_bytes(face_jpeg(4))
    for named in (str(tmp_path / "other.jpg"), "other.jpg", "/etc/passwd"):
        doc = {"people": [{"id": "f-3", "name": "Finn", "face": named}]}
        refused = browser.post("/ui/people/import", data={**form, "document": json.dumps(doc)})
        assert refused.status_code == 422
        assert "send face_base64" in refused.text and "cannot read" not in refused.text
    csv_doc = f"id,name,face\nf-4,Flo,{tmp_path / 'other.jpg'}\n"
    refused = browser.post("/ui/people/import", data={**form, "format": "csv", "document": csv_doc})
    assert refused.status_code == 422 and "send face_base64" in refused.text
    assert (
        "f-3" not in browser.get("/ui/people").text and "f-4" not in browser.get("/ui/people").text
    )
