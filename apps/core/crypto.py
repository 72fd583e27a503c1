"""Encrypting secrets at rest (webhook signing secrets, provider credentials, stored idempotent replies) with Fernet.

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

from apps.core.conf import core_settings


class DecryptionFailed(Exception):
    """The ciphertext was made with a key that is no longer configured."""


def _configured_keys(configured: str) -> list[Fernet]:
    return [Fernet(k.strip().encode()) for k in configured.split(",") if k.strip()]


def _derived_key(secret_key: str) -> Fernet:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"signalbox-secrets-at-rest", info=b"fernet-key-v1"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


@functools.lru_cache(maxsize=4)
def _fernet(configured: str, secret_key: str) -> MultiFernet:
    return MultiFernet(_configured_keys(configured) if configured else [_derived_key(secret_key)])


def _current() -> MultiFernet:
    return _fernet(core_settings().encryption_key, settings.SECRET_KEY)


def encrypt(text: str) -> str:
    return _current().encrypt(text.encode()).decode()


def rotate(token: str) -> str:
    """The same secret encrypted under the first configured key (`manage.py rotate_encryption_key`).

    Decrypts with any configured key or, as a last resort, the key derived from SECRET_KEY, so moving
    from the derived key to an explicit SIGNALBOX_ENCRYPTION_KEY is a rotation like any other.
    """
    configured = core_settings().encryption_key
    keys = [*_configured_keys(configured), _derived_key(settings.SECRET_KEY)]
    try:
        return MultiFernet(keys).rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionFailed("The secret cannot be decrypted with the configured keys.") from exc


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionFailed("The secret cannot be decrypted with the configured keys.") from exc
