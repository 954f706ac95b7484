"""Source binding: a request naming a terminal is accepted only from that terminal's address.

Forged requests come from real loopback sockets bound to other 127.0.0.x addresses (a live
daemon), or through the ASGI stack with a chosen client address; the door's lock output is a
gpiozero MockFactory pin that must never go high for them.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from edged import config
from edged.cli import main as cli
from edged.config import Config
from edged.errors import ConfigError
from edged.receive import binding
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from tests.conftest import (
    BASE_TOML,
    SERIAL,
    SERIAL_OLD,
    LiveDaemon,
    asgi_client,
    auth_request,
    grant_person,
    recognition,
)

MANAGED, FIXED, FIRST = "BIND00000000000001", "BIND00000000000002", "BIND00000000000003"
MANAGED_AT, FIXED_AT, FIRST_AT, NEW_AT, FORGER = (
    "127.0.0.22",
    "127.0.0.23",
    "127.0.0.24",
    "127.0.0.25",
    "127.0.0.99",
)
LOCK = 17

BINDING_TOML = """
[gpio]
pin_factory = "mock"

[gateway]
public_url = "http://127.0.0.1:8090"

[[doors]]
name = "front"
lock = {{ pin = {lock} }}
unlock_time = 0.2

[[terminals]]
name = "managed"
serial = "{managed}"
host = "{managed_at}"
door = "front"

[[terminals]]
name = "fixed"
serial = "{fixed}"
address = "{fixed_at}"
door = "front"

