"""Deactivation ends tokens at once: auth's revocation feed, followed by every verifier.

Real auth and messaging in-process. The owner deactivates a clinician (or deletes a
service account); within a short polled deadline the same, still unexpired token is
refused by messaging (and by auth), while everyone else's tokens keep working.
"""

from __future__ import annotations

import time

import grpc
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as msg_grpc

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from services.common.identity import Principal
from services.common.tokens import Revocation, RevocationBatch, TokenSigner, TokenVerifier
from tests.messaging.harness import MessagingHarness, eventually, messaging_service, rpc_error
from tests.support import channel, running, service_env

REVOKED = "This access has been revoked."
# Auth's advice to verifiers in these tests: look again every 0.2 s (the default is 2 s).
REFRESH = "0.2"


@pytest.fixture(scope="module")
async def auth_address(fresh_database, keys_dir):
    url = await fresh_database("auth")
    env = service_env(keys_dir, auth_database_url=url, revocation_refresh_seconds=REFRESH)
    async with running(await create_auth(AuthConfig.load(env))) as address:
        yield address


@pytest.fixture(scope="module")
async def auth_stub(auth_address):
    async with channel(auth_address) as ch:
        yield auth_grpc.AuthServiceStub(ch)


@pytest.fixture(scope="module")
async def messaging(fresh_database, keys_dir, tokens, auth_address, auth_stub):
    async with messaging_service(fresh_database, keys_dir, auth_address) as (address, url), channel(address) as ch:
        yield MessagingHarness(msg_grpc.MessagingServiceStub(ch), auth_stub, tokens, url)


async def _list_conversations(messaging: MessagingHarness, metadata) -> msg_pb.ListConversationsResponse:
    return await messaging.stub.ListConversations(msg_pb.ListConversationsRequest(), metadata=metadata, timeout=5)


async def _refused(call) -> grpc.aio.AioRpcError | None:
    """The error when ``call`` was refused as revoked; None while it still works."""
    try:
        await call()
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.UNAUTHENTICATED and err.details() == REVOKED:
            return err
        raise
    return None


