"""Test keys: SendGrid's Event Webhook signing key and Google service accounts.

The SendGrid key is an ECDSA P-256 key derived from a seed, so a test (or a receiver
configured once) knows the public key without asking the sandbox. Service accounts are
fresh RSA keys written in the JSON layout google-auth reads, with `token_uri` pointing at
the sandbox's `/token`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# The order of the P-256 group: private scalars must lie in [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def event_webhook_private_key(seed: str) -> ec.EllipticCurvePrivateKey:
    digest = int.from_bytes(hashlib.sha256(seed.encode("utf-8")).digest(), "big")
    return ec.derive_private_key(digest % (_P256_ORDER - 1) + 1, ec.SECP256R1())


def event_webhook_public_key(seed: str) -> str:
    """The verification key as SendGrid's settings page shows it: base64 of the DER SPKI."""
    der = (
        event_webhook_private_key(seed)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode("ascii")


def sign_event_webhook(seed: str, timestamp: str, payload: bytes) -> str:
    """SendGrid's signature: ECDSA/SHA-256 over timestamp + raw body, base64 of the DER."""
    signature = event_webhook_private_key(seed).sign(timestamp.encode("utf-8") + payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


def new_service_account(
    *, token_uri: str, project_id: str, client_email: str | None = None
) -> tuple[dict[str, Any], bytes]:
    """A service-account JSON document and the PEM public key that verifies its assertions."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    email = client_email or f"sandbox-{secrets.token_hex(4)}@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": private_pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    return info, public_pem


def write_service_account(path: Path, info: dict[str, Any]) -> Path:
    path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    path.chmod(0o600)
    return path
