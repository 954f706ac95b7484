"""The broker connection: TLS with a test CA (client certificate too), a wrong CA refused."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trustme

from edged.config import Config
from tests.conftest import LiveDaemon, recognition
from tests.mqttfix import Broker, Subscriber, mqtt_toml, needs_mosquitto

pytestmark = needs_mosquitto

PREFIX = "edged/test_site"


def tls_files(root: Path, ca: trustme.CA, name: str) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {
        "ca": root / f"{name}-ca.pem",
        "cert": root / f"{name}.pem",
        "key": root / f"{name}.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    with files["cert"].open("wb") as out:
        for blob in cert.cert_chain_pems:
            out.write(blob.bytes())
    return {k: str(v) for k, v in files.items()}


def test_tls_with_a_test_ca_and_a_client_certificate(
    tmp_path: Path, make_config: Callable[..., Config], start_live: Callable[..., LiveDaemon]
) -> None:
    ca = trustme.CA()
    server = tls_files(tmp_path / "tls", ca, "server")
    client = tls_files(tmp_path / "tls", ca, "client")
    broker = Broker(tmp_path, tls={**server, "require": True})
    broker.start()
    try:
        extra = f'tls = true\nca_file = "{client["ca"]}"\ncert_file = "{client["cert"]}"\n'
        extra += f'key_file = "{client["key"]}"\n'
        cfg = make_config(mqtt_toml(broker.port, extra))
        live = start_live(cfg)
        sub = Subscriber(broker.port, [f"{PREFIX}/#"], client_id="tls-sub", tls=client)
        assert httpx.post(f"{live.url}/eventRcv", json=recognition()).status_code == 200
        assert sub.wait(lambda: [r["id"] for r in sub.json_on(f"{PREFIX}/records")] == [1])
        assert httpx.get(f"{live.admin_url}/readyz").json()["checks"]["mqtt"]["connected"]
        sub.close()
    finally:
        broker.stop()


def test_a_broker_certificate_from_another_ca_is_refused(
    tmp_path: Path, make_config: Callable[..., Config], start_live: Callable[..., LiveDaemon]
) -> None:
    server = tls_files(tmp_path / "tls", trustme.CA(), "server")
    other = tls_files(tmp_path / "other", trustme.CA(), "other")
    broker = Broker(tmp_path, tls=server)
    broker.start()
    try:
        cfg = make_config(mqtt_toml(broker.port, f'tls = true\nca_file = "{other["ca"]}"\n'))
        live = start_live(cfg)
        assert httpx.post(f"{live.url}/eventRcv", json=recognition()).status_code == 200
        time.sleep(1.5)  # a few connection attempts
        check = httpx.get(f"{live.admin_url}/readyz").json()["checks"]["mqtt"]
        assert check["connected"] is False and check["depth"] == 1  # the record waits
    finally:
        broker.stop()


def test_unreadable_tls_files_are_a_clear_config_error(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    from edged.errors import ConfigError
    from edged.ops import wiring

    missing = tmp_path / "nope.pem"
    cfg = make_config(mqtt_toml(1883, f'tls = true\nca_file = "{missing}"\n'))
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file.*cannot load"):
        wiring.build(cfg)


def test_a_broker_that_never_answers_delays_neither_requests_nor_the_stop(
    make_config: Callable[..., Config], start_live: Callable[..., LiveDaemon]
) -> None:
    """A listener whose backlog is full: edged's TCP connect hangs in paho's thread."""
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue: later SYNs are dropped, a connect hangs
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        live = start_live(make_config(mqtt_toml(port)))
        started = time.monotonic()
        for i in range(5):
            body = recognition(uuid=f"h{i}")
            assert httpx.post(f"{live.url}/eventRcv", json=body, timeout=5).status_code == 200
        assert time.monotonic() - started < 5
        started = time.monotonic()
        live.stop()
        assert time.monotonic() - started < 3.5, "the stop waited for the broker"
    finally:
        for s in fillers:
            s.close()
        hole.close()