async def test_a_deactivated_clinicians_token_is_refused_at_once_and_others_keep_working(
    messaging: MessagingHarness,
):
    team = await messaging.team()
    conversation = await messaging.client_conversation(team)
    # Each person's token is minted once, before the deactivation, and valid for 5 minutes.
    clinician = messaging.as_user(team.clinician)
    others = {name: messaging.as_user(getattr(team, name)) for name in ("owner", "team_member", "client")}
    await messaging.send(team.clinician, conversation.conversation_id, "See you Tuesday.", metadata=clinician)
    # Listed from its first message on.
    assert len((await _list_conversations(messaging, clinician)).conversations) == 1

    deactivated = await messaging.auth.DeactivateUser(
        auth_pb.DeactivateUserRequest(user_id=team.clinician.user_id), metadata=others["owner"], timeout=5
    )
    assert deactivated.sessions_ended == 0  # the test's token was minted without a session

    err = await eventually(lambda: _refused(lambda: _list_conversations(messaging, clinician)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    for call in (
        lambda: messaging.send(team.clinician, conversation.conversation_id, "Hello?", metadata=clinician),
        lambda: messaging.stub.ListMessages(
            msg_pb.ListMessagesRequest(conversation_id=conversation.conversation_id), metadata=clinician, timeout=5
        ),
        # Auth itself follows its own database.
        lambda: messaging.auth.ListStaff(auth_pb.ListStaffRequest(), metadata=clinician, timeout=5),
    ):
        assert await eventually(lambda call=call: _refused(call))

    # Everyone else's tokens keep working, in messaging and in auth.
    for metadata in others.values():
        await _list_conversations(messaging, metadata)
    assert [m.body for m in await messaging.messages(team.client, conversation.conversation_id)] == [
        "See you Tuesday."
    ]
    staff = await messaging.auth.ListStaff(auth_pb.ListStaffRequest(), metadata=others["owner"], timeout=5)
    assert {m.user.user_id: m.deactivated for m in staff.staff}[team.clinician.user_id]
    # Another practice's clinician is untouched.
    other = await messaging.team()
    await _list_conversations(messaging, messaging.as_user(other.clinician))


async def _service_account(messaging: MessagingHarness, owner_metadata, name: str) -> tuple[str, str]:
    created = await messaging.auth.CreateServiceAccount(
        auth_pb.CreateServiceAccountRequest(display_name=name, scopes=["messaging.send"]),
        metadata=owner_metadata,
        timeout=5,
    )
    issued = await messaging.auth.IssueServiceAccountToken(
        auth_pb.IssueServiceAccountTokenRequest(
            client_id=created.account.client_id, client_secret=created.client_secret
        ),
        timeout=5,
    )
    return created.account.service_account_id, issued.access_token


async def test_a_deleted_service_accounts_token_is_refused_at_once(messaging: MessagingHarness):
    team = await messaging.team()
    conversation = await messaging.client_conversation(team)
    owner = messaging.as_user(team.owner)
    deleted_id, deleted_token = await _service_account(messaging, owner, "Old EHR")
    _, kept_token = await _service_account(messaging, owner, "New EHR")
    doomed, kept = messaging.tokens.metadata(deleted_token), messaging.tokens.metadata(kept_token)
    await messaging.send(team.owner, conversation.conversation_id, "Reminder: Tuesday 3pm.", metadata=doomed)

    await messaging.auth.DeleteServiceAccount(
        auth_pb.DeleteServiceAccountRequest(service_account_id=deleted_id), metadata=owner, timeout=5
    )

    # Polled with a call that changes nothing (it finds the existing conversation).
    participants = [team.client.user_id, team.clinician.user_id]
    err = await eventually(
        lambda: _refused(
            lambda: messaging.stub.OpenConversation(
                msg_pb.OpenConversationRequest(participant_ids=participants), metadata=doomed, timeout=5
            )
        )
    )
    assert err.details() == REVOKED
    err = await rpc_error(messaging.send(team.owner, conversation.conversation_id, "Still there?", metadata=doomed))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and err.details() == REVOKED
    # The other account of the same practice keeps sending.
    sent = await messaging.send(team.owner, conversation.conversation_id, "Reminder: Friday 10am.", metadata=kept)
    assert sent.created
    bodies = [m.body for m in await messaging.messages(team.client, conversation.conversation_id)]
    assert bodies == ["Reminder: Tuesday 3pm.", "Reminder: Friday 10am."]


async def test_list_revocations_is_for_our_services_and_follows_revisions(
    messaging: MessagingHarness, keys_dir
):
    team = await messaging.team()
    web = messaging.as_service("web")
    before = await messaging.auth.ListRevocations(auth_pb.ListRevocationsRequest(), metadata=web, timeout=5)
    assert before.retention_seconds == 300 + 10 and before.refresh_seconds == pytest.approx(0.2)

    await messaging.auth.DeactivateUser(
        auth_pb.DeactivateUserRequest(user_id=team.team_member.user_id),
        metadata=messaging.as_user(team.owner),
        timeout=5,
    )
    after = await messaging.auth.ListRevocations(
        auth_pb.ListRevocationsRequest(after_revision=before.revision), metadata=web, timeout=5
    )
    assert [r.subject for r in after.revocations] == [team.team_member.user_id]
    assert after.revision == after.revocations[0].revision > before.revision
    assert abs(after.revocations[0].revoked_at.ToSeconds() - time.time()) < 60
    # Deactivating again changes nothing, and asking from the newest revision lists nothing.
    await messaging.auth.DeactivateUser(
        auth_pb.DeactivateUserRequest(user_id=team.team_member.user_id),
        metadata=messaging.as_user(team.owner),
        timeout=5,
    )
    again = await messaging.auth.ListRevocations(
        auth_pb.ListRevocationsRequest(after_revision=after.revision), metadata=web, timeout=5
    )
    assert list(again.revocations) == [] and again.revision == after.revision

    # People and practice systems cannot read the feed; a negative revision is refused.
    for metadata in (messaging.as_user(team.owner), messaging.as_user(team.clinician)):
        err = await rpc_error(
            messaging.auth.ListRevocations(auth_pb.ListRevocationsRequest(), metadata=metadata, timeout=5)
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(
        messaging.auth.ListRevocations(auth_pb.ListRevocationsRequest(after_revision=-1), metadata=web, timeout=5)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(messaging.auth.ListRevocations(auth_pb.ListRevocationsRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


# -- the verifier's deny-set (pure logic) -------------------------------------------------


class _Feed:
    """Stands in for auth's feed in the verifier's cache tests (not for a service)."""

    def __init__(self) -> None:
        self.entries: list[Revocation] = []
        self.fail = False
        self.calls: list[int] = []

    async def __call__(self, after_revision: int) -> RevocationBatch:
        self.calls.append(after_revision)
        if self.fail:
            raise ConnectionError("auth is unreachable")
        top = max((e.revision for e in self.entries), default=0)
        return RevocationBatch([e for e in self.entries if e.revision > after_revision], top, 310.0, 0.5)


async def test_the_verifier_keeps_its_last_set_when_auth_is_unreachable(keys_dir):
    signer = TokenSigner.from_keys_dir(keys_dir, "auth")
    verifier = TokenVerifier.from_keys_dir(keys_dir)
    feed = _Feed()
    revocations = verifier.use_revocations(feed)
    def token(subject: str) -> str:
        return signer.user_token(Principal(subject, "clinician", practice_id="p1"))[0]

    gone, stays = token("user-gone"), token("user-stays")
    assert await revocations.refresh()
    verifier.verify(gone)
    feed.entries.append(Revocation("user-gone", time.time(), 7))
    assert await revocations.refresh()
    assert revocations.revision == 7 and revocations.refresh_seconds == 0.5
    calls = len(feed.calls)
    with pytest.raises(Exception, match=REVOKED):
        verifier.verify(gone)
    verifier.verify(stays)
    assert len(feed.calls) == calls  # verification never asks auth

    feed.fail = True
    assert not await revocations.refresh()
    with pytest.raises(Exception, match=REVOKED):
        verifier.verify(gone)

    # The feed started over (a lower revision): the set is reloaded whole.
    feed.fail = False
    feed.entries = [Revocation("user-stays", time.time(), 1)]
    assert await revocations.refresh()
    assert feed.calls[-2:] == [7, 0] and revocations.revision == 1
    verifier.verify(gone)
    with pytest.raises(Exception, match=REVOKED):
        verifier.verify(stays)

    # Revocations older than the retention are forgotten (their tokens have expired).
    feed.entries.append(Revocation("user-old", time.time() - 400, 2))
    assert await revocations.refresh()
    assert revocations.revoked_at("user-old") is None and len(revocations) == 1
    # A token issued well after the revocation (a reactivated subject) is accepted.
    revocations._revoked["user-later"] = time.time() - 60
    verifier.verify(token("user-later"))

