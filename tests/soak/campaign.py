"""A durability campaign: terminals push, edged is SIGKILLed and restarted, the ledger is checked.

Simulated terminals (asyncio tasks, one kept-alive HTTP connection each, as a terminal has) push
unique recognition records and remote-auth requests to a real ``python -m edged run`` on loopback
(mock GPIO, a real state directory). A request that gets no answer is retried with the same
body, as a terminal does. Every acknowledged answer goes into a ledger. At random moments edged
is killed with SIGKILL and started again. At the end the ledger is checked against the store:

- lost: an acknowledged record that is not stored;
- doubled: a record stored more than once;
- changed: a stored remote-auth decision that differs from the answer the terminal was given;
- integrity: ``PRAGMA integrity_check``;
- door log: every granted answer has its ``grant`` in the door log.

Run it::

    .venv/bin/python -m tests.soak.campaign --kills 20 --dir /tmp/campaign

It prints a JSON report and exits 0 when every check passes, 1 when one fails, 2 when the
campaign could not run (edged did not start). Only loopback is used; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

SERIAL = "SOAK0000000000001"
GRANTED = "soak-ann"  # a person who may use the door
START_TIMEOUT = 30.0  # s for edged to answer /healthz after a start
STOP_TIMEOUT = 15.0  # s for a graceful stop at the end
REQUEST_TIMEOUT = 10.0  # s for one request
DRAIN_TIMEOUT = 20.0  # s the terminals get at the end to deliver what they hold

CONFIG = """
[site]
name = "durability campaign"
timezone = "UTC"

[receiver]
listen = ["127.0.0.1:{receiver_port}"]
allowed_networks = ["127.0.0.0/8"]

[admin]
listen = ["127.0.0.1:{admin_port}"]
token = "soak-token"

[storage]
state_dir = "{state}"
store_images = false

[logging]
format = "text"

[gpio]
pin_factory = "mock"

[[doors]]
name = "lobby"
lock = {{ pin = 17 }}
unlock_time = 1.0

