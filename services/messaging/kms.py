"""The production key-encryption key: AWS KMS, through boto3.

KMS generates each data key and returns it both in the clear (kept only in
memory) and wrapped by the KMS key (stored). The encryption context names the
practice and the key version, so a wrapped key moved to another practice or
version is refused by KMS itself, and every use appears in CloudTrail with
them. boto3 is synchronous: its calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging

from botocore.exceptions import BotoCoreError, ClientError

from services.common import aws
from services.common.errors import Unavailable
from services.messaging.crypto import DecryptionError

log = logging.getLogger("confidant.messaging")

PREFIX = "kms:"
# KMS answers that mean "this wrapped key is not what it claims to be", not "try later".
_REFUSED = {"InvalidCiphertextException", "IncorrectKeyException"}


def kms_client(region: str, endpoint_url: str | None = None, timeout_seconds: float = 5.0):
    """A KMS client with bounded timeouts; credentials come from the standard AWS chain."""
    return aws.client("kms", aws.AwsSettings(region, endpoint_url), timeout_seconds)


def _context(practice_id: str, version: int) -> dict[str, str]:
    return {"practice_id": practice_id, "version": str(version)}


class KmsKeyEncryptionKey:
    """Wraps data keys with one KMS key; unwraps any key KMS wrapped (its ARN is stored)."""

    def __init__(self, client, key_id: str) -> None:
        self._client = client
        self._key_id = key_id

    def handles(self, kek: str) -> bool:
        return kek.startswith(PREFIX)

    async def new_data_key(self, practice_id: str, version: int) -> tuple[bytes, bytes, str]:
        """(the key in the clear, the key wrapped, the name of what wrapped it)."""
        reply = await self._call(
            "GenerateDataKey",
            self._client.generate_data_key,
            KeyId=self._key_id,
            KeySpec="AES_256",
            EncryptionContext=_context(practice_id, version),
        )
        return reply["Plaintext"], reply["CiphertextBlob"], PREFIX + reply["KeyId"]

    async def unwrap(self, wrapped: bytes, kek: str, practice_id: str, version: int) -> bytes:
        reply = await self._call(
            "Decrypt",
            self._client.decrypt,
            CiphertextBlob=wrapped,
            KeyId=kek.removeprefix(PREFIX),
            EncryptionContext=_context(practice_id, version),
        )
        return reply["Plaintext"]

    async def _call(self, operation: str, method, **params) -> dict:
        try:
            return await asyncio.to_thread(method, **params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            log.error("kms call failed", extra={"fields": {"operation": operation, "code": code}})
            if code in _REFUSED:
                raise DecryptionError(f"KMS refused the wrapped data key ({code}).") from None
            raise Unavailable("The message keys cannot be reached right now; please try again.") from None
        except BotoCoreError as exc:
            log.error("kms unreachable", extra={"fields": {"operation": operation, "error": type(exc).__name__}})
            raise Unavailable("The message keys cannot be reached right now; please try again.") from None
