"""Encryption at rest and the configuration that guards it."""

from __future__ import annotations

import base64
import re
import stat

import pytest

from services.common.config import ConfigError, Env
from services.messaging.config import MessagingConfig
from services.messaging.crypto import (
    DataKey,
    DataKeyError,
    DecryptionError,
    SealedBody,
    associated_data,
    body_digest,
    load_data_key,
)
from tests.runtime.production import production_env
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
    key = DataKey(b"k" * 32, 3)
    aad = associated_data("practice-1", "conversation-1", "message-1")
    sealed = key.seal("See you Thursday.", aad)
    assert len(sealed.nonce) == 12 and sealed.key_version == 3
    assert b"Thursday" not in sealed.ciphertext
    assert key.open(sealed, aad) == "See you Thursday."
    # Equal bodies give different ciphertexts (fresh nonces).
    assert key.seal("See you Thursday.", aad).ciphertext != sealed.ciphertext
    # Moved to another message, conversation or practice: it no longer opens.
    for other in (
        associated_data("practice-1", "conversation-1", "message-2"),
        associated_data("practice-1", "conversation-2", "message-1"),
        associated_data("practice-2", "conversation-1", "message-1"),
    ):
        with pytest.raises(DecryptionError):
            key.open(sealed, other)
    # Another key, a flipped bit or another key version: refused too.
    with pytest.raises(DecryptionError):
        DataKey(b"x" * 32, 3).open(sealed, aad)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(DecryptionError):
        key.open(SealedBody(flipped, sealed.nonce, sealed.key_version), aad)
    with pytest.raises(DecryptionError, match="version 2"):
        key.open(SealedBody(sealed.ciphertext, sealed.nonce, 2), aad)


def test_the_digest_is_keyed():
    # A plain SHA-256 of a short body could be guessed from the database; the digest cannot.
    assert body_digest(b"a" * 32, "yes") == body_digest(b"a" * 32, "yes") != body_digest(b"a" * 32, "no")
    assert body_digest(b"a" * 32, "yes") != body_digest(b"b" * 32, "yes")


def test_config_defaults_and_overrides(keys_dir, tmp_path):
    # Only what every deployment must set: the rest are defaults.
    config = MessagingConfig.load(
        Env({"CONFIDANT_KEYS_DIR": str(keys_dir), "CONFIDANT_MESSAGING_DATABASE_URL": "postgresql:///x"})
    )
    assert (config.client_max_chars, config.staff_max_chars) == (1000, 5000)
    assert config.data_key_file == keys_dir / "messaging-data.key"
    assert config.auth_target == "127.0.0.1:50051" and config.notify_target == "127.0.0.1:50054"
    assert (config.kms_key_id, config.aws_region, config.aws_endpoint_url) == (None, "us-east-1", None)
    assert config.data_key_cache_seconds == 30.0
    custom = MessagingConfig.load(
        service_env(
            keys_dir,
            messaging_database_url="postgresql:///x",
            messaging_client_max_chars="500",
            messaging_data_key_file=str(tmp_path / "k"),
            auth_addr="auth:50051",
            messaging_kms_key_id="alias/confidant-messaging",
            aws_region="eu-west-1",
            aws_endpoint_url="http://127.0.0.1:4566",
        )
    )
    assert (custom.kms_key_id, custom.aws_region) == ("alias/confidant-messaging", "eu-west-1")
    assert custom.aws_endpoint_url == "http://127.0.0.1:4566"
    assert custom.client_max_chars == 500
    assert custom.data_key_file == tmp_path / "k"
    assert custom.auth_target == "auth:50051"
    with pytest.raises(ConfigError, match="MESSAGING_STAFF_MAX_CHARS"):
        MessagingConfig.load(
            service_env(keys_dir, messaging_database_url="postgresql:///x", messaging_staff_max_chars="0")
        )


def _production(tmp_path, **settings: str) -> Env:
    return production_env(tmp_path, messaging_database_url="postgresql:///x", **settings)


NEEDS_KMS = (
    "Production mode needs CONFIDANT_MESSAGING_KMS_KEY_ID (the AWS KMS key that wraps each practice's "
    "message data keys); a key file is for development only."
)


def test_production_refuses_to_start_without_kms_or_the_key_file(tmp_path):
    absent = str(tmp_path / "absent.key")
    with pytest.raises(ConfigError, match=re.escape(NEEDS_KMS)):
        MessagingConfig.load(_production(tmp_path, messaging_data_key_file=absent))
    with pytest.raises(ConfigError, match=re.escape(NEEDS_KMS)):
        MessagingConfig.load(_production(tmp_path))  # the default path, absent too
    # A key file named explicitly must exist, even beside KMS.
    with pytest.raises(ConfigError, match=r"absent.key \(CONFIDANT_MESSAGING_DATA_KEY_FILE\) does not exist"):
        MessagingConfig.load(_production(tmp_path, messaging_data_key_file=absent, messaging_kms_key_id="k"))
    assert not (tmp_path / "absent.key").exists()


def test_production_starts_with_kms_alone_and_refuses_the_key_file_alone(tmp_path):
    kms = MessagingConfig.load(_production(tmp_path, messaging_kms_key_id="alias/confidant"))
    assert kms.kms_key_id == "alias/confidant" and not kms.data_key_file.exists()
    key_file = tmp_path / "mounted.key"
    key_file.write_text(base64.b64encode(b"k" * 32).decode())
    # By design a mounted key file no longer stands in for KMS in production...
    with pytest.raises(ConfigError, match=re.escape(NEEDS_KMS)):
        MessagingConfig.load(_production(tmp_path, messaging_data_key_file=str(key_file)))
    # ...but beside KMS it is kept, to open what it sealed before KMS.
    both = MessagingConfig.load(
        _production(tmp_path, messaging_data_key_file=str(key_file), messaging_kms_key_id="alias/confidant"))
    assert both.kms_key_id == "alias/confidant" and both.data_key_file == key_file
