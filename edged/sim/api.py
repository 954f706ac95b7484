"""The simulated terminal's web API (``/v1/...``), and the records it makes.

Answers follow the terminal: ``{"code", "msg", "data"}``; HTTP 200 with ``code != 200`` for a
refused login (1000 no such account, 1001 wrong password) or a bad request; HTTP 401 without
valid credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edged.sim import devicecfg, peopleapi
from edged.sim.state import FIRMWARES as FIRMWARES
from edged.sim.state import Device, Firmware, default_functions
from edged.sim.state import firmware as firmware

REQUIRED_FUNCTIONS = ("record", "record_image", "alarm_record")


def new_record(
    serial: str, n: int, now: int, user_id: str, name: str, image: str, mode: int = 0
) -> dict[str, Any]:
    """A current-firmware (1.2.1+) recognition record."""
    known = bool(user_id)
    return {
        "deviceSN": serial,
        "uuid": f"{serial}-{now}-{n}-{secrets.token_hex(4)}",
        "recognitionType": 1 if known else 3,
        "recognizeScore": round(0.9 + (n % 97) / 1000, 3) if known else 0.2,
        "mask": 1,
        "mode": mode,
        "entry_mode": 1,
        "abnormal_type": 0,
        "pass": known,
        "timestamp": now,
        "bodyTemperature": 36.5,
        "rgb_image": image,
        "user": {"name": name, "user_id": user_id, "type": 1, "groups": []} if known else None,
    }


def old_record(
    serial: str, n: int, now: int, user_id: str, name: str, image: str, mode: int = 0
) -> dict[str, Any]:
    """A firmware 1.0/1.1 record: recognizeStatus, int user ids, no uuid."""
    known = bool(user_id)
    return {
        "deviceSN": serial,
        "recognizeStatus": 4 if known else 3,
        # no uuid: the score tells apart records of one person in one second (edged's hash key)
        "recognizeScore": round((0.9 if known else 0.2) + (n % 99_991) / 1e6, 6),
        "livenessScore": 0.99,
        "mask": 1,
        "mode": mode,
        "pass": known,
        "timestamp": now,
        "bodyTemperature": 36.5,
        "rgb_image": image,
        "user": {"name": name, "user_id": int(user_id[2:]), "type": 1} if known else None,
    }


def alarm_record(code: int, status: int, now_ms: int) -> dict[str, Any]:
    """A device alarm (type 1, firmware 1.3.0+): no ``deviceSN``, time in milliseconds."""
    return {
        "trace_id": f"alarm-{now_ms}-{secrets.token_hex(4)}",
        "description": ALARM_CODES.get(code, "alarm"),
        "code": code,
        "user_id": "",
        "event_time": now_ms,
        "status": status,
        "alarm_photo": "",
    }


ALARM_CODES = {
    10001: "tamper",
    10002: "door forced open",
    10003: "door held open",
    10004: "password attack",
    20003: "fire alarm",
}


def blacklisted(record: dict[str, Any], fw: Firmware) -> dict[str, Any]:
    """The record of a blacklisted person as ``fw`` reports it (type 3 before 1.3.0, then 5)."""
    user = dict(record["user"] or {"name": "", "user_id": ""})
    user["type"] = fw.blacklist_type
    out = {**record, "user": user, "pass": False}
    if fw.new_records:
        out["recognitionType"] = 5
    return out


def auth_request(serial: str, user_id: str, name: str, now: float) -> dict[str, Any]:
    """A flat remote-authentication request made at ``now`` (epoch seconds)."""
    return {
        "deviceSN": serial,
        "recognizeStatus": 4 if user_id else 3,
        "recognizeScore": 0.95 if user_id else 0.2,
        "entry_mode": 1,
        "mask": 1,
        "rgb_image": "",
        "bodyTemperature": 36.4,
        "timestamp": int(now),
        "qrcode_content": "",
        "user": {"name": name, "user_id": user_id, "type": 1} if user_id else None,
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(secret: bytes, username: str, minutes: int, now: float) -> str:
    """A JWT (HS256) naming the account and its expiry (``now``: epoch seconds)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": username, "exp": int(now) + minutes * 60, "jti": secrets.token_hex(8)}
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def answer(data: Any = None, code: int = 200, msg: str = "success", status: int = 200) -> Response:
    """The terminal's response envelope."""
    body = json.dumps({"code": code, "msg": msg, "data": data}).encode()
    return Response(body, status_code=status, media_type="application/json")


