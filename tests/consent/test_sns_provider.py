"""The re-enable path against the SMS provider's opt-out list: Amazon SNS, served by moto.

moto's SNS says every number ending in "99" is opted out (CheckIfPhoneNumberIsOptedOut)
and OptInPhoneNumber succeeds; a real moto server answers over HTTP, exactly as AWS
would. The calls consent makes are watched with botocore's own event hooks on the
provider's client (nothing is stubbed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging

import boto3
import pytest
import requests
from confidant.consent.v1 import consent_service_pb2 as pb
from confidant.consent.v1 import consent_service_pb2_grpc as pb_grpc

from services.common import aws
from services.common.config import ConfigError
from services.consent import replies
from services.consent.app import sms_provider
from services.consent.config import ConsentConfig
from services.consent.provider import SnsProvider
from tests.aws import REGION, moto_server
from tests.aws import client as aws_client
from tests.consent.harness import ConsentStack, consent_service, new_phone
from tests.support import channel, service_env

_blocked_numbers = itertools.count(10)


def number_the_provider_blocks() -> tuple[str, str]:
    """A fresh number moto lists as opted out (it ends in 99), as typed and in E.164."""
    n = next(_blocked_numbers)
    return f"(646) 555-{n:02d}99", f"+1646555{n:02d}99"


@dataclasses.dataclass
class Sns:
    stack: ConsentStack
    # (operation, phone number) of every SNS call consent made, in order.
    calls: list[tuple[str, str]]


def watched(provider_client) -> tuple[SnsProvider, list[tuple[str, str]]]:
    calls: list[tuple[str, str]] = []
    provider_client.meta.events.register(
        "before-parameter-build.sns.*",
        lambda params, model, **_: calls.append((model.name, params.get("phoneNumber", ""))),
    )
    return SnsProvider(provider_client), calls


@contextlib.asynccontextmanager
async def sns_consent(stack: ConsentStack, fresh_database, keys_dir, auth_address, endpoint, provider=None):
    """A consent service configured for SNS at ``endpoint`` (``provider`` replaces the one it would build)."""
    async with (
        consent_service(fresh_database, keys_dir, auth_address, provider=provider,
                        consent_sms_provider="sns", aws_endpoint_url=endpoint) as (address, url),
        channel(address) as ch,
    ):
        yield dataclasses.replace(stack, consent=pb_grpc.ConsentServiceStub(ch), consent_url=url)


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
async def sns(stack, fresh_database, keys_dir, auth_address, endpoint):
    provider, calls = watched(aws.client("sns", aws.AwsSettings(REGION, endpoint)))
    async with sns_consent(stack, fresh_database, keys_dir, auth_address, endpoint, provider) as own:
        yield Sns(own, calls)


async def _audited_checks(stack: ConsentStack, client_id: str) -> list[str | None]:
    rows = await stack.sql(
        "SELECT detail->>'provider_check' FROM audit_events WHERE target = %s AND action = 'consent.client_info_saved'"
        " ORDER BY event_id",
        (client_id,),
    )
    return [check for (check,) in rows]


async def test_re_adding_a_number_the_provider_blocks_opts_it_in_once_then_shows_the_block(sns: Sns):
    stack, calls = sns.stack, sns.calls
    practice = await stack.people.practice()
    owner, client = practice.owner, await stack.people.user(practice)
    typed, e164 = number_the_provider_blocks()

    # Added with "Text message ok": SNS lists it as opted out, so consent asks SNS to opt it in.
    calls.clear()
    saved = await stack.set_phone(owner, client, typed, True)
    assert (saved.state, saved.text_ok) == (pb.CONSENT_STATE_OPTED_IN, True)
    assert calls == [("CheckIfPhoneNumberIsOptedOut", e164), ("OptInPhoneNumber", e164)]
    entries = await stack.ledger(owner, client)
    assert [(e.event, e.actor, e.source, e.provider) for e in entries] == [
        ("number_added", owner.user_id, "client_info", ""),
        ("text_ok_checked", owner.user_id, "client_info", ""),
        ("provider_opt_in_requested", owner.user_id, "client_info", "sns"),
    ]
    assert (await stack.sms_allowed(client)).allowed

    # The client replies STOP; the clinician deletes the number and re-adds it within 30 days.
    assert (await stack.inbound(e164, "STOP", provider="sns")).action == pb.INBOUND_ACTION_OPTED_OUT
    assert (await stack.set_phone(owner, client, "", False)).state == pb.CONSENT_STATE_NO_NUMBER
    calls.clear()
    re_added = await stack.set_phone(owner, client, typed, True)
    # AWS allows one opt-in per 30 days: not asked again; the clinician sees the carrier's block.
    assert calls == [("CheckIfPhoneNumberIsOptedOut", e164)]
    assert (re_added.state, re_added.text_ok, re_added.phone_number) == (pb.CONSENT_STATE_CARRIER_BLOCKED, False, e164)
    block = (await stack.ledger(owner, client))[-1]
    assert (block.event, block.actor, block.source, block.provider, block.phone_number) == (
        "provider_block_seen", "service:consent", "provider", "sns", e164)
    shown = await stack.get_phone(owner, client)
    assert (shown.state, shown.state_since) == (pb.CONSENT_STATE_CARRIER_BLOCKED, block.created_at)
    refused = await stack.sms_allowed(client)
    assert (refused.allowed, refused.phone_number, refused.state) == (False, "", pb.CONSENT_STATE_CARRIER_BLOCKED)

    # "Text message ok" shows unticked: saving it so changes nothing; ticking it again is recorded,
    # and neither lifts the block nor asks SNS again.
    calls.clear()
    assert (await stack.set_phone(owner, client, typed, False)).state == pb.CONSENT_STATE_CARRIER_BLOCKED
    assert (await stack.ledger(owner, client))[-1].event == "provider_block_seen"
    ticked = await stack.set_phone(owner, client, typed, True)
    assert (ticked.state, ticked.text_ok) == (pb.CONSENT_STATE_CARRIER_BLOCKED, False)
    assert (await stack.ledger(owner, client))[-1].event == "text_ok_checked"
    assert calls == []

    # START from the phone: texting is on again, confirmed once.
    start = await stack.inbound(e164, "START", provider="sns")
    confirmation = replies.opted_in(replies.Sender("Lakeside Counseling"))
    assert (start.action, start.reply_text) == (pb.INBOUND_ACTION_OPTED_IN, confirmation)
    assert (await stack.get_phone(owner, client)).state == pb.CONSENT_STATE_OPTED_IN
    assert (await stack.sms_allowed(client)).allowed
    assert await _audited_checks(stack, client.user_id) == [
        "opted_in_again", None, "blocked", None]


async def test_a_number_the_provider_does_not_block_is_only_checked(sns: Sns):
    stack, calls = sns.stack, sns.calls
    practice = await stack.people.practice()
    owner, client = practice.owner, await stack.people.user(practice)
    typed, e164 = new_phone()  # ends in 01..98
    calls.clear()
    assert (await stack.set_phone(owner, client, typed, False)).state == pb.CONSENT_STATE_NOT_GIVEN
    assert calls == []  # no consent given, nothing to ask
    assert (await stack.set_phone(owner, client, typed, True)).state == pb.CONSENT_STATE_OPTED_IN
    assert calls == [("CheckIfPhoneNumberIsOptedOut", e164)]
    assert [e.event for e in await stack.ledger(owner, client)] == ["number_added", "text_ok_checked"]
    assert await _audited_checks(stack, client.user_id) == [None, "clear"]


async def test_the_thirty_days_count_per_number_across_clients_and_then_end(sns: Sns):
    stack, calls = sns.stack, sns.calls
    practice = await stack.people.practice("Hillside Therapy")
    owner = practice.owner
    recent_typed, recent = number_the_provider_blocks()
    old_typed, old = number_the_provider_blocks()
    # Another client's history (another practice's, even): opt-ins requested 29 and 31 days ago.
    for phone, days in ((recent, 29), (old, 31)):
        await stack.sql(
            "INSERT INTO consent_ledger (client_id, practice_id, event, actor, source, phone_e164, provider,"
            " created_at) VALUES ('another-client', 'another-practice', 'provider_opt_in_requested', 'someone',"
            " 'client_info', %s, 'sns', now() - make_interval(days => %s))",
            (phone, days),
        )
    first, second = await stack.people.user(practice), await stack.people.user(practice)
    calls.clear()
    assert (await stack.set_phone(owner, first, recent_typed, True)).state == pb.CONSENT_STATE_CARRIER_BLOCKED
    assert calls == [("CheckIfPhoneNumberIsOptedOut", recent)]
    calls.clear()
    assert (await stack.set_phone(owner, second, old_typed, True)).state == pb.CONSENT_STATE_OPTED_IN
    assert calls == [("CheckIfPhoneNumberIsOptedOut", old), ("OptInPhoneNumber", old)]


async def test_two_clients_saving_one_number_at_once_spend_one_opt_in(sns: Sns):
    stack, calls = sns.stack, sns.calls
    practice = await stack.people.practice()
    parent, child = await stack.people.user(practice), await stack.people.user(practice)
    typed, e164 = number_the_provider_blocks()
    calls.clear()
    saved = await asyncio.gather(*(stack.set_phone(practice.owner, c, typed, True) for c in (parent, child)))
    # The second asks after the first one's opt-in; moto still lists the number, and the request is spent.
    assert sorted(p.state for p in saved) == [pb.CONSENT_STATE_OPTED_IN, pb.CONSENT_STATE_CARRIER_BLOCKED]
    assert calls == [("CheckIfPhoneNumberIsOptedOut", e164), ("OptInPhoneNumber", e164),
                     ("CheckIfPhoneNumberIsOptedOut", e164)]


async def test_an_unreachable_provider_keeps_our_consent_and_records_nothing_about_it(
    stack, fresh_database, keys_dir, auth_address
):
    # Nothing listens on port 9: every call fails to connect.
    nowhere = "http://127.0.0.1:9"
    provider, calls = watched(aws.client("sns", aws.AwsSettings(REGION, nowhere), timeout_seconds=1, max_attempts=1))
    async with sns_consent(stack, fresh_database, keys_dir, auth_address, nowhere, provider) as own:
        practice = await own.people.practice()
        owner, client = practice.owner, await own.people.user(practice)
        typed, e164 = number_the_provider_blocks()
        saved = await own.set_phone(owner, client, typed, True)
        assert saved.state == pb.CONSENT_STATE_OPTED_IN
        assert calls == [("CheckIfPhoneNumberIsOptedOut", e164)]
        assert [e.event for e in await own.ledger(owner, client)] == ["number_added", "text_ok_checked"]
        assert await _audited_checks(own, client.user_id) == ["not_done"]


@contextlib.contextmanager
def iam_enforced(endpoint: str):
    """moto checks every request's signature and IAM policy while the block runs."""
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    try:
        yield
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=5).raise_for_status()


