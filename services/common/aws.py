"""AWS clients for every service, from one place: the region and the endpoint.

``CONFIDANT_AWS_REGION`` (default ``us-east-1``) and ``CONFIDANT_AWS_ENDPOINT_URL``
(unset for AWS itself; a moto server in tests) are read once here, so KMS
(messaging) and SNS (consent, notify) talk to the same place. Credentials come
from the standard AWS chain (environment, mounted files, the instance or pod
role), never from our own settings. boto3 is synchronous: callers run its calls
with ``asyncio.to_thread``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import boto3
from botocore.config import Config

from services.common.config import PREFIX, ConfigError, Env

DEFAULT_REGION = "us-east-1"
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


@dataclass(frozen=True)
class AwsSettings:
    region: str = DEFAULT_REGION
    # Another endpoint (a test's moto server); None for AWS itself.
    endpoint_url: str | None = None

    @classmethod
    def load(cls, env: Env) -> AwsSettings:
        region = env.str("AWS_REGION", DEFAULT_REGION).strip()
        if not _REGION.match(region):
            raise ConfigError(f"{PREFIX}AWS_REGION must be an AWS region such as us-east-1, not {region!r}.")
        endpoint = env.optional("AWS_ENDPOINT_URL")
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"{PREFIX}AWS_ENDPOINT_URL must start with http:// or https://, not {endpoint!r}.")
        return cls(region=region, endpoint_url=endpoint)


def client(service: str, settings: AwsSettings, timeout_seconds: float = 5.0, max_attempts: int = 3):
    """A boto3 client of ``service`` with bounded timeouts and retries (a call never hangs a request)."""
    return boto3.session.Session().client(
        service,
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        config=Config(
            connect_timeout=timeout_seconds,
            read_timeout=timeout_seconds,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        ),
    )
