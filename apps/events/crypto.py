"""Encrypting secrets at rest (webhook signing secrets) with Fernet.

The key is `SIGNALBOX_ENCRYPTION_KEY` (comma-separated Fernet keys: the first encrypts, every
one decrypts, so keys can be rotated), or — when that is empty — a key derived from SECRET_KEY
with HKDF. Ciphertexts are plain strings, stored in TextFields.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


class DecryptionFailed(Exception):
    """The ciphertext was made with a key that is no longer configured."""


@functools.lru_cache(maxsize=4)
def _fernet(configured: str, secret_key: str) -> MultiFernet:
    if configured:
        return MultiFernet([Fernet(k.strip().encode()) for k in configured.split(",") if k.strip()])
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"signalbox-secrets-at-rest", info=b"fernet-key-v1"
    ).derive(secret_key.encode())
    return MultiFernet([Fernet(base64.urlsafe_b64encode(derived))])


def _current() -> MultiFernet:
    return _fernet(getattr(settings, "SIGNALBOX_ENCRYPTION_KEY", ""), settings.SECRET_KEY)


def encrypt(text: str) -> str:
    return _current().encrypt(text.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionFailed("The secret cannot be decrypted with the configured keys.") from exc