[[terminals]]
name = "roaming"
serial = "{first}"
door = "front"
"""


def config_text(state: Path) -> str:
    base = BASE_TOML.format(state=state, serial=SERIAL, serial_old=SERIAL_OLD)
    extra = BINDING_TOML.format(
        lock=LOCK,
        managed=MANAGED,
        managed_at=MANAGED_AT,
        fixed=FIXED,
        fixed_at=FIXED_AT,
        first=FIRST,
    )
    return base + extra


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "edged.toml"
    path.write_text(config_text(tmp_path / "state"))
    return path


@pytest.fixture
def bound_cfg(config_file: Path, mock_factory: MockFactory) -> Config:
    return config.load(str(config_file))


@pytest.fixture
def live(bound_cfg: Config) -> Iterator[LiveDaemon]:
    daemon = LiveDaemon(bound_cfg)
    grant_person(bound_cfg.storage.database_path, door="front")
    yield daemon
    daemon.stop()


def send(
    live: LiveDaemon,
    source: str,
    body: dict[str, Any] | None,
    path: str = "/auth",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A request over a real socket whose source address is ``source``."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=5.0) as client:
        if body is None:
            return client.get(live.url + path, headers=headers)
        return client.post(live.url + path, json=body, headers=headers)


def lock_levels() -> list[bool]:
    assert Device.pin_factory is not None
    return [bool(s.state) for s in Device.pin_factory.pin(LOCK).states]


def rows(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def cli_out(capsys: pytest.CaptureFixture[str], config_file: Path, *argv: str) -> str:
    capsys.readouterr()
    assert cli.main([*argv[:2], "--config", str(config_file), *argv[2:]]) == 0
    return capsys.readouterr().out


# ----- plain values ---------------------------------------------------------------------------


def test_binding_of_prefers_address_then_host_then_pin() -> None:
    ip = binding.parse_ip
    home = ipaddress.ip_address("10.0.0.5")
    both = config.TerminalConfig(name="a", serial="S", host="10.0.0.5", address="10.0.1.0/28")
    assert binding.binding_of(both, [home], "10.0.2.2").how == "address"
    managed = config.TerminalConfig(name="b", serial="S", host="10.0.0.5")
    bound = binding.binding_of(managed, [home], "10.0.2.2")
    assert bound.how == "host" and bound.allows(ip("10.0.0.5"))
    assert not bound.allows(ip("10.0.2.2"))
    receive_only = config.TerminalConfig(name="c", serial="S")
    pinned = binding.binding_of(receive_only, [], "10.0.2.2")
    assert pinned.how == "pinned" and pinned.allows(ip("::ffff:10.0.2.2"))
    assert binding.binding_of(receive_only, [], None).how == "unpinned"
    unresolved = binding.binding_of(
        config.TerminalConfig(name="d", serial="S", host="gate.invalid"), [], None
    )
    assert not unresolved.allows(ip("10.0.0.5"))
    assert unresolved.describe() == "host gate.invalid (does not resolve)"


def test_address_key_must_be_an_address_or_a_small_network(tmp_path: Path) -> None:
    text = config_text(tmp_path).replace(f'address = "{FIXED_AT}"', 'address = "10.0.0.0/16"')
    with pytest.raises(ConfigError) as err:
        config.parse(text, "t.toml")
    assert "terminals[3].address" in str(err.value.problems) and "256" in str(err.value.problems)
    text = config_text(tmp_path).replace(f'address = "{FIXED_AT}"', 'address = "gate"')
    with pytest.raises(ConfigError, match="not an IP address"):
        config.parse(text, "t.toml")


# ----- forged requests on real sockets --------------------------------------------------------


def test_forged_remote_auth_opens_no_door_for_any_kind_of_terminal(
    live: LiveDaemon, bound_cfg: Config
) -> None:
    db = bound_cfg.storage.database_path
    assert send(live, FIRST_AT, recognition(serial=FIRST, uuid="pin-it"), "/eventRcv").is_success
    for serial in (MANAGED, FIXED, FIRST):
        answer = send(live, FORGER, auth_request(serial=serial))
        assert answer.status_code == 403, serial
        assert answer.json()["data"]["pass"] is False
    assert not any(lock_levels())  # nothing actuated
    assert rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'auth'")[0][0] == 0
    refused = rows(db, "SELECT source, serial, path FROM refused_requests ORDER BY id")
    assert [tuple(r) for r in refused] == [(FORGER, s, "/auth") for s in (MANAGED, FIXED, FIRST)]
    # the same request from the terminal's own address is decided, and opens the door
    genuine = send(live, MANAGED_AT, auth_request(serial=MANAGED))
    assert genuine.json()["data"]["pass"] is True
    assert any(lock_levels())


def test_forged_pushes_are_refused_and_kept_apart_without_images(
    live: LiveDaemon, bound_cfg: Config
) -> None:
    db = bound_cfg.storage.database_path
    image = base64.b64encode(b"\xff\xd8" + b"x" * 3000).decode()
    homes = {MANAGED: MANAGED_AT, FIXED: FIXED_AT, FIRST: FIRST_AT}
    for serial, home in homes.items():
        assert send(live, home, recognition(serial=serial, uuid=f"own-{serial}"), "/eventRcv")
    for serial in homes:
        forged = recognition(serial=serial, uuid=f"forged-{serial}", rgb_image=image)
        assert send(live, FORGER, forged, "/eventRcv").status_code == 403
    stored = rows(db, "SELECT uuid FROM events ORDER BY id")
    assert [r[0] for r in stored] == [f"own-{s}" for s in homes]
    bodies = [json.loads(r[0]) for r in rows(db, "SELECT body FROM refused_requests")]
    assert [b["data"]["uuid"] for b in bodies] == [f"forged-{s}" for s in homes]
    assert all(image not in json.dumps(b) for b in bodies)
    assert all(b["data"]["user"]["pin"] == "***" for b in bodies)


def test_first_seen_pin_and_an_operator_re_pin(
    live: LiveDaemon,
    bound_cfg: Config,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "not pinned yet" in cli_out(capsys, config_file, "terminals", "show", "roaming")
    assert send(live, FIRST_AT, recognition(serial=FIRST, uuid="r1"), "/eventRcv").is_success
    shown = cli_out(capsys, config_file, "terminals", "show", "roaming")
    assert f"pinned {FIRST_AT}" in shown and "first-seen" in shown
    moved = recognition(serial=FIRST, uuid="r2")
    assert send(live, NEW_AT, moved, "/eventRcv").status_code == 403  # never silently
    argv = ["terminals", "trust", "roaming", "--address", NEW_AT, "--yes"]
    out = cli_out(capsys, config_file, *argv)
    assert f"pinned:   {FIRST_AT}" in out and f"new:      {NEW_AT}" in out
    assert send(live, NEW_AT, moved, "/eventRcv").is_success
    late = recognition(serial=FIRST, uuid="r3")
    assert send(live, FIRST_AT, late, "/eventRcv").status_code == 403
    shown = cli_out(capsys, config_file, "terminals", "show", "roaming")
    assert f"pinned {NEW_AT}" in shown and "operator" in shown and "FORGED:    2" in shown


def test_trust_address_refuses_a_terminal_bound_by_configuration(
    bound_cfg: Config, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, key in (("managed", "host"), ("fixed", "address")):
        argv = ["terminals", "trust", name, "--config", str(config_file), "--address", NEW_AT]
        assert cli.main([*argv, "--yes"]) == 78
        assert f"configured {key}" in capsys.readouterr().err
    argv = ["terminals", "trust", "roaming", "--config", str(config_file), "--address", "x"]
    assert cli.main([*argv, "--yes"]) == 78


def test_mismatch_alarm_is_visible_in_readiness_and_show(
    live: LiveDaemon, bound_cfg: Config, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ready = httpx.get(f"{live.admin_url}/readyz").json()
    assert ready["checks"]["binding"]["alarm"] is False
    assert send(live, FORGER, auth_request(serial=FIXED)).status_code == 403
    ready = httpx.get(f"{live.admin_url}/readyz").json()
    alarm = ready["checks"]["binding"]
    assert alarm["alarm"] is True and alarm["refused_24h"] == 1
    assert alarm["latest"]["source"] == FORGER and alarm["latest"]["terminal"] == "fixed"
    assert ready["checks"]["receiver"]["rejected"]["forged"] == 1
    assert "FORGED:    1" in cli_out(capsys, config_file, "terminals", "show", "fixed")
    port = live.daemon.admin_port
    text = config_file.read_text().replace(
        'listen = ["127.0.0.1:0"]\ntoken', f'listen = ["127.0.0.1:{port}"]\ntoken'
    )
    config_file.write_text(text)
    cli.main(["status", "--config", str(config_file)])
    status = capsys.readouterr().out
    assert (
        "binding    ALARM: 1 forged requests in 24 h" in status
        and f"from {FORGER} claiming fixed" in status
    )


def test_heartbeats_and_identity_headers_teach_no_new_address(
    live: LiveDaemon, bound_cfg: Config
) -> None:
    db = bound_cfg.storage.database_path
    assert send(live, FIRST_AT, None, headers={"sn": FIRST}).is_success  # heartbeats never pin
    assert rows(db, "SELECT COUNT(*) FROM terminal_pins")[0][0] == 0
    assert send(live, FIRST_AT, recognition(serial=FIRST, uuid="h1"), "/eventRcv").is_success
    for serial in (MANAGED, FIXED, FIRST):
        assert send(live, FORGER, None, headers={"sn": serial}).status_code == 403
    header_only = recognition(serial=FIRST, uuid="h2")
    del header_only["data"]["deviceSN"]
    answer = send(live, FORGER, header_only, "/eventRcv", headers={"sn": FIRST})
    assert answer.status_code == 403
    seen = live.call(lambda: {s: e.address for s, e in live.daemon.receiver.seen.items()})
    assert FORGER not in seen.values() and seen[FIRST] == FIRST_AT
    assert rows(db, "SELECT address FROM terminal_pins WHERE serial = ?", (FIRST,))[0][0] == (
        FIRST_AT
    )


def test_pushes_naming_no_terminal_are_identified_by_their_source(
    live: LiveDaemon, bound_cfg: Config
) -> None:
    db = bound_cfg.storage.database_path
    assert send(live, FIRST_AT, recognition(serial=FIRST, uuid="pin"), "/eventRcv").is_success
    now_ms = int(time.time() * 1000)
    for i, source in enumerate((MANAGED_AT, FIXED_AT, FIRST_AT)):
        alarm = {
            "type": 1,
            "data": {"trace_id": f"t{i}", "code": 10004, "status": 1, "event_time": now_ms},
        }
        assert send(live, source, alarm, "/eventRcv").is_success, source
    old = recognition(uuid="old-fw")
    del old["data"]["deviceSN"]
    assert send(live, FIXED_AT, old, "/eventRcv").is_success
    stored = rows(
        db,
        "SELECT serial, terminal FROM events WHERE kind != 'recognition' OR uuid = ?",
        ("old-fw",),
    )
    assert sorted(tuple(r) for r in stored) == sorted(
        [(MANAGED, "managed"), (FIXED, "fixed"), (FIRST, "roaming"), (FIXED, "fixed")]
    )
    unbound = send(live, FORGER, old, "/eventRcv")  # no terminal lives there: refused as before
    assert unbound.status_code == 400


# ----- through the ASGI stack -----------------------------------------------------------------


def one_more(make_config: Callable[..., Config], key: str, value: str) -> Config:
    """The base configuration with one more terminal, ``serial`` MANAGED, bound by ``key``."""
    gateway = '[gateway]\npublic_url = "http://127.0.0.1:8090"\n' if key == "host" else ""
    terminal = f'[[terminals]]\nname = "extra"\nserial = "{MANAGED}"\n{key} = "{value}"\n'
    return make_config(gateway + terminal)


@contextlib.asynccontextmanager
async def receiving(cfg: Config, clock: Callable[[], float] = time.time) -> AsyncIterator[Receiver]:
    """A receiver on a real SQLite file, its store closed after."""
    st = store.Store(cfg.storage.database_path)
    try:
        yield Receiver(cfg, st, clock=clock)
    finally:
        st.close()


async def push(rec: Receiver, source: str, body: dict[str, Any]) -> int:
    """The status a push from ``source`` gets through the ASGI stack."""
    async with asgi_client(create_app(rec), host=source) as client:
        return (await client.post("/eventRcv", json=body)).status_code


@pytest.mark.anyio
async def test_a_dns_named_host_is_resolved(make_config: Callable[..., Config]) -> None:
    async with receiving(one_more(make_config, "host", "localhost")) as rec:
        assert await push(rec, "127.0.0.1", recognition(serial=MANAGED, uuid="n1")) == 200
        assert await push(rec, FORGER, recognition(serial=MANAGED, uuid="n2")) == 403


@pytest.mark.anyio
async def test_a_host_that_does_not_resolve_accepts_nothing(
    make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    async with receiving(one_more(make_config, "host", "gate.invalid")) as rec:
        for uuid in ("g1", "g2"):
            assert await push(rec, "127.0.0.1", recognition(serial=MANAGED, uuid=uuid)) == 403
    assert sum("host gate.invalid does not resolve" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.anyio
async def test_a_reloaded_address_applies_to_the_next_request(
    make_config: Callable[..., Config],
) -> None:
    async with receiving(one_more(make_config, "address", FIXED_AT)) as rec:
        assert await push(rec, NEW_AT, recognition(serial=MANAGED, uuid="m1")) == 403
        rec.reconfigure(one_more(make_config, "address", NEW_AT))
        assert await push(rec, NEW_AT, recognition(serial=MANAGED, uuid="m2")) == 200


@pytest.mark.anyio
async def test_forgeries_are_logged_once_per_source_per_minute(
    make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config()
    now = [1_900_000_000.0]
    caplog.set_level(logging.WARNING, logger="edged.receive.binding")
    async with receiving(cfg, clock=lambda: now[0]) as rec:
        assert await push(rec, "127.0.0.1", recognition(uuid="first", ts=now[0])) == 200

        async def forge(source: str, count: int) -> None:
            for i in range(count):
                body = recognition(uuid=f"f{source}{now[0]}{i}", ts=now[0])
                assert await push(rec, source, body) == 403

        await forge(FORGER, 15)
        await forge("127.0.0.98", 1)
        now[0] += 61
        await forge(FORGER, 1)
    lines = [r.getMessage() for r in caplog.records if "forged request" in r.getMessage()]
    assert [FORGER in line for line in lines] == [True, False, True]
    stored = rows(cfg.storage.database_path, "SELECT COUNT(*) FROM refused_requests")[0][0]
    assert stored == binding.STORED_PER_SOURCE_MINUTE + 2  # a flood is counted, not all kept


def test_an_upgrade_pins_terminals_to_the_address_they_were_last_seen_from(
    tmp_path: Path,
) -> None:
    from edged.store import migrations

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    pins = next(n for n, sql in migrations.MIGRATIONS.items() if "TABLE terminal_pins" in sql)
    for number in sorted(n for n in migrations.MIGRATIONS if n < pins):
        for statement in migrations._statements(migrations.MIGRATIONS[number]):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {pins - 1}")
    conn.execute(
        "INSERT INTO terminals_seen (serial, address, last_seen) VALUES (?,?,?), (?,?,?)",
        (FIRST, FIRST_AT, 1.0e9, "NEVER-ADDRESSED", None, 1.0e9),
    )
    conn.close()
    store.open_database(db).conn.close()
    assert [tuple(r) for r in rows(db, "SELECT serial, address, how FROM terminal_pins")] == [
        (FIRST, FIRST_AT, "upgrade")
    ]
