"""Encryption at rest and the configuration that guards it."""

from __future__ import annotations

import base64
import stat

import pytest

from services.common.config import ConfigError, Env
from services.messaging.config import MessagingConfig
from services.messaging.crypto import (
    DataKeyError,
    DecryptionError,
    MessageCipher,
    SealedBody,
    associated_data,
    load_data_key,
)
from tests.support import service_env


def test_development_creates_a_private_key_once(tmp_path):
    path = tmp_path / "keys" / "messaging-data.key"
    key = load_data_key(path, create_if_missing=True)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text().strip()) == key
    assert load_data_key(path, create_if_missing=True) == key  # never replaced


def test_a_missing_or_malformed_key_is_a_start_up_error(tmp_path):
    with pytest.raises(DataKeyError, match="does not exist"):
        load_data_key(tmp_path / "absent.key", create_if_missing=False)
    bad = tmp_path / "bad.key"
    bad.write_text("not base64!")
    with pytest.raises(DataKeyError, match="not base64"):
        load_data_key(bad, create_if_missing=False)
    bad.write_text(base64.b64encode(b"short").decode())
    with pytest.raises(DataKeyError, match="32 bytes"):
        load_data_key(bad, create_if_missing=False)


def test_seal_and_open_bind_the_body_to_its_row():
    cipher = MessageCipher(b"k" * 32)
    aad = associated_data("practice-1", "conversation-1", "message-1")
    sealed = cipher.seal("See you Thursday.", aad)
    assert len(sealed.nonce) == 12 and sealed.key_version == 1
    assert b"Thursday" not in sealed.ciphertext
    assert cipher.open(sealed, aad) == "See you Thursday."
    # Equal bodies give different ciphertexts (fresh nonces) but equal digests.
    again = cipher.seal("See you Thursday.", aad)
    assert again.ciphertext != sealed.ciphertext
    assert (
        cipher.digest("See you Thursday.")
        == cipher.digest("See you Thursday.")
        != cipher.digest("See you Friday.")
    )
    # Moved to another message, conversation or practice: it no longer opens.
    for other in (
        associated_data("practice-1", "conversation-1", "message-2"),
        associated_data("practice-1", "conversation-2", "message-1"),
        associated_data("practice-2", "conversation-1", "message-1"),
    ):
        with pytest.raises(DecryptionError):
            cipher.open(sealed, other)
    # Another key, a flipped bit or an unknown key version: refused too.
    with pytest.raises(DecryptionError):
        MessageCipher(b"x" * 32).open(sealed, aad)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(DecryptionError):
        cipher.open(SealedBody(flipped, sealed.nonce, sealed.key_version), aad)
    with pytest.raises(DecryptionError):
        cipher.open(SealedBody(sealed.ciphertext, sealed.nonce, 2), aad)


def test_the_digest_is_keyed():
    # A plain SHA-256 of a short body could be guessed from the database; the digest cannot.
    assert MessageCipher(b"a" * 32).digest("yes") != MessageCipher(b"b" * 32).digest("yes")


def test_config_defaults_and_overrides(keys_dir, tmp_path):
    config = MessagingConfig.load(service_env(keys_dir, messaging_database_url="postgresql:///x"))
    assert (config.client_max_chars, config.staff_max_chars) == (1000, 5000)
    assert config.data_key_file == keys_dir / "messaging-data.key"
    assert config.auth_target == "127.0.0.1:50051" and config.notify_target == "127.0.0.1:50054"
    custom = MessagingConfig.load(
        service_env(
            keys_dir,
            messaging_database_url="postgresql:///x",
            messaging_client_max_chars="500",
            messaging_data_key_file=str(tmp_path / "k"),
            auth_addr="auth:50051",
        )
    )
    assert custom.client_max_chars == 500
    assert custom.data_key_file == tmp_path / "k"
    assert custom.auth_target == "auth:50051"
    with pytest.raises(ConfigError, match="MESSAGING_STAFF_MAX_CHARS"):
        MessagingConfig.load(
            service_env(keys_dir, messaging_database_url="postgresql:///x", messaging_staff_max_chars="0")
        )


def test_production_refuses_to_start_without_the_data_key(tmp_path):
    env = Env(
        {
            "CONFIDANT_MODE": "production",
            "CONFIDANT_KEYS_DIR": str(tmp_path),
            "CONFIDANT_MESSAGING_DATA_KEY_FILE": str(tmp_path / "absent.key"),
            "CONFIDANT_MESSAGING_DATABASE_URL": "postgresql:///x",
        }
    )
    with pytest.raises(ConfigError, match="does not exist"):
        MessagingConfig.load(env)
    assert not (tmp_path / "absent.key").exists()
