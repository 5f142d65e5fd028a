"""AWS for tests: moto in server mode, in-process, on an ephemeral port.

The code under test talks to it over HTTP exactly as to AWS, through
``CONFIDANT_AWS_ENDPOINT_URL`` (KMS now; SES and SNS later). Credentials are
fake ones in the environment, set only while the server runs, so that boto3's
standard credential chain never reaches for a real account.

A suite uses it as a fixture of its own::

    @pytest.fixture(scope="module")
    def aws():
        with moto_server() as endpoint:
            yield endpoint
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
FAKE_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    # Never ask an instance-metadata endpoint for credentials.
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server for the block; yields its endpoint URL (``http://127.0.0.1:<port>``)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_ENVIRONMENT.items():
            patch.setenv(name, value)
        # Shared files of a developer's real account must not be read either.
        patch.setenv("AWS_CONFIG_FILE", "/dev/null")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        patch.delenv("AWS_PROFILE", raising=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def client(service: str, endpoint: str):
    """A boto3 client of the moto server, for a test to arrange or inspect AWS state."""
    return boto3.session.Session().client(service, region_name=REGION, endpoint_url=endpoint)


def kms_key(endpoint: str, description: str = "confidant test key") -> str:
    """A new symmetric KMS key on the moto server; returns its ARN."""
    return client("kms", endpoint).create_key(Description=description)["KeyMetadata"]["Arn"]