[[terminals]]
name = "lobby"
serial = "{serial}"
door = "lobby"
"""

CHECKS = ("lost", "doubled", "changed", "integrity", "door_log")
PEOPLE = {
    "people": [{"id": GRANTED, "name": "Ann Soak", "groups": "staff"}],
    "permissions": [{"group": "staff", "door": "lobby"}],
}


@dataclass
class Settings:
    """What one campaign does."""

    kills: int = 20
    terminals: int = 4
    seed: int = 0
    workdir: Path = Path("campaign")
    min_up: float = 0.3  # s edged serves between a start and its kill, at least
    max_up: float = 1.5
    deadline: float = 600.0  # s the whole campaign may take; it stops killing after that
    report_only: tuple[str, ...] = ()  # checks reported but not failing the campaign


@dataclass
class Answer:
    """One acknowledged answer, as the ledger keeps it."""

    kind: str  # "push" or "auth"
    uuid: str
    granted: bool | None  # the answer's pass for a remote-auth, None for a push


@dataclass
class Report:
    """The campaign's outcome: what ran and what each check found."""

    kills: int = 0
    starts: int = 0
    acknowledged: int = 0
    granted: int = 0
    retries: int = 0
    refused: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    report_only: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every check (but the report-only ones) passed and nothing was refused."""
        failing = [v for k, v in self.problems.items() if k not in self.report_only]
        return not self.refused and not any(failing)


# Below Linux's ephemeral range (32768-60999): a port the kernel hands to someone else's
# port-0 bind while edged is down between a kill and its restart would make the restart fail.
PORTS = (20000, 32000)
BIND_RETRIES = 5  # fresh ports tried when a restart finds its port taken anyway
EX_OSERR = 71  # edged's exit code for a listener it cannot bind


def free_port(rng: random.Random) -> int:
    """A loopback TCP port below the ephemeral range that nobody listens on right now."""
    for _ in range(200):
        port = rng.randint(*PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


class Edged:
    """A real ``python -m edged run`` on loopback, started and killed at will."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.rng = random.Random()
        self.config = workdir / "edged.toml"
        self.receiver_port = self.admin_port = 0
        self.new_ports()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "edged.log"

    def new_ports(self) -> None:
        """Pick free listener ports and write the configuration with them."""
        self.receiver_port = free_port(self.rng)
        self.admin_port = free_port(self.rng)
        self.config.write_text(
            CONFIG.format(
                receiver_port=self.receiver_port,
                admin_port=self.admin_port,
                state=self.workdir / "state",
                serial=SERIAL,
            )
        )

    @property
    def url(self) -> str:
        """The receiver's base URL."""
        return f"http://127.0.0.1:{self.receiver_port}"

    @property
    def database(self) -> Path:
        """The store's SQLite file."""
        return self.workdir / "state" / "edged.db"

    def command(self, *args: str) -> list[str]:
        """An edged command line with this campaign's configuration."""
        return [sys.executable, "-m", "edged", *args, "-c", str(self.config)]

    def import_people(self) -> None:
        """Import the one person who may open the door."""
        doc = self.workdir / "people.json"
        doc.write_text(json.dumps(PEOPLE))
        subprocess.run(self.command("people", "import", str(doc)), check=True, timeout=60)

    async def start(self) -> None:
        """Start edged; on a port taken meanwhile, again on fresh ports (bounded)."""
        for _ in range(BIND_RETRIES):
            if await self._start_once():
                return
            self.new_ports()
        raise RuntimeError(f"edged could not bind its ports {BIND_RETRIES} times; see {self.log}")

    async def _start_once(self) -> bool:
        """Start edged and wait (bounded) until it answers; False if it could not bind."""
        env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command("run"), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() == EX_OSERR:
                    return False
                if self.proc.poll() is not None:
                    raise RuntimeError(f"edged exited with {self.proc.returncode}; see {self.log}")
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(f"http://127.0.0.1:{self.admin_port}/healthz")
                    if r.status_code == 200:
                        return True
                await asyncio.sleep(0.05)
        raise RuntimeError(f"edged did not answer within {START_TIMEOUT} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL edged and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def stop(self) -> None:
        """A graceful stop (SIGTERM), SIGKILL if it does not end in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None


class Ledger:
    """Every acknowledged answer, in memory and appended to ``ledger.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: list[Answer] = []
        self.file = path.open("a", encoding="utf-8")

    def add(self, answer: Answer) -> None:
        """Keep one acknowledged answer."""
        self.answers.append(answer)
        self.file.write(json.dumps(asdict(answer)) + "\n")
        self.file.flush()

    def close(self) -> None:
        """Close the ledger file."""
        self.file.close()


def push_body(uuid: str) -> dict[str, Any]:
    """A recognition push of a unique record."""
    return {
        "type": 0,
        "data": {
            "deviceSN": SERIAL,
            "uuid": uuid,
            "recognitionType": 1,
            "recognizeScore": 0.97,
            "pass": True,
            "timestamp": int(time.time()),
            "user": {"name": "Ann Soak", "user_id": GRANTED, "type": 1},
        },
    }


def auth_body(uuid: str, user_id: str) -> dict[str, Any]:
    """A remote-auth request with its own uuid (a retry carries the same)."""
    return {
        "deviceSN": SERIAL,
        "uuid": uuid,
        "recognizeStatus": 4,
        "recognizeScore": 0.95,
        "entry_mode": 1,
        "timestamp": int(time.time()),
        "user": {"name": "Ann Soak", "user_id": user_id, "type": 1},
    }


class Terminal:
    """One simulated terminal: a record at a time, retried until it is answered."""

    def __init__(self, name: str, edged: Edged, ledger: Ledger, report: Report, rng: random.Random):
        self.name = name
        self.edged = edged
        self.ledger = ledger
        self.report = report
        self.rng = rng
        self.stop = asyncio.Event()  # no new records after this
        self.abandon = asyncio.Event()  # give up the record in hand

    async def run(self) -> None:
        """Push records until told to stop."""
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                await self.one(client, f"{self.name}-{n}")
                await asyncio.sleep(self.rng.uniform(0.0, 0.02))

    async def one(self, client: httpx.AsyncClient, uuid: str) -> None:
        """Deliver one record and note the answer in the ledger."""
        if self.rng.random() < 0.5:
            path, body = "/eventRcv", push_body(uuid)
        else:
            who = GRANTED if self.rng.random() < 0.7 else "soak-nobody"
            path, body = "/auth", auth_body(uuid, who)
        answer = await self.deliver(client, path, body)
        if answer is None:
            return
        kind = "auth" if path == "/auth" else "push"
        granted = bool(answer["data"]["pass"]) if kind == "auth" else None
        self.ledger.add(Answer(kind, uuid, granted))
        self.report.acknowledged += 1
        self.report.granted += bool(granted)

    async def deliver(
        self, client: httpx.AsyncClient, path: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """POST until a 200 answer comes back; None when abandoned or refused."""
        while not self.abandon.is_set():
            try:
                r = await client.post(self.edged.url + path, json=body)
            except httpx.TransportError:
                self.report.retries += 1
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 200:
                return dict(r.json())
            if r.status_code == 503:  # the store is busy or failing: a terminal retries
                self.report.retries += 1
                await asyncio.sleep(0.1)
                continue
            self.report.refused.append(f"{path} {body.get('uuid')}: {r.status_code} {r.text}")
            return None
        return None


async def run(settings: Settings) -> Report:
    """Run one campaign in ``settings.workdir`` and check the ledger against the store."""
    settings.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rng = random.Random(settings.seed)
    report = Report(report_only=settings.report_only)
    edged = Edged(settings.workdir)
    edged.import_people()
    ledger = Ledger(settings.workdir / "ledger.jsonl")
    run_id = f"{settings.seed}-{int(time.time())}"
    terminals = [
        Terminal(f"t{i}-{run_id}", edged, ledger, report, random.Random(rng.random()))
        for i in range(settings.terminals)
    ]
    tasks = [asyncio.create_task(t.run()) for t in terminals]
    try:
        await edged.start()
        report.starts += 1
        while report.kills < settings.kills and time.monotonic() - started < settings.deadline:
            await asyncio.sleep(rng.uniform(settings.min_up, settings.max_up))
            edged.kill()
            report.kills += 1
            await edged.start()
            report.starts += 1
        await asyncio.sleep(settings.min_up)
        await _drain(terminals, tasks)
        edged.stop()
    finally:
        for terminal in terminals:
            terminal.stop.set()
            terminal.abandon.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        edged.kill()
        ledger.close()
    report.problems = check(edged.database, ledger.answers)
    report.seconds = round(time.monotonic() - started, 1)
    return report


async def _drain(terminals: list[Terminal], tasks: list[asyncio.Task[None]]) -> None:
    """Let every terminal deliver the record it holds (bounded), then stop them."""
    for terminal in terminals:
        terminal.stop.set()
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT)
    for terminal in terminals:
        terminal.abandon.set()
    if pending:
        await asyncio.wait(pending, timeout=REQUEST_TIMEOUT)


def check(database: Path, answers: list[Answer]) -> dict[str, list[str]]:
    """Problems found by comparing the acknowledged answers with the store."""
    conn = sqlite3.connect(database)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT id, uuid, kind, decision FROM events WHERE serial = ?", (SERIAL,)
        ).fetchall()
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        grants = {
            r[0]
            for r in conn.execute(
                "SELECT json_extract(detail, '$.event') FROM door_log WHERE action = 'grant'"
            )
        }
    finally:
        conn.close()
    stored: dict[str, list[sqlite3.Row]] = {}
    for row in rows:
        stored.setdefault(row["uuid"], []).append(row)
    return {
        "lost": [a.uuid for a in answers if a.uuid not in stored],
        "doubled": [u for u, found in stored.items() if len(found) > 1],
        "changed": _changed(answers, stored),
        "integrity": [] if integrity == ["ok"] else integrity,
        "door_log": [
            a.uuid
            for a in answers
            if a.granted and a.uuid in stored and stored[a.uuid][0]["id"] not in grants
        ],
    }


