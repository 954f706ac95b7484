"""The composition root: each feature's hooks reach the part that runs them; failures clean up."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edged import config
from edged.config import Config
from edged.hooks import Hooks
from edged.ops import wiring
from edged.ops.daemon import BindError
from edged.upstream import outbox
from tests.conftest import BASE_TOML, SERIAL, SERIAL_OLD
from tests.simfix import free_port

FORWARDING = '\n[upstream]\nforward_url = "http://127.0.0.1:9/records"\n'


# A door opened through a managed terminal's relay, and one with a lock of its own.
RELAY_TERMINAL = """
[gateway]
public_url = "http://127.0.0.1:8090"

[[terminals]]
name = "front-terminal"
serial = "PS71HD01MC22C00077"
host = "127.0.0.1"
port = 8443
password = "x"
door = "front"

[gpio]
pin_factory = "mock"

[[doors]]
name = "front"
lock = { pin = 17 }
terminal_relay = "front-terminal"
"""


def test_hooks_merge_keeps_the_features_order() -> None:
    async def a() -> None: ...

    async def b() -> None: ...

    def check() -> tuple[str, bool, dict[str, object]]:
        return "x", True, {}

    def heard(*args: object) -> None: ...

    merged = Hooks.merge([Hooks(services=(a,)), Hooks(), Hooks((b,), (check,), (heard,))])
    assert merged == Hooks((a, b), (check,), (heard,))


def test_every_feature_plugs_in_through_the_constructors(
    make_config: Callable[..., Config], mock_factory: MockFactory
) -> None:
    cfg = make_config(RELAY_TERMINAL + FORWARDING)
    daemon = wiring.build(cfg)
    try:
        site, reconcilers, admin = daemon.doors, daemon.reconcilers, daemon.admin
        assert site is not None and reconcilers is not None
        assert site.relay == reconcilers.open_door  # doors[].terminal_relay
        assert admin.doors is site and admin.reconcilers is reconcilers
        assert admin.upstream is not None and admin.upstream.forwarder is not None
        assert daemon.receiver.authority == admin.upstream.authority
        # doors act on a record before it is forwarded, as before
        assert daemon.receiver.listeners == [site.on_record, admin.upstream.forwarder.listener]
        assert [check()[0] for check in admin.checks] == ["clock", "doors", "upstream", "terminals"]
        assert len(daemon.services) == 4  # door inputs, modes, upstream, terminals
        assert daemon.store.prune_limit is outbox.cursor  # retention keeps what is not forwarded
        # what the receiver hears from a terminal is what its reconciler watches
        assert reconcilers.items["front-terminal"].seen is daemon.receiver.seen
    finally:
        daemon.close()
    assert site.closed  # close() released the door outputs too


def test_without_features_nothing_is_plugged_in(cfg: Config) -> None:
    daemon = wiring.build(cfg)
    try:
        assert daemon.doors is None and daemon.reconcilers is None
        assert daemon.admin.upstream is None and daemon.receiver.authority is None
        assert daemon.receiver.listeners == [] and daemon.services == []
        assert [check()[0] for check in daemon.admin.checks] == ["clock"]
        assert daemon.store.prune_limit is None
    finally:
        daemon.close()


def test_a_failed_bind_closes_what_was_already_opened(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port, busy = free_port(), taken.getsockname()[1]
        cfg = _config(tmp_path, f"127.0.0.1:{port}", f"127.0.0.1:{busy}")
        with pytest.raises(BindError):
            wiring.build(cfg)
    with socket.socket() as again:  # the receiver's listener was closed: its port binds again
        again.bind(("127.0.0.1", port))
    daemon = wiring.build(_config(tmp_path, "127.0.0.1:0", "127.0.0.1:0"))
    daemon.close()  # and the store was closed: the same state opened again


def _config(state: Path, receiver: str, admin: str) -> Config:
    text = BASE_TOML.format(state=state / "state", serial=SERIAL, serial_old=SERIAL_OLD)
    first, rest = text.split('listen = ["127.0.0.1:0"]', 1)
    text = f'{first}listen = ["{receiver}"]' + rest.replace('"127.0.0.1:0"', f'"{admin}"', 1)
    return config.parse(text, "test.toml")


def test_mqtt_plugs_in_and_retention_keeps_what_neither_cursor_passed(
    make_config: Callable[..., Config], mock_factory: MockFactory
) -> None:
    import sqlite3

    cfg = make_config(FORWARDING + '\n[mqtt]\nhost = "127.0.0.1"\nport = 9\n')
    daemon = wiring.build(cfg)  # a broker that is not there: building does not wait for it
    try:
        assert [check()[0] for check in daemon.admin.checks] == ["clock", "upstream", "mqtt"]
        assert len(daemon.services) == 2 and len(daemon.receiver.listeners) == 2
        conn = sqlite3.connect(cfg.storage.database_path)
        conn.execute("UPDATE outbox SET forwarded_up_to = 10")
        conn.execute("UPDATE mqtt_cursor SET published_up_to = 7")
        conn.commit()
        limit = daemon.store.prune_limit
        assert limit is not None and limit(conn) == 7
        conn.execute("UPDATE mqtt_cursor SET published_up_to = 12")
        assert limit(conn) == 10
        conn.close()
    finally:
        daemon.close()
