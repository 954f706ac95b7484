"""TLS to the terminals: a pinned certificate fingerprint, or CA verification; never trust-all.

The terminals' certificates are self-signed and name no IP they live on, so the usual checks
cannot pass. In *pinned* mode the handshake runs without chain or hostname checks and the peer
certificate's SHA-256 is compared with the pinned one **inside the handshake**: the context's
``SSLObject``/``SSLSocket`` classes finish ``do_handshake()`` only when the fingerprint matches,
so no byte of a request (credentials included) can be sent to another certificate. This works
under every client that wraps its sockets with the context (httpx 0.23 and 0.28, anyio, asyncio)
because they all call ``do_handshake()`` before using the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ssl
from dataclasses import dataclass
from typing import Any

from edged import aio

# the parser lives with the configuration that checks it; imported here for the callers
from edged.config.fields import FINGERPRINT_PREFIX as PREFIX
from edged.config.fields import check_fingerprint as check_fingerprint
from edged.config.fields import normalise_fingerprint as normalise


class PinMismatch(ssl.SSLCertVerificationError):
    """The terminal presented a certificate other than the pinned one."""

    def __init__(self, expected: str, presented: str) -> None:
        self.expected = expected
        self.presented = presented
        # (errno, strerror): anyio reads ``strerror`` of every SSLError raised in a handshake
        super().__init__(1, f"certificate {presented} is not the trusted {expected}")


def fingerprint(der: bytes) -> str:
    """``sha256:<64 hex>`` of a DER certificate."""
    return PREFIX + hashlib.sha256(der).hexdigest()


def fingerprint_pem(pem: str) -> str:
    """``sha256:<64 hex>`` of a PEM certificate."""
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def _verify(obj: Any, context: PinnedContext) -> None:
    der = obj.getpeercert(binary_form=True)
    presented = fingerprint(der) if der else "(none)"
    context.last_presented = presented
    if not hmac.compare_digest(presented, context.pin):
        context.last_mismatch = presented
        raise PinMismatch(context.pin, presented)
    context.last_mismatch = None


class _PinnedObject(ssl.SSLObject):
    """An SSLObject whose handshake fails unless the peer certificate is the pinned one."""

    def do_handshake(self) -> None:
        super().do_handshake()  # raises SSLWantReadError until the handshake is complete
        assert isinstance(self.context, PinnedContext)
        _verify(self, self.context)


class _PinnedSocket(ssl.SSLSocket):
    """The blocking-socket counterpart of _PinnedObject."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        assert isinstance(self.context, PinnedContext)
        _verify(self, self.context)


class PinnedContext(ssl.SSLContext):
    """A client context that accepts exactly one certificate, by its SHA-256."""

    sslobject_class = _PinnedObject
    sslsocket_class = _PinnedSocket
    pin: str
    last_presented: str | None
    last_mismatch: str | None


def pinned_context(pin: str) -> PinnedContext:
    """A TLS client context pinned to ``pin`` (``sha256:...``)."""
    canonical = normalise(pin)
    if canonical is None:
        raise ValueError(f"not a certificate fingerprint: {pin!r}")
    ctx = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the terminal's names never match its address
    ctx.verify_mode = ssl.CERT_NONE  # self-signed: the pin replaces the chain
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.pin = canonical
    ctx.last_presented = None
    ctx.last_mismatch = None
    return ctx


def ca_context(ca_file: str = "") -> ssl.SSLContext:
    """A context verifying chain and host name against ``ca_file`` or the system's CAs."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass(frozen=True)
class Presented:
    """The certificate a terminal presents, as ``edged terminals trust`` shows it."""

    fingerprint: str
    subject: str
    not_after: str
    der: bytes


async def fetch_certificate(host: str, port: int, timeout: float = 10.0) -> Presented:
    """Handshake with ``host:port`` without trusting it, take its certificate, send nothing."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only to look: nothing is sent on this connection
    _, writer = await aio.within(
        asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), timeout
    )
    try:
        obj = writer.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if not der:
        raise ssl.SSLError("the terminal presented no certificate")
    subject, not_after = describe(der)
    return Presented(fingerprint(der), subject, not_after, der)


def describe(der: bytes) -> tuple[str, str]:
    """The subject and expiry of a certificate, when ``cryptography`` is there to read them."""
    try:
        from cryptography import x509
    except ImportError:
        return "(install python3-cryptography to show the subject)", "?"
    cert = x509.load_der_x509_certificate(der)
    after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
    return cert.subject.rfc4514_string(), after.isoformat()