async def test_a_refused_opt_in_shows_the_carrier_block_to_the_clinician(
    stack, fresh_database, keys_dir, auth_address, endpoint, caplog
):
    # Credentials that may check the opt-out list but not opt a number in: moto, enforcing
    # IAM, refuses OptInPhoneNumber (AccessDenied), as AWS refuses an opt-in within 30 days
    # of the last one.
    iam = aws_client("iam", endpoint)
    user = iam.create_user(UserName="consent-check-only")["User"]["UserName"]
    iam.put_user_policy(UserName=user, PolicyName="check-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sns:CheckIfPhoneNumberIsOptedOut", "Resource": "*"}],
    }))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    restricted = boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name=REGION
    ).client("sns", endpoint_url=endpoint)
    provider, calls = watched(restricted)
    async with sns_consent(stack, fresh_database, keys_dir, auth_address, endpoint, provider) as own:
        practice = await own.people.practice()
        owner, client = practice.owner, await own.people.user(practice)
        typed, e164 = number_the_provider_blocks()
        with iam_enforced(endpoint), caplog.at_level(logging.INFO, logger="confidant.consent"):
            saved = await own.set_phone(owner, client, typed, True)
        assert calls == [("CheckIfPhoneNumberIsOptedOut", e164), ("OptInPhoneNumber", e164)]
        refusals = [r.fields for r in caplog.records if r.getMessage() == "sms provider refused the opt-in"]
        assert refusals == [{"client_id": client.user_id, "provider": "sns", "code": "AccessDenied"}]
        # Ids only: the number is in no log line.
        assert all(e164 not in r.getMessage() + json.dumps(getattr(r, "fields", {})) for r in caplog.records)
        assert saved.state == pb.CONSENT_STATE_CARRIER_BLOCKED
        assert [e.event for e in await own.ledger(owner, client)] == [
            "number_added", "text_ok_checked", "provider_block_seen"]
        assert not (await own.sms_allowed(client)).allowed
        assert await _audited_checks(own, client.user_id) == ["blocked"]
        # START from the phone is what lifts it.
        assert (await own.inbound(e164, "start", provider="sns")).action == pb.INBOUND_ACTION_OPTED_IN
        assert (await own.get_phone(owner, client)).state == pb.CONSENT_STATE_OPTED_IN


