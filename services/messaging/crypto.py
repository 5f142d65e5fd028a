"""Encryption of message bodies at rest (AES-256-GCM).

Each body is sealed with a fresh 96-bit random nonce. The associated data is
``"{practice_id}|{conversation_id}|{message_id}"``, so a ciphertext copied into
another row (another message, conversation or practice) no longer decrypts.

The data key is 32 random bytes, base64-encoded, in ``<keys_dir>/messaging-data.key``
(or ``CONFIDANT_MESSAGING_DATA_KEY_FILE``). Development mode creates it when
missing; production mode refuses to start without it. ``key_version`` is stored
with every row so the key can later be rotated (or wrapped by KMS) without
rewriting old messages.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.common.keyfiles import load_key_file

KEY_BYTES = 32
NONCE_BYTES = 12
CURRENT_KEY_VERSION = 1


class DataKeyError(OSError):
    """The data key file is missing or malformed: the service cannot start.

    An ``OSError`` so that the shared entry point reports it in one sentence.
    """


class DecryptionError(Exception):
    """A stored body did not authenticate: wrong key, wrong row, or tampering."""


@dataclass(frozen=True)
class SealedBody:
    ciphertext: bytes
    nonce: bytes
    key_version: int


def associated_data(practice_id: str, conversation_id: str, message_id: str) -> bytes:
    return f"{practice_id}|{conversation_id}|{message_id}".encode()


def load_data_key(path: Path, create_if_missing: bool) -> bytes:
    """Read the base64 data key; in development, create it (mode 0600) if absent."""
    return load_key_file(path, KEY_BYTES, "message data key", create_if_missing, DataKeyError)


class MessageCipher:
    """Seals and opens message bodies; also gives the keyed digest used for idempotency."""

    def __init__(self, key: bytes, key_version: int = CURRENT_KEY_VERSION) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"The data key must be {KEY_BYTES} bytes.")
        self._keys = {key_version: AESGCM(key)}
        self._current = key_version
        # A separate subkey for digests: the encryption key is never used for two purposes.
        self._digest_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"confidant messaging body digest v1"
        ).derive(key)

    def seal(self, body: str, aad: bytes) -> SealedBody:
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = self._keys[self._current].encrypt(nonce, body.encode("utf-8"), aad)
        return SealedBody(ciphertext=ciphertext, nonce=nonce, key_version=self._current)

    def open(self, sealed: SealedBody, aad: bytes) -> str:
        aead = self._keys.get(sealed.key_version)
        if aead is None:
            raise DecryptionError(f"No data key of version {sealed.key_version}.")
        try:
            return aead.decrypt(sealed.nonce, sealed.ciphertext, aad).decode("utf-8")
        except InvalidTag:
            raise DecryptionError("The message body did not authenticate.") from None

    def digest(self, body: str) -> bytes:
        """HMAC-SHA256 of the body: equal bodies give equal digests, without revealing them."""
        return hmac.new(self._digest_key, body.encode("utf-8"), hashlib.sha256).digest()
