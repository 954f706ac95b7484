#!/usr/bin/python3
"""Smoke test of an installed edged: the real command, a real config, real HTTP on loopback.

Run by CI against /usr/bin/edged from the .deb (so with Debian's own python3-* packages):

    python3 tests/smoke/smoke.py [/usr/bin/edged]

Standard library only. Exits 0 when every check passed, 1 at the first failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SERIAL = "PS71HD01MC22C00014"
TOKEN = "smoke-token"

CONFIG = """
[site]
name = "smoke test"
timezone = "UTC"

[receiver]
listen = ["127.0.0.1:{receiver}"]
allowed_networks = ["127.0.0.0/8"]

[admin]
listen = ["127.0.0.1:{admin}"]
token = "{token}"

[storage]
state_dir = "{state}"

[logging]
format = "text"

[[terminals]]
name = "lobby"
serial = "{serial}"
door = "lobby"
"""

DOORS = """
[gpio]
pin_factory = "mock"

[[doors]]
name = "lobby"
lock = { pin = 17 }
"""
PEOPLE = {
    "people": [{"id": "e-1", "name": "Ann Example", "user_id": "e-1", "groups": ["staff"]}],
    "permissions": [{"group": "staff", "door": "lobby"}, {"group": "staff", "door": "sim"}],
}

# A managed terminal played by `edged simulate` on loopback: edged logs in over pinned TLS,
# registers its event_dest and remote-auth address, and the terminal pushes to it.
SIMULATED = """
[gateway]
public_url = "http://127.0.0.1:{receiver}"

[reconciler]
probe_interval = 1

[[terminals]]
name = "sim"
serial = "SIM0000000000001"
host = "127.0.0.1"
port = {sim}
username = "admin"
password_file = "{password}"
remote_auth = true
"""


def section(title: str) -> None:
    """A header line in the CI log."""
    print(f"\n----- smoke: {title} " + "-" * max(0, 60 - len(title)), flush=True)


PASSED = [0]


def check(condition: bool, what: str) -> None:
    """Print the outcome of one check; stop at the first failure."""
    print(f"  {'ok  ' if condition else 'FAIL'} {what}", flush=True)
    if not condition:
        print(f"\nsmoke: {PASSED[0]} passed, 1 failed")
        raise SystemExit(1)
    PASSED[0] += 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """One request; returns the status and the decoded JSON body (or None)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None


def recognition(uuid: str) -> dict[str, Any]:
    return {
        "type": 0,
        "data": {
            "deviceSN": SERIAL,
            "uuid": uuid,
            "recognitionType": 1,
            "recognizeScore": 0.97,
            "entry_mode": 1,
            "pass": True,
            "timestamp": int(time.time()),
            "rgb_image": "",
            "user": {"name": "Ann Example", "user_id": "e-1", "type": 1},
        },
    }


def auth(user_id: str) -> dict[str, Any]:
    return {
        "deviceSN": SERIAL,
        "recognizeStatus": 4,
        "recognizeScore": 0.95,
        "entry_mode": 1,
        "timestamp": int(time.time()),
        "rgb_image": "",
        "user": {"name": "Someone", "user_id": user_id, "type": 1},
    }


