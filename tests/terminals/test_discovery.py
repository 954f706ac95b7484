"""``edged terminals discover`` against real mDNS announcements, inside network namespaces.

Two fake terminals (tests/mdns_terminal.py, python-zeroconf) announce the same instance name
``sensetime`` from their own namespaces; the real ``edged terminals discover`` runs in a third,
the gateway, joined to each terminal by a veth pair. Every address (10.200.x.y) and interface
exists only inside these namespaces: nothing reaches the root namespace or beyond, and the
namespaces (and with them the veth pairs) are deleted even when the test fails.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edged import config
from edged.terminals import discovery
from tests.conftest import SERIAL

ANNOUNCER = Path(__file__).resolve().parents[1] / "mdns_terminal.py"
OTHER_SERIAL = "PS71HD01MC22C00099"


@dataclass(frozen=True)
class Lan:
    """The gateway's namespace and, per terminal, its namespace and address."""

    gateway: str
    terminals: list[tuple[str, str]]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _netns_or_skip(probe: str) -> None:
    if shutil.which("ip") is None:
        pytest.skip("no ip command (iproute2)")
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"ip netns unavailable: {exc.stderr.decode().strip()}")


def _quiet_ipv6(ns: str) -> None:
    """No IPv6 in the namespace: mDNS here is IPv4 only, and nothing else should talk."""
    for conf in ("all", "default"):
        path = f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"
        subprocess.run(
            ["ip", "netns", "exec", ns, "sh", "-c", f"test ! -e {path} || echo 1 > {path}"],
            check=True,
            timeout=10,
        )


def _link(gateway: str, ns: str, subnet: int, index: int) -> str:
    """A veth pair from ``ns`` to the gateway, created inside them; the terminal's address."""
    term_if, gw_if = f"t{index}", f"g{index}"
    _ip("-n", ns, "link", "add", term_if, "type", "veth", "peer", "name", gw_if, "netns", gateway)
    address = f"10.200.{subnet}.1"
    _ip("-n", ns, "addr", "add", f"{address}/24", "dev", term_if)
    _ip("-n", gateway, "addr", "add", f"10.200.{subnet}.2/24", "dev", gw_if)
    _ip("-n", ns, "link", "set", term_if, "up")
    _ip("-n", gateway, "link", "set", gw_if, "up")
    return address


@pytest.fixture
def lan() -> Iterator[Lan]:
    """A gateway namespace linked to two terminal namespaces; all deleted afterwards."""
    pytest.importorskip("zeroconf", reason="python-zeroconf is not installed")
    tag = f"edged{os.getpid()}"
    gateway = f"{tag}-gw"
    _netns_or_skip(gateway)
    made = [gateway]
    try:
        terminals = []
        for index in (1, 2):
            ns = f"{tag}-t{index}"
            _ip("netns", "add", ns)
            made.append(ns)
        for ns in made:
            _quiet_ipv6(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for index, ns in enumerate(made[1:], start=1):
            terminals.append((ns, _link(gateway, ns, 200 + index, index)))
        yield Lan(gateway, terminals)
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _wait_ready(proc: subprocess.Popen[str], deadline: float) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=5)
        pytest.fail(f"fake terminal did not announce itself: {line!r} {err}")


def _announce(ns: str, *args: str) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, str(ANNOUNCER), *args]
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _write_config(tmp_path: Path, cfg: config.Config) -> Path:
    path = tmp_path / "edged.toml"
    path.write_text(config.to_toml(config.to_dict(cfg, mask=False)))
    return path


def _discover(ns: str, config_path: Path) -> str:
    code = "import sys; from edged.cli.main import main; sys.exit(main(sys.argv[1:]))"
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", code]
    cmd += ["terminals", "discover", "--timeout", "3", "-c", str(config_path)]
    # The edged this test imported (the checkout, or the installed package in CI), not the cwd's.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, cwd="/")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_discover_finds_both_terminals_sharing_an_instance_name(
    lan: Lan, cfg: config.Config, tmp_path: Path
) -> None:
    (ns1, addr1), (ns2, addr2) = lan.terminals
    procs = [
        _announce(ns1, "--address", addr1, "--serial", SERIAL, "--model", "S7", "--port", "80"),
        _announce(
            ns2, "--address", addr2, "--serial", OTHER_SERIAL, "--model", "SL-M5",
            "--port", "8080", "--other", "printer",
        ),
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        for proc in procs:
            _wait_ready(proc, deadline)
        out = _discover(lan.gateway, _write_config(tmp_path, cfg))
    finally:
        for proc in procs:
            _stop(proc)
    rows = [line.split(None, 3) for line in out.splitlines()]
    assert rows == [
        [SERIAL, "S7", f"{addr1}:80", "configured"],
        [OTHER_SERIAL, "SL-M5", f"{addr2}:8080", "not configured"],
    ]


def test_txt_properties_reads_length_prefixed_strings() -> None:
    items = [b"sn=PS71HD01MC22C00014\x00", b"model=S7\x00", b"flag", b"Model=ignored", b""]
    rdata = b"".join(bytes([len(item)]) + item for item in items)
    props = discovery.txt_properties(rdata)
    assert props == {b"sn": b"PS71HD01MC22C00014\x00", b"model": b"S7\x00", b"flag": None}
    assert discovery.from_properties(props, ["10.200.1.1"], 0).address == "10.200.1.1"


def test_query_asks_for_the_service_and_the_instance() -> None:
    zeroconf = pytest.importorskip("zeroconf", reason="python-zeroconf is not installed")
    msg = zeroconf.DNSIncoming(discovery.query())
    assert msg.is_query()
    asked = [(q.name, q.type) for q in msg.questions]
    assert asked == [(discovery.SERVICE, 12), (f"sensetime.{discovery.SERVICE}", 255)]
