"""A fake door terminal: its web API over real HTTPS on loopback, and its pushes to a gateway.

It behaves like a real terminal as far as edged cares (docs/simulator.md): JWT
and Basic login, push registration, functions (read-modify-write), device info, ping, records,
door, reboot. It pushes records to its registered ``event_dest``, keeps them (up to 50,000) while
the receiver does not answer 200 with ``code`` 200 and sends them again in order, and can reboot:
go away for a while and come back with its registration and remote-auth mode lost. Usable from
tests (``await sim.start()``, port 0) and from ``edged simulate``. Its time (token lifetimes,
reboots, retries, heartbeats, record stamps) comes from the ``Clock`` passed in, so a test can
advance it instead of waiting. Needs ``cryptography`` (the
``simulator`` extra; Debian: python3-cryptography) for its self-signed certificate.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import json
import logging
import os
import random
import socket
import ssl
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx

from edged.clock import SYSTEM, Clock
from edged.sim import api as simapi
from edged.sim import cert as simcert
from edged.sim.devicecfg import DeviceConfig
from edged.sim.library import Library
from edged.sim.push import PushConnection, PushError
from edged.sim.state import SimSettings, SimState, firmware

log = logging.getLogger(__name__)

PEOPLE = [("e-1", "Ann Example"), ("e-2", "Bob Example"), ("e-3", "Cem Example"), ("", "")]


class SimulatedTerminal:
    """One fake terminal: HTTPS API, record generator, push sender with its replay buffer."""

    def __init__(self, settings: SimSettings | None = None, clock: Clock = SYSTEM) -> None:
        self.settings = settings or SimSettings()
        self.clock = clock
        self.firmware = firmware(self.settings.firmware)
        self.state = SimState()
        s = self.settings
        self.config = DeviceConfig(self.firmware.version, clock, s.ntp_reachable, s.skew)
        self.library = Library(self.firmware.blacklist_type, int_ids=not self.firmware.v2)
        if self.settings.event_dest:
            self.state.subscription = {"event_dest": self.settings.event_dest, "enabled": True}
        self.history: list[dict[str, Any]] = []  # every record, as /v1/event/records lists it
        self.buffer: collections.deque[dict[str, Any]] = collections.deque()
        self.dropped = 0  # records lost past the buffer cap
        self.pushed = 0
        self.door_log: list[int] = []
        self.requests: collections.Counter[str] = collections.Counter()
        self.boots = 0
        self.up = False
        self.came_back_at: float | None = None  # monotonic time of the last boot
        self.registered_at: float | None = None  # monotonic time of the last subscribe POST
        self.cert_path, self.key_path = self._certificate()
        self._counter = itertools.count(1)
        self._image = _fake_jpeg(self.settings.image_bytes)
        self._work = asyncio.Event()
        self._stopping: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._sock: socket.socket | None = None
        self._reboot: asyncio.Task[Any] | None = None
        self._auth_lost_since: float | None = None
        self._client: httpx.AsyncClient | None = None  # heartbeats, remote-auth requests
        self._pusher: PushConnection | None = None  # pushes: one kept-alive connection
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = self.settings.port

    # ----- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL of the terminal's API."""
        return f"https://{self.settings.host}:{self.port}"

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the certificate the terminal presents."""
        from edged.terminals.tlspin import fingerprint_pem

        return fingerprint_pem(Path(self.cert_path).read_text())

    # Each simulated terminal runs on its own thread and event loop, like a separate device:
    # its server's connection handling (and hypercorn's complaints about TLS peers that vanish
    # at a reboot) never touches the caller's loop. The public coroutines hop over to it.

    def _ensure_thread(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(_quiet)
            self._loop = loop
            self._thread = threading.Thread(
                target=loop.run_forever, name=f"sim-{self.settings.serial}", daemon=True
            )
            self._thread.start()
        return self._loop

    async def _on_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure_thread())
        return await asyncio.wrap_future(future)

    async def start(self) -> None:
        """Boot: bind the port (kept across reboots), serve the API, start pushing."""
        await self._on_loop(self._boot())

    async def stop(self) -> None:
        """Shut down completely (also ends a reboot in progress) and end the thread."""
        if self._loop is None:
            return
        await self._on_loop(self._shutdown())
        await self._on_loop(_cancel_all())
        loop, thread = self._loop, self._thread
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            await asyncio.to_thread(thread.join, 30)  # a loaded machine can take its time
        if not loop.is_running():  # else the daemon thread ends with the process
            loop.close()
        self._loop = self._thread = None

    async def reboot(
        self, down_seconds: float | None = None, new_certificate: bool = False
    ) -> None:
        """Go away for ``down_seconds``, then come back with registration and auth mode lost."""
        await self._on_loop(self._reboot_now(down_seconds, new_certificate))

    def reboot_soon(self, down_seconds: float | None = None) -> None:
        """Start a reboot in the background (what GET /v1/device/reboot does); any thread."""
        loop = self._ensure_thread()
        loop.call_soon_threadsafe(self._spawn_reboot, down_seconds)

    def _spawn_reboot(self, down_seconds: float | None) -> None:
        self._reboot = asyncio.get_running_loop().create_task(self._reboot_now(down_seconds))

    async def _boot(self) -> None:
        from hypercorn.asyncio import serve

        if self._sock is None:
            self._sock = _bind(self.settings.host, self.port)
            self.port = int(self._sock.getsockname()[1])
        self._stopping = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=5.0, verify=_push_context())
        self._pusher = PushConnection(timeout=5.0, context=_push_context())
        app = simapi.create_app(self)
        hc = _hyper_config(self._sock, self.cert_path, self.key_path)
        server = serve(app, hc, shutdown_trigger=self._stopping.wait)  # type: ignore[arg-type]
        self._tasks = [
            asyncio.create_task(server),
            asyncio.create_task(self._generate()),
            asyncio.create_task(self._send()),
            asyncio.create_task(self._heartbeat()),
        ]
        self.came_back_at = (
            self.clock.monotonic()
        )  # the port accepts (and queues) connections again
        await self._wait_listening()
        self.boots += 1
        self.up = True

    async def _shutdown(self) -> None:
        if self._reboot is not None and self._reboot is not asyncio.current_task():
            self._reboot.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reboot
        await self._halt()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _halt(self) -> None:
        self.up = False
        if self._stopping is not None:
            self._stopping.set()
        for task in self._tasks[1:]:
            task.cancel()
        if self._tasks:
            # a TLS peer that never answers the close can hold hypercorn for its 30 s SSL
            # shutdown timeout: a terminal going away does not wait for it
            _, pending = await asyncio.wait(self._tasks, timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.wait(self._tasks, timeout=1.0)
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._pusher is not None:
            await self._pusher.close()
            self._pusher = None

    async def _reboot_now(
        self, down_seconds: float | None = None, new_certificate: bool = False
    ) -> None:
        down = self.settings.reboot_seconds if down_seconds is None else down_seconds
        await self._halt()
        self._listen_paused(True)
        await self.clock.sleep(down)
        self.state = SimState(functions={**self.state.functions, "auth_mode": 0})
        if new_certificate:
            for path in (self.cert_path, self.key_path):
                Path(path).unlink(missing_ok=True)
            self.cert_path, self.key_path = self._certificate()
        self._listen_paused(False)
        await self._boot()

    def _listen_paused(self, paused: bool) -> None:
        """While 'rebooting', refuse connections: close the socket, rebind the same port later."""
        if paused and self._sock is not None:
            self._sock.close()
            self._sock = None
        elif not paused and self._sock is None:
            self._sock = _bind(self.settings.host, self.port)

    async def _wait_listening(self) -> None:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection(self.settings.host, self.port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            writer.close()
            return

    def _certificate(self) -> tuple[str, str]:
        folder = self.settings.cert_dir or tempfile.mkdtemp(prefix="edged-sim-")
        cert = Path(folder) / f"{self.settings.serial}.crt"
        key = Path(folder) / f"{self.settings.serial}.key"
        if not (cert.exists() and key.exists()):
            Path(folder).mkdir(parents=True, exist_ok=True)
            pem_cert, pem_key = simcert.self_signed_certificate(self.settings.model)
            key.write_bytes(pem_key)
            key.chmod(0o600)
            cert.write_bytes(pem_cert)
        return str(cert), str(key)

    # ----- records --------------------------------------------------------------------------

    def emit(self, count: int = 1, blacklisted: bool = False) -> list[dict[str, Any]]:
        """Record ``count`` passages now: kept in history, queued for push when registered.

        ``blacklisted``: of a person on the terminal's blacklist, with the firmware's user type.
        """
        made = [self._record() for _ in range(count)]
        if blacklisted:
            made = [simapi.blacklisted(record, self.firmware) for record in made]
        self._keep(made)
        return made

    def alarm(self, code: int = 10002, status: int = 1) -> dict[str, Any]:
        """Raise (status 1) or clear (3) a device alarm: pushed as type 1 while registered.

        Only firmware 1.3.0 and later push alarms: on older ones this is a ValueError.
        """
        if not self.firmware.alarms:
            raise ValueError(f"firmware {self.firmware.version} pushes no alarms")
        made = simapi.alarm_record(code, status, int(self.config.now() * 1000))
        if self.registered:
            if self._loop is not None and self._loop.is_running():
                self._loop.call_soon_threadsafe(self._enqueue, made)
            else:
                self._enqueue(made)
        return made

    def _keep(self, made: list[dict[str, Any]]) -> None:
        """Into the history; into the push queue while registered (any thread)."""
        queued = []
        for record in made:
            self.history.append({**record, "rgb_image": ""})
            if self.registered:
                queued.append(record)
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._enqueue_all, queued)
        else:
            self._enqueue_all(queued)

    def _enqueue_all(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._enqueue(record)

    def subscribe(self, event_dest: str, enabled: bool) -> None:
        """Set the push destination (POST /v1/event/subscribe)."""
        self.state.subscription = {"event_dest": event_dest, "enabled": enabled}
        self.registered_at = self.clock.monotonic()
        self._work.set()

    @property
    def registered(self) -> bool:
        """A push destination is set and enabled."""
        sub = self.state.subscription
        return bool(sub and sub.get("event_dest") and sub.get("enabled", True))

    def _enqueue(self, record: dict[str, Any]) -> None:
        if len(self.buffer) >= self.settings.buffer_cap:
            self.buffer.popleft()  # what a terminal does past its cap is unknown: drop oldest
            self.dropped += 1
        self.buffer.append(record)
        self._work.set()

    def _record(self, n: int | None = None, passed: bool | None = None) -> dict[str, Any]:
        n = next(self._counter) if n is None else n
        user_id, name = PEOPLE[n % len(PEOPLE)]
        now = int(self.config.now())  # the terminal stamps its records with its own clock
        fw = self.firmware
        make = simapi.new_record if fw.new_records else simapi.old_record
        record = make(
            self.settings.serial, n, now, user_id, name, self._image, fw.face_or_card_mode
        )
        if passed is not None:
            record["pass"] = passed  # the gateway decided (remote authentication)
        return record

    async def _generate(self) -> None:
        rate = self.settings.rate
        if rate <= 0:
            return
        while True:
            await self.clock.sleep(random.expovariate(rate))
            n = next(self._counter)
            answer = await self._maybe_ask_gateway(n)
            data = answer.get("data") if answer else None
            passed = bool(data.get("pass")) if isinstance(data, dict) else None
            self._keep([self._record(n, passed)])

    async def _send(self) -> None:
        """Push buffered records oldest first; keep a record until it is acknowledged."""
        while True:
            if not self.buffer or not self.registered:
                self._work.clear()
                await self._work.wait()
                continue
            record = self.buffer[0]
            if await self._push(record):
                if self.buffer and self.buffer[0] is record:
                    self.buffer.popleft()
                self.pushed += 1
            else:
                await self.clock.sleep(self.settings.retry_seconds)

    async def _push(self, record: dict[str, Any]) -> bool:
        assert self._pusher is not None and self.state.subscription is not None
        dest = self.state.subscription["event_dest"]
        headers = self._headers()
        push_type = 1 if "trace_id" in record else 0  # an alarm (simapi.alarm_record)
        body = json.dumps({"type": push_type, "data": record}).encode()
        if self.firmware.push_content_type:
            headers["content-type"] = "application/json"
        try:
            status, answer = await self._pusher.post(dest, body, headers)
            code = json.loads(answer).get("code") if status == 200 else None
        except (PushError, ValueError, AttributeError) as exc:
            log.debug("simulator %s: push failed: %s", self.settings.serial, exc)
            return False
        return code == 200

    def _headers(self) -> dict[str, str]:
        if not self.firmware.identity_headers:
            return {}
        return {
            "model": self.settings.model,
            "sn": self.settings.serial,
            "timestamp": str(int(self.config.now())),
            "account": self.settings.username,
        }

    # ----- remote authentication ------------------------------------------------------------

    def _remote_address(self) -> str | None:
        functions = self.state.functions
        if functions.get("auth_mode") in (1, 3) and functions.get("remote_authentication_address"):
            return str(functions["remote_authentication_address"])
        return None

    async def _heartbeat(self) -> None:
        while True:
            await self.clock.sleep(self.settings.heartbeat_seconds)
            address = self._remote_address()
            if address is None or self._client is None:
                continue
            try:
                response = await self._client.get(address, headers=self._headers())
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            self._server_seen(ok)

    def _server_seen(self, ok: bool) -> None:
        """Fall back to local decisions after ``remote_auth_timeout_to_local_auth`` minutes."""
        if ok:
            self._auth_lost_since = None
            return
        now = self.clock.monotonic()
        self._auth_lost_since = self._auth_lost_since or now
        limit = float(self.state.functions.get("remote_auth_timeout_to_local_auth") or 0)
        if limit and now - self._auth_lost_since >= limit * self.settings.minute_seconds:
            self.state.functions["auth_mode"] = 0
            log.info("simulator %s: server lost, back to local decisions", self.settings.serial)

    async def _maybe_ask_gateway(self, n: int | None = None) -> dict[str, Any] | None:
        """In remote-auth mode, ask the gateway about person ``n`` (as the terminal does)."""
        address = self._remote_address()
        if address is None or self._client is None:
            return None
        n = next(self._counter) if n is None else n
        user_id, name = PEOPLE[n % len(PEOPLE)]
        body = simapi.auth_request(self.settings.serial, user_id, name, self.config.now())
        try:
            response = await self._client.post(address, json=body, headers=self._headers())
            answer: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError):
            self._server_seen(False)
            return None
        self._server_seen(True)
        return answer


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The simulator's loop: errors of vanished TLS peers are expected at reboots."""
    log.debug("simulator loop: %s", context.get("message"), exc_info=context.get("exception"))


async def _cancel_all() -> None:
    """Cancel whatever still runs on the simulator's loop (hypercorn's lingering tasks)."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _fake_jpeg(size: int) -> str:
    if size <= 0:
        return ""
    blob = b"\xff\xd8\xff\xe0" + os.urandom(max(size - 6, 0)) + b"\xff\xd9"
    return base64.b64encode(blob).decode()


def _push_context() -> ssl.SSLContext:
    """The terminal's own pushes do not check an https ``event_dest`` (unknown on real ones)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


def _hyper_config(sock: socket.socket, certfile: str, keyfile: str) -> Any:
    from hypercorn.config import Config as HyperConfig

    hc = HyperConfig()
    hc.bind = [f"fd://{os.dup(sock.fileno())}"]
    hc.certfile = certfile
    hc.keyfile = keyfile
    hc.graceful_timeout = 0.2
    hc.accesslog = None
    hc.errorlog = logging.getLogger("edged.sim.terminal.http")
    return hc
