"""Logging to stderr: journald priority prefixes, human lines on a terminal, or JSON lines."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``: journald adds the time and reads the priority."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


# Fields of the terminals' payloads that must never reach a log line, whatever a message quotes.
SECRET_FIELDS = (
    "ic_number|pin|id_number|card_number|qrcode_content|rgb_image|alarm_photo|password|token"
)
_QUOTED = re.compile(
    rf"""(["'](?:{SECRET_FIELDS})["']\s*:\s*)("(?:[^"\\]|\\.)*"|'[^']*'|\[[^\]]*\]|[^,}}\s]+)"""
)
_PAYLOAD_PATH = re.compile(rf"(\b(?:user|data)\.(?:{SECRET_FIELDS})\b: [^,]*?, got ).*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")


def redact(text: str) -> str:
    """``text`` with card numbers, PINs, QR contents and images masked."""
    text = _QUOTED.sub(r'\1"***"', text)
    text = _PAYLOAD_PATH.sub(r"\1***", text)
    return _BASE64.sub("<base64 elided>", text)


class RedactingFilter(logging.Filter):
    """Masks secrets in every record a handler emits: a safety net, not a licence to log them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def choose_format(fmt: str) -> str:
    """``auto`` means journal under systemd's journal, text otherwise."""
    if fmt != "auto":
        return fmt
    return "journal" if os.environ.get("JOURNAL_STREAM") else "text"


def setup(level: str = "info", fmt: str = "auto") -> None:
    """Configure the root logger once, for the daemon or a CLI command."""
    handler = logging.StreamHandler(sys.stderr)
    chosen = choose_format(fmt)
    if chosen == "journal":
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    elif chosen == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # hypercorn's access log is per request: noise at INFO on a busy site
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    quiet_http_client()


# The HTTP client's loggers: httpx logs every request ("HTTP Request: GET ...") at INFO.
HTTP_CLIENT_LOGGERS = ("httpx", "httpcore")


class DemoteToDebug(logging.Filter):
    """Per-request lines of a library logged at INFO become DEBUG (shown only at debug level)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def quiet_http_client() -> None:
    """Every terminal request is DEBUG, not INFO: at the probe interval that fills an SD card."""
    for name in HTTP_CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DemoteToDebug) for f in logger.filters):
            logger.addFilter(DemoteToDebug())


class RateLimitedLog:
    """At most ``per_minute`` lines a category a minute; the rest are counted and summarised."""

    def __init__(self, logger: logging.Logger, per_minute: int = 10) -> None:
        self.logger = logger
        self.per_minute = per_minute
        self._window: dict[str, tuple[float, int, int]] = {}

    def warning(self, category: str, msg: str, *args: Any) -> bool:
        """Log unless the category is over its budget; returns whether it logged."""
        now = time.monotonic()
        start, logged, dropped = self._window.get(category, (now, 0, 0))
        if now - start >= 60:
            if dropped:
                self.logger.warning(
                    "%d more %r messages suppressed in the last minute", dropped, category
                )
            start, logged, dropped = now, 0, 0
        if logged < self.per_minute:
            self._window[category] = (start, logged + 1, dropped)
            self.logger.warning(msg, *args)
            return True
        self._window[category] = (start, logged, dropped + 1)
        return False
