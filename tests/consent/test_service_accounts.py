"""A practice's service account reaches consent's gRPC API within its scopes
(real auth creates the account and issues its token; real consent checks it)."""

from __future__ import annotations

import grpc
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.consent.v1 import consent_service_pb2 as pb

from tests.consent.harness import ConsentStack, Practice, new_phone, rpc_error


async def _account(stack: ConsentStack, practice: Practice, scopes: list[str]) -> tuple[str, tuple]:
    """(service account id, its token's metadata) for a new account of ``practice``."""
    people = stack.people
    created = await people.auth.CreateServiceAccount(
        auth_pb.CreateServiceAccountRequest(display_name="Practice EHR", scopes=scopes),
        metadata=people.as_user(practice.owner),
        timeout=5,
    )
    issued = await people.auth.IssueServiceAccountToken(
        auth_pb.IssueServiceAccountTokenRequest(
            client_id=created.account.client_id, client_secret=created.client_secret
        ),
        timeout=5,
    )
    return created.account.service_account_id, people.tokens.metadata(issued.access_token)


def _set(stack: ConsentStack, client_id: str, number: str, text_ok: bool, metadata):
    return stack.consent.SetClientPhone(
        pb.SetClientPhoneRequest(client_id=client_id, phone_number=number, text_ok=text_ok),
        metadata=metadata,
        timeout=5,
    )


def _get(stack: ConsentStack, client_id: str, metadata):
    return stack.consent.GetClientPhone(pb.GetClientPhoneRequest(client_id=client_id), metadata=metadata, timeout=5)


def _ledger(stack: ConsentStack, client_id: str, metadata):
    return stack.consent.ListLedger(pb.ListLedgerRequest(client_id=client_id), metadata=metadata, timeout=5)


async def test_a_writing_account_sets_a_phone_recorded_as_itself_from_the_api(stack: ConsentStack):
    practice = await stack.people.practice()
    client = await stack.people.user(practice)
    account_id, writer = await _account(stack, practice, ["consent.write"])
    typed, e164 = new_phone()

    saved = (await _set(stack, client.user_id, typed, True, writer)).phone
    assert (saved.phone_number, saved.text_ok, saved.state) == (e164, True, pb.CONSENT_STATE_OPTED_IN)

    # Staff see it, and the ledger names the account and the API as its source.
    entries = await stack.ledger(practice.owner, client)
    assert [(e.event, e.actor, e.source) for e in entries] == [
        ("number_added", account_id, "api"),
        ("text_ok_checked", account_id, "api"),
    ]
    assert (await stack.sms_allowed(client)).allowed
    audited = await stack.sql(
        "SELECT action, outcome, practice_id::text FROM audit_events WHERE actor = %s", (account_id,)
    )
    assert audited == [("consent.client_info_saved", "ok", practice.practice.practice_id)]

    # Writing does not grant reading.
    for call in (_get(stack, client.user_id, writer), _ledger(stack, client.user_id, writer)):
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err


async def test_a_reading_account_reads_its_practice_and_nothing_more(stack: ConsentStack):
    practice = await stack.people.practice()
    client = await stack.people.user(practice)
    typed, e164 = new_phone()
    await stack.set_phone(practice.owner, client, typed, text_ok=True)
    account_id, reader = await _account(stack, practice, ["consent.read"])

    phone = (await _get(stack, client.user_id, reader)).phone
    assert (phone.phone_number, phone.state) == (e164, pb.CONSENT_STATE_OPTED_IN)
    entries = (await _ledger(stack, client.user_id, reader)).entries
    assert [e.source for e in entries] == ["client_info", "client_info"]
    audited = await stack.sql("SELECT action FROM audit_events WHERE actor = %s ORDER BY event_id", (account_id,))
    assert audited == [("consent.phone_read",), ("consent.ledger_read",)]

    # Outside its scope, and the calls reserved for our own services.
    err = await rpc_error(_set(stack, client.user_id, "", False, reader))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(
        stack.consent.CheckSmsAllowed(pb.CheckSmsAllowedRequest(client_id=client.user_id), metadata=reader, timeout=5)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(
        stack.consent.ReceiveInboundSms(
            pb.ReceiveInboundSmsRequest(from_number=typed, body="STOP", provider_message_id="sa-1"),
            metadata=reader,
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await stack.get_phone(practice.owner, client)).state == pb.CONSENT_STATE_OPTED_IN


async def test_an_account_without_a_consent_scope_is_refused(stack: ConsentStack):
    practice = await stack.people.practice()
    client = await stack.people.user(practice)
    _, sender = await _account(stack, practice, ["messaging.send"])
    typed, _ = new_phone()
    for call in (
        _get(stack, client.user_id, sender),
        _ledger(stack, client.user_id, sender),
        _set(stack, client.user_id, typed, True, sender),
    ):
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
        assert "scope" in err.details()


async def test_another_practices_clients_do_not_exist_for_an_account(stack: ConsentStack):
    practice = await stack.people.practice()
    elsewhere = await stack.people.practice("Hillside Therapy")
    their_client = await stack.people.user(elsewhere)
    _, account = await _account(stack, practice, ["consent.read", "consent.write"])
    typed, _ = new_phone()
    for call in (
        _get(stack, their_client.user_id, account),
        _ledger(stack, their_client.user_id, account),
        _set(stack, their_client.user_id, typed, True, account),
        # Nor is a member of staff of its own practice a client.
        _get(stack, practice.owner.user_id, account),
    ):
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
    assert (await stack.get_phone(elsewhere.owner, their_client)).state == pb.CONSENT_STATE_NO_NUMBER
    # A missing client id is a bad request.
    err = await rpc_error(_get(stack, "", account))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