def _changed(answers: list[Answer], stored: dict[str, list[sqlite3.Row]]) -> list[str]:
    """Remote-auth answers whose stored decision says otherwise."""
    out = []
    for answer in answers:
        if answer.kind != "auth" or answer.uuid not in stored:
            continue
        decision = stored[answer.uuid][0]["decision"]
        if (decision == "pass") != bool(answer.granted):
            out.append(f"{answer.uuid}: answered pass={answer.granted}, stored {decision}")
    return out


def summary(report: Report) -> dict[str, Any]:
    """The report as printed: counts for every check, and the first few examples."""
    out = asdict(report)
    out["problems"] = {name: len(found) for name, found in report.problems.items()}
    out["examples"] = {name: found[:5] for name, found in report.problems.items() if found}
    out["refused"] = report.refused[:5]
    out["ok"] = report.ok
    return out


def main(argv: list[str] | None = None) -> int:
    """The command line: run a campaign, print its report, exit 0 if every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    parser.add_argument("--terminals", type=int, default=4, help="simulated terminals")
    parser.add_argument("--seed", type=int, default=0, help="random seed (kill moments, mix)")
    parser.add_argument("--dir", type=Path, required=True, help="work directory (state, logs)")
    parser.add_argument("--deadline", type=float, default=600.0, help="max seconds of killing")
    parser.add_argument(
        "--report-only",
        action="append",
        default=[],
        choices=CHECKS,
        help="report this check without failing on it (repeatable)",
    )
    args = parser.parse_args(argv)
    settings = Settings(
        args.kills,
        args.terminals,
        args.seed,
        args.dir,
        deadline=args.deadline,
        report_only=tuple(args.report_only),
    )
    try:
        report = asyncio.run(run(settings))
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"campaign: cannot run: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary(report), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