async def test_the_configured_provider_is_sns_at_the_configured_endpoint(
    stack, fresh_database, keys_dir, auth_address, endpoint
):
    config = ConsentConfig.load(service_env(
        keys_dir, consent_database_url="postgresql:///x", consent_sms_provider="SNS", aws_endpoint_url=endpoint))
    built = sms_provider(config)
    assert isinstance(built, SnsProvider) and config.aws == aws.AwsSettings(REGION, endpoint)
    assert await built.is_opted_out("+12125550199") is True
    assert await built.is_opted_out("+12125550101") is False
    assert sms_provider(ConsentConfig.load(service_env(keys_dir, consent_database_url="postgresql:///x"))) is None
    with pytest.raises(ConfigError, match="CONSENT_SMS_PROVIDER must be one of none, sns"):
        ConsentConfig.load(service_env(keys_dir, consent_database_url="postgresql:///x", consent_sms_provider="pinpoint"))

    # And a service built from that configuration alone asks SNS.
    async with sns_consent(stack, fresh_database, keys_dir, auth_address, endpoint) as own:
        practice = await own.people.practice()
        owner, client = practice.owner, await own.people.user(practice)
        typed, _ = number_the_provider_blocks()
        assert (await own.set_phone(owner, client, typed, True)).state == pb.CONSENT_STATE_OPTED_IN
        assert (await own.ledger(owner, client))[-1].event == "provider_opt_in_requested"

