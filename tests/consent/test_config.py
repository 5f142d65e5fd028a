"""Consent's settings: the SMS provider, AWS, the HELP contact; bad values stop start-up plainly."""

from __future__ import annotations

import dataclasses

import pytest
from confidant.consent.v1 import consent_service_pb2 as pb
from confidant.consent.v1 import consent_service_pb2_grpc as pb_grpc

from services.common.aws import AwsSettings
from services.common.config import ConfigError, Env
from services.consent.config import ConsentConfig
from tests.consent.harness import consent_service, new_phone
from tests.support import channel

BASE = {"CONFIDANT_CONSENT_DATABASE_URL": "postgresql:///x"}


def load(**values: str) -> ConsentConfig:
    return ConsentConfig.load(Env({**BASE, **{f"CONFIDANT_{k.upper()}": v for k, v in values.items()}}))


def test_defaults_ask_no_provider_and_name_the_practice_as_the_contact():
    config = load()
    assert (config.sms_provider, config.help_contact, config.default_region) == ("none", "your practice", "US")
    assert config.aws == AwsSettings("us-east-1", None)
    assert config.provider_timeout_seconds == 5.0


def test_custom_values():
    config = load(consent_sms_provider="sns", consent_help_contact="(212) 555-0100", aws_region="eu-west-1",
                  aws_endpoint_url="http://127.0.0.1:4566", consent_provider_timeout_seconds="2.5")
    assert (config.sms_provider, config.help_contact) == ("sns", "(212) 555-0100")
    assert config.aws == AwsSettings("eu-west-1", "http://127.0.0.1:4566")
    assert config.provider_timeout_seconds == 2.5


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"consent_sms_provider": "twilio"}, "CONFIDANT_CONSENT_SMS_PROVIDER must be one of none, sns, not 'twilio'."),
        ({"consent_help_contact": "x" * 101}, "CONFIDANT_CONSENT_HELP_CONTACT must be 1 to 100 characters"),
        ({"aws_region": "Ohio"}, "CONFIDANT_AWS_REGION must be an AWS region such as us-east-1, not 'Ohio'."),
        ({"aws_endpoint_url": "127.0.0.1:4566"}, "CONFIDANT_AWS_ENDPOINT_URL must start with http:// or https://"),
        ({"consent_provider_timeout_seconds": "0"}, "CONFIDANT_CONSENT_PROVIDER_TIMEOUT_SECONDS must be greater"),
    ],
)
def test_bad_values_are_refused_with_one_sentence(values, message):
    with pytest.raises(ConfigError) as err:
        load(**values)
    assert str(err.value).startswith(message)


async def test_the_help_reply_gives_the_configured_contact(stack, fresh_database, keys_dir, auth_address):
    async with (
        consent_service(fresh_database, keys_dir, auth_address, consent_help_contact="(212) 555-0100") as (address, url),
        channel(address) as ch,
    ):
        own = dataclasses.replace(stack, consent=pb_grpc.ConsentServiceStub(ch), consent_url=url)
        _, e164 = new_phone()
        reply = await own.inbound(e164, "help")
        assert reply.action == pb.INBOUND_ACTION_HELP
        assert reply.reply_text == ("Secure message alerts. For help, contact (212) 555-0100. "
                                    "Reply STOP to unsubscribe. Msg & data rates may apply.")
