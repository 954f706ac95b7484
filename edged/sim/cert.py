"""The simulated terminal's certificate: self-signed, named after the model, not its address.

Needs ``cryptography`` (the ``simulator`` extra; Debian: python3-cryptography).
"""

from __future__ import annotations

import uuid as uuidlib


def self_signed_certificate(model: str) -> tuple[bytes, bytes]:
    """A PEM certificate and key like a terminal's: self-signed, names not matching its IP."""
    import datetime

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        from edged.errors import SimulatorError

        raise SimulatorError(
            "the simulator needs the 'cryptography' package (pip install 'edged[simulator]', "
            "or apt install python3-cryptography)"
        ) from None
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, model),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edged simulator"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, uuidlib.uuid4().hex[:16]),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key