def wait_ready(admin: str, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status, _ = http("GET", f"{admin}/healthz")
            if status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def run(edged: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([edged, *args], capture_output=True, text=True, check=False)


def main(argv: list[str]) -> int:
    """Run every check against the edged command given (default /usr/bin/edged)."""
    edged = argv[1] if len(argv) > 1 else "/usr/bin/edged"
    work = Path(tempfile.mkdtemp(prefix="edged-smoke-"))
    ports = {"receiver": free_port(), "admin": free_port()}
    cfg = work / "edged.toml"
    cfg.write_text(CONFIG.format(state=work / "state", token=TOKEN, serial=SERIAL, **ports))
    base, admin = (f"http://127.0.0.1:{ports[k]}" for k in ("receiver", "admin"))

    section(f"command {edged}")
    version = run(edged, "version")
    check(version.returncode == 0 and version.stdout.startswith("edged "), version.stdout.strip())
    cfg.write_text(cfg.read_text() + DOORS)
    check(run(edged, "check-config", "-c", str(cfg)).returncode == 0, "check-config: valid")
    broken = work / "broken.toml"
    broken.write_text(cfg.read_text() + "\n[storage]\nretention_days = 0\n")
    result = run(edged, "check-config", "-c", str(broken))
    check(result.returncode == 78, f"check-config: broken file exits 78 ({result.stderr.strip()})")
    people = work / "people.json"
    people.write_text(json.dumps(PEOPLE))
    result = run(edged, "people", "import", str(people), "-c", str(cfg))
    check(result.returncode == 0, f"people import: {result.stdout.strip()}")
    simulated = simulator_config(edged, cfg, work, ports["receiver"])

    section("daemon start")
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    log = (work / "edged.log").open("wb")
    proc = subprocess.Popen([edged, "run", "-c", str(cfg)], stderr=log, env=env)
    try:
        check(wait_ready(admin, proc), "answers on its admin listener")
        if simulated is not None:
            registration(edged, simulated, admin, work)
        checks(base, admin)
        section("reload and stop")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        status, _ = http("POST", f"{base}/eventRcv", recognition("after-reload"))
        check(status == 200 and proc.poll() is None, "SIGHUP: reloaded, still answering")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
        took = time.monotonic() - started
        check(code == 0 and took < 10, f"SIGTERM: exit {code} after {took:.1f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        print("\n  daemon log:\n    " + (work / "edged.log").read_text().replace("\n", "\n    "))
    print(f"\nsmoke: {PASSED[0]} passed, 0 failed")
    return 0


def simulator_config(edged: str, cfg: Path, work: Path, receiver: int) -> Path | None:
    """The config with a simulated managed terminal, or None when the simulator cannot run."""
    probe = run(edged, "simulate", "--help")
    if probe.returncode != 0:
        print("  ...  `edged simulate` unavailable: registration round skipped")
        return None
    password = work / "sim.password"
    password.write_text("admin-pass\n")
    text = cfg.read_text() + SIMULATED.format(receiver=receiver, sim=free_port(), password=password)
    cfg.write_text(text)
    check(
        run(edged, "check-config", "-c", str(cfg)).returncode == 0, "config with a managed terminal"
    )
    return cfg


def registration(edged: str, cfg: Path, admin: str, work: Path) -> None:
    """A simulated terminal over HTTPS: trusted, registered by edged, pushing to it."""
    section("registration via the terminal simulator")
    log = (work / "simulate.log").open("wb")
    sim = subprocess.Popen(
        [
            edged,
            "simulate",
            "--from-config",
            "--rate",
            "2",
            "--cert-dir",
            str(work / "certs"),
            "-c",
            str(cfg),
        ],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 20
        trusted = run(edged, "terminals", "trust", "sim", "--yes", "-c", str(cfg))
        while trusted.returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)  # the simulator is still starting
            trusted = run(edged, "terminals", "trust", "sim", "--yes", "-c", str(cfg))
        check(trusted.returncode == 0, "terminals trust: certificate pinned")
        resub = run(edged, "terminals", "resubscribe", "sim", "-c", str(cfg))
        check(resub.returncode == 0, f"terminals resubscribe: {resub.stdout.strip()}")
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            _, listing = http("GET", f"{admin}/api/v1/terminals")
            state = next(t for t in listing["terminals"] if t["name"] == "sim")
            if state.get("state") == "registered" and state.get("last_push"):
                break
            time.sleep(0.5)
        check(state.get("state") == "registered", f"registered: {state.get('state')}")
        check(
            bool(state.get("last_push")), f"its pushes arrive: last push {state.get('last_push')}"
        )
        check(
            state.get("auth_mode") == 1,
            f"remote authentication set: auth_mode {state.get('auth_mode')}",
        )
    finally:
        sim.terminate()
        sim.wait(10)
        log.close()


def checks(base: str, admin: str) -> None:
    """The terminal's side: pushes, decisions, a duplicate, bad requests."""
    section("pushes")
    for i in range(3):
        status, body = http("POST", f"{base}/eventRcv", recognition(f"smoke-{i}"))
        check(status == 200 and body["code"] == 200, f"push {i} acknowledged")
    status, page = http("GET", f"{admin}/api/v1/events?limit=1000&serial={SERIAL}")
    kinds = [e["kind"] for e in page["events"]]
    check(status == 200 and kinds.count("recognition") == 3, f"3 pushes stored: {kinds}")
    status, _ = http("GET", f"{base}/auth")
    check(status == 200, "heartbeat GET answered 200")

    section("remote authentication")
    status, granted = http("POST", f"{base}/auth", auth("e-1"))
    check(status == 200 and granted["data"]["pass"] is True, f"known person: {granted['data']}")
    denied_body = auth("nobody")
    status, denied = http("POST", f"{base}/auth", denied_body)
    check(status == 200 and denied["data"]["pass"] is False, f"unknown person: {denied['data']}")

    section("duplicate")
    status, again = http("POST", f"{base}/auth", denied_body)
    check(status == 200 and again == denied, "a re-sent request gets the very same answer")
    status, page = http("GET", f"{admin}/api/v1/events?limit=1000&serial={SERIAL}")
    auths = [e for e in page["events"] if e["kind"] == "auth"]
    check(len(auths) == 2 and sum(e["duplicates"] for e in auths) == 1, "stored once, counted")

    section("bad requests")
    status, body = http("POST", f"{base}/eventRcv", raw=b"{not json")
    check(status == 400 and body["code"] == 400, f"invalid JSON: {status} {body['msg']}")
    stranger = recognition("smoke-x")
    stranger["data"]["deviceSN"] = "UNKNOWN1"
    status, body = http("POST", f"{base}/eventRcv", stranger)
    check(status == 403, f"unknown terminal: {status} {body['msg']}")
    status, body = http("POST", f"{base}/auth", {"type": 0})
    check(400 <= status < 500 and body["data"]["pass"] is False, f"no serial: {status}, no pass")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
