"""Messaging settings: message length limits, where the keys come from (AWS KMS
or the key file), the outbox relay's and the live stream's pace, and where auth
and notify are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.aws import AwsSettings
from services.common.config import (
    DEFAULT_PORTS,
    PREFIX,
    CommonConfig,
    ConfigError,
    Env,
    refuse_development_keys,
    service_target,
)

DATA_KEY_FILE_NAME = "messaging-data.key"


@dataclass(frozen=True)
class MessagingConfig:
    common: CommonConfig
    # The 32-byte key file (base64). Without a KMS key (development only) it wraps the practices'
    # data keys; it also opens messages sealed with it directly before per-practice keys (version 0).
    data_key_file: Path
    auth_target: str
    notify_target: str
    # The AWS KMS key (id, ARN or alias) that wraps the practices' data keys in production.
    kms_key_id: str | None = None
    aws_region: str = "us-east-1"
    # Another AWS endpoint (a test's moto server); None for AWS itself.
    aws_endpoint_url: str | None = None
    # How soon a data key rotated by another replica is used for new messages here.
    data_key_cache_seconds: float = 30.0
    # PRODUCT.md: clients may write 1,000 characters, staff 5,000.
    client_max_chars: int = 1000
    staff_max_chars: int = 5000
    # The relay wakes on NOTIFY; this poll is its safety net (and its retry pace).
    outbox_poll_seconds: float = 1.0
    outbox_batch_size: int = 50
    # Longest wait before a failed relay is retried (the wait doubles from the poll interval).
    outbox_max_backoff_seconds: float = 60.0
    # Live streams wake on NOTIFY; this poll is their safety net.
    stream_poll_seconds: float = 2.0
    # The deadline of each call to auth and notify.
    call_deadline_seconds: float = 5.0
    db_pool_size: int = 10

    @classmethod
    def load(cls, env: Env) -> MessagingConfig:
        common = CommonConfig.load("messaging", env, DEFAULT_PORTS["messaging"])

        positive_int, positive_float = env.positive_int, env.positive_float

        # The key file's *path* (the file itself is read, or created in development, at start-up).
        explicit_key_file = env.optional("MESSAGING_DATA_KEY_FILE") is not None
        data_key_file = env.path("MESSAGING_DATA_KEY_FILE", str(common.keys_dir / DATA_KEY_FILE_NAME))
        kms_key_id = env.optional("MESSAGING_KMS_KEY_ID")
        if not common.development:
            if not kms_key_id:
                raise ConfigError(
                    f"Production mode needs {PREFIX}MESSAGING_KMS_KEY_ID (the AWS KMS key that wraps each "
                    "practice's message data keys); a key file is for development only."
                )
            if explicit_key_file and not data_key_file.is_file():
                raise ConfigError(
                    f"The message data key {data_key_file} ({PREFIX}MESSAGING_DATA_KEY_FILE) does not exist."
                )
            # A key file beside KMS still opens what it sealed before KMS; never a generated one.
            refuse_development_keys(env, common.keys_dir, data_key_file)
        aws = AwsSettings.load(env)
        return cls(
            common=common,
            data_key_file=data_key_file,
            auth_target=service_target(env, "auth"),
            notify_target=service_target(env, "notify"),
            kms_key_id=kms_key_id,
            aws_region=aws.region,
            aws_endpoint_url=aws.endpoint_url,
            data_key_cache_seconds=positive_float("MESSAGING_DATA_KEY_CACHE_SECONDS", 30.0),
            client_max_chars=positive_int("MESSAGING_CLIENT_MAX_CHARS", 1000),
            staff_max_chars=positive_int("MESSAGING_STAFF_MAX_CHARS", 5000),
            outbox_poll_seconds=positive_float("MESSAGING_OUTBOX_POLL_SECONDS", 1.0),
            outbox_batch_size=positive_int("MESSAGING_OUTBOX_BATCH_SIZE", 50),
            outbox_max_backoff_seconds=positive_float("MESSAGING_OUTBOX_MAX_BACKOFF_SECONDS", 60.0),
            stream_poll_seconds=positive_float("MESSAGING_STREAM_POLL_SECONDS", 2.0),
            call_deadline_seconds=positive_float("MESSAGING_CALL_DEADLINE_SECONDS", 5.0),
            db_pool_size=positive_int("MESSAGING_DB_POOL_SIZE", 10),
        )
