"""The AES-256-GCM primitives that keep message bodies encrypted at rest.

Each body is sealed with a fresh 96-bit random nonce. The associated data is
``"{practice_id}|{conversation_id}|{message_id}"``, so a ciphertext copied into
another row (another message, conversation or practice) no longer decrypts.
Previews are derived from a message's body and are sealed with that message's
associated data.

Which key seals what is the keyring's business (``keyring.py``): each practice
has versioned data keys wrapped by a key-encryption key. ``key_version`` 0 is
the legacy development key: the key file itself, which sealed every message
before per-practice keys existed.
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
# Messages sealed directly with the key file, before per-practice data keys.
LEGACY_KEY_VERSION = 0


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
    """Read the base64 key file; in development, create it (mode 0600) if absent."""
    return load_key_file(path, KEY_BYTES, "message data key", create_if_missing, DataKeyError)


def derive_key(key: bytes, purpose: bytes) -> bytes:
    """A subkey for one purpose (HKDF-SHA256): no key is ever used for two."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose).derive(key)


def body_digest(digest_key: bytes, body: str) -> bytes:
    """HMAC-SHA256 of the body: equal bodies give equal digests, without revealing them."""
    return hmac.new(digest_key, body.encode("utf-8"), hashlib.sha256).digest()


class DataKey:
    """One version of a data key: seals and opens bodies."""

    def __init__(self, key: bytes, version: int) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"A data key must be {KEY_BYTES} bytes.")
        self._aead = AESGCM(key)
        self.version = version

    def seal(self, body: str, aad: bytes) -> SealedBody:
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = self._aead.encrypt(nonce, body.encode("utf-8"), aad)
        return SealedBody(ciphertext=ciphertext, nonce=nonce, key_version=self.version)

    def open(self, sealed: SealedBody, aad: bytes) -> str:
        if sealed.key_version != self.version:
            raise DecryptionError(f"The body is sealed with key version {sealed.key_version}, not {self.version}.")
        try:
            return self._aead.decrypt(sealed.nonce, sealed.ciphertext, aad).decode("utf-8")
        except InvalidTag:
            raise DecryptionError("The message body did not authenticate.") from None