class Api:
    """The handlers, bound to one simulated terminal."""

    def __init__(self, sim: Device) -> None:
        self.sim = sim

    def headers(self, response: Response) -> Response:
        s = self.sim.settings
        fw = self.sim.firmware
        # One request a connection: a reboot then never cuts a kept-alive connection mid-request
        # (hypercorn 0.13 reports such TLS shutdowns as errors of its own tasks).
        response.headers["connection"] = "close"
        if fw.identity_headers:
            response.headers["model"] = s.model
            response.headers["sn"] = s.serial
            response.headers["timestamp"] = str(int(self.sim.config.now()))
            response.headers["account"] = s.username
        return response

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        s = self.sim.settings
        if scheme.lower() == "bearer":
            expiry = self.sim.state.tokens.get(value.strip())
            return expiry is not None and self.sim.clock.monotonic() < expiry
        if scheme.lower() == "basic" and s.basic_auth:
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return hmac.compare_digest(f"{user}:{password}", f"{s.username}:{s.password}")
        return False

    async def body(self, request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def dispatch(self, request: Request) -> Response:
        key = f"{request.method} {request.url.path}"
        self.sim.requests[key] += 1
        handler = ROUTES.get(key)
        people = None if handler else peopleapi.find(self.sim, request.method, request.url.path)
        v2_missing = request.url.path.startswith("/v2/") and not self.sim.firmware.v2
        if (handler is None and people is None) or v2_missing:
            return self.headers(answer(None, 404, "not found", 404))
        if key not in OPEN and not self.authorised(request):
            return self.headers(answer(None, 401, "Unauthorized", 401))
        if people is not None:
            return self.headers(await people(request))
        assert handler is not None
        return self.headers(await handler(self, request))

    async def login(self, request: Request) -> Response:
        body = await self.body(request)
        s = self.sim.settings
        if body.get("username") != s.username:
            return answer(None, 1000, "account does not exist")
        if not hmac.compare_digest(str(body.get("password", "")), s.password):
            return answer(None, 1001, "wrong password")
        minutes = body.get("validTime", 5)
        if not isinstance(minutes, int) or not 1 <= minutes <= 1440:
            return answer(None, 400, "validTime must be 1-1440")
        clock = self.sim.clock
        token = make_token(self.sim.state.secret, s.username, minutes, clock.time())
        self.sim.state.tokens[token] = clock.monotonic() + minutes * s.minute_seconds
        return answer({"token": token})

    async def ping(self, request: Request) -> Response:
        return answer(None)

    async def info(self, request: Request) -> Response:
        s = self.sim.settings
        sw = self.sim.firmware.version
        return answer(
            {
                "model": s.model,
                "device_sn": s.serial,
                "mac_wired": "02:00:00:" + s.serial[-6:-4] + ":" + s.serial[-4:-2] + ":00",
                "sw_ver": sw,
                "hw_ver": "1.0",
                "app_ver": sw,
            }
        )

    async def certificate(self, request: Request) -> Response:
        with open(self.sim.cert_path, encoding="ascii") as handle:
            return answer({"crt": handle.read()})

    async def get_subscribe(self, request: Request) -> Response:
        shown = self.sim.firmware.read_back
        sub = self.sim.state.subscription
        if shown == "null" or sub is None:
            return answer(None)  # as the guide's examples: registration cannot be read back
        if shown == "dest":
            return answer({"event_dest": sub["event_dest"]})
        return answer(sub)

    async def post_subscribe(self, request: Request) -> Response:
        body = await self.body(request)
        dest = body.get("event_dest")
        if not isinstance(dest, str) or not dest.startswith(("http://", "https://")):
            return answer(None, 400, "event_dest must be an http(s) URL")
        if len(dest.encode()) > 1024:
            return answer(None, 400, "event_dest longer than 1024 bytes")
        if not self.sim.firmware.enabled_accepted:
            if "enabled" in body:
                return answer(None, 400, "unknown parameter: enabled")
            enabled = True
        else:
            enabled = bool(body.get("enabled", False))  # 1.3.0: omitted means disabled
        self.sim.subscribe(dest, enabled)
        return answer(None)

    async def get_functions(self, request: Request) -> Response:
        return answer(dict(self.sim.state.functions))

    async def post_functions(self, request: Request) -> Response:
        body = await self.body(request)
        missing = [k for k in REQUIRED_FUNCTIONS if k not in body]
        if missing:
            return answer(None, 400, f"missing required fields: {', '.join(missing)}")
        mode = body.get("auth_mode", 0)
        if mode not in (0, 1, 3):
            return answer(None, 400, "auth_mode must be 0, 1 or 3")
        timeout = body.get("remote_auth_timeout_to_local_auth", 0)
        if not isinstance(timeout, int) or not 0 <= timeout <= 60:
            return answer(None, 400, "remote_auth_timeout_to_local_auth must be 0-60")
        known = set(default_functions())
        self.sim.state.functions = {k: v for k, v in body.items() if k in known}
        return answer(None)

    async def records(self, request: Request) -> Response:
        body = await self.body(request)
        try:
            begin, end = float(body.get("begin_time", 0)), float(body.get("end_time", 2**40))
            offset, limit = int(body.get("offset", 0)), int(body.get("limit", 20))
        except (TypeError, ValueError):
            return answer(None, 400, "bad paging parameters")
        most = self.sim.firmware.records_limit
        if not 1 <= limit <= most or offset < 0:
            return answer(None, 400, f"limit must be 1..{most}")
        found = [r for r in self.sim.history if begin <= r["timestamp"] <= end]
        if body.get("sort") == 1:
            found.reverse()
        items = found[offset : offset + limit]
        page = {"offset": offset, "limit": limit, "count": len(items), "total": len(found)}
        return answer({**page, "items": items})

    async def door(self, request: Request) -> Response:
        body = await self.body(request)
        mode = body.get("open_mode")
        if mode not in (0, 1, 2):
            return answer(None, 400, "open_mode must be 0, 1 or 2")
        self.sim.door_log.append(int(mode))
        return answer(None)

    async def reboot(self, request: Request) -> Response:
        self.sim.reboot_soon()
        return answer(None)


def _device(handler: devicecfg.Handler) -> Any:
    """A route of the terminal's clock and settings (edged.sim.devicecfg)."""

    async def route(api: Api, request: Request) -> Response:
        body = await api.body(request) if request.method == "POST" else {}
        # looked up on the instance: a test may replace one terminal's handler
        data, code, msg = getattr(api.sim.config, handler.__name__)(body)
        return answer(data, code, msg)

    return route


ROUTES = {
    **{key: _device(handler) for key, handler in devicecfg.ROUTES.items()},
    "POST /v1/auth/login": Api.login,
    "GET /v2/datasync/ping": Api.ping,
    "GET /v1/device/info": Api.info,
    "GET /v1/auth/certificate": Api.certificate,
    "GET /v1/event/subscribe": Api.get_subscribe,
    "POST /v1/event/subscribe": Api.post_subscribe,
    "GET /v1/device/functions": Api.get_functions,
    "POST /v1/device/functions": Api.post_functions,
    "POST /v1/event/records": Api.records,
    "POST /v1/device/door": Api.door,
    "GET /v1/device/reboot": Api.reboot,
}
OPEN = frozenset({"POST /v1/auth/login", "GET /v2/datasync/ping"})


def create_app(sim: Device) -> Starlette:
    """The terminal's ASGI app."""
    api = Api(sim)
    paths = sorted({key.split(" ", 1)[1] for key in ROUTES})
    routes = [Route(path, api.dispatch, methods=["GET", "POST"]) for path in paths]
    routes.append(Route("/{rest:path}", api.dispatch, methods=peopleapi.METHODS))  # people
    return Starlette(routes=routes)
