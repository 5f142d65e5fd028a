"""Magic links: minted by notify, inspected without being consumed, redeemed exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid

import grpc
import psycopg
from confidant.auth.v1 import auth_service_pb2 as pb

from services.common.audit import verify_chain
from services.common.tokens import TokenVerifier
from tests.auth.harness import rpc_error

CONVERSATION = "conv-7f3a"


async def _client(auth):
    practice, owner = await auth.practice()
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Jordan Lee", password="maple-window-77")
    return practice, owner, client


async def _link(auth, user_id: str, conversation_id: str = CONVERSATION) -> pb.CreateMagicLinkResponse:
    return await auth.stub.CreateMagicLink(
        pb.CreateMagicLinkRequest(user_id=user_id, conversation_id=conversation_id),
        metadata=auth.notify,
        timeout=5,
    )


async def _inspect(auth, token: str) -> pb.InspectMagicLinkResponse:
    return await auth.stub.InspectMagicLink(
        pb.InspectMagicLinkRequest(token=token), metadata=auth.web, timeout=5
    )


async def _redeem(auth, token: str) -> pb.RedeemMagicLinkResponse:
    return await auth.stub.RedeemMagicLink(
        pb.RedeemMagicLinkRequest(token=token, client_address="198.51.100.4"), metadata=auth.web, timeout=5
    )


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def test_only_notify_mints_links_and_only_for_clients(auth):
    practice, owner, client = await _client(auth)
    before = time.time()
    link = await _link(auth, client.user_id)
    assert len(link.token) >= 43  # 256 bits, URL-safe
    assert before + 900 - 5 <= link.expires_at.seconds <= time.time() + 900 + 1
    # Stored only as its sha256.
    [(user_id, conversation_id)] = await auth.execute(
        "SELECT user_id::text, conversation_id FROM magic_links WHERE token_hash = %s", (_hash(link.token),)
    )
    assert (user_id, conversation_id) == (client.user_id, CONVERSATION)
    dump = str(await auth.execute("SELECT * FROM magic_links")) + str(
        await auth.execute("SELECT * FROM audit_events")
    )
    assert link.token not in dump

    request = pb.CreateMagicLinkRequest(user_id=client.user_id, conversation_id=CONVERSATION)
    for metadata in (auth.web, auth.as_service("messaging"), auth.as_user(owner)):
        err = await rpc_error(auth.stub.CreateMagicLink(request, metadata=metadata, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(auth.stub.CreateMagicLink(request, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await rpc_error(_link(auth, owner.user_id))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    err = await rpc_error(_link(auth, str(uuid.uuid4())))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(_link(auth, "not-a-uuid"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(_link(auth, client.user_id, conversation_id=" "))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(actor, outcome, target, practice_id, detail)] = await auth.audit_rows("magic_link.create")
    assert (actor, outcome, target, practice_id, detail) == (
        "service:notify",
        "success",
        client.user_id,
        practice.practice_id,
        {"conversation_id": CONVERSATION},
    )


async def test_inspect_never_consumes_and_a_link_is_redeemed_once(auth):
    practice, _, client = await _client(auth)
    link = await _link(auth, client.user_id)
    for _ in range(3):  # a mail scanner opening the page many times burns nothing
        inspected = await _inspect(auth, link.token)
        assert (inspected.outcome, inspected.conversation_id) == (pb.MAGIC_LINK_OUTCOME_VALID, CONVERSATION)

    redeemed = await _redeem(auth, link.token)
    assert redeemed.outcome == pb.MAGIC_LINK_OUTCOME_REDEEMED
    assert redeemed.user == client and redeemed.conversation_id == CONVERSATION
    assert redeemed.session.kind == pb.SESSION_KIND_MAGIC_LINK
    assert redeemed.session.conversation_id == CONVERSATION
    # The session ends when the link's window ends.
    assert redeemed.session.expires_at == link.expires_at

    again = await _redeem(auth, link.token)
    assert (again.outcome, again.conversation_id, again.session_token) == (
        pb.MAGIC_LINK_OUTCOME_ALREADY_USED,
        CONVERSATION,
        "",
    )
    assert not again.HasField("user") and not again.HasField("session")
    inspected = await _inspect(auth, link.token)
    assert (inspected.outcome, inspected.conversation_id) == (
        pb.MAGIC_LINK_OUTCOME_ALREADY_USED,
        CONVERSATION,
    )

    for token in ("never-minted", ""):
        assert (await _inspect(auth, token)).outcome == pb.MAGIC_LINK_OUTCOME_UNKNOWN
        unknown = await _redeem(auth, token)
        assert (unknown.outcome, unknown.conversation_id) == (pb.MAGIC_LINK_OUTCOME_UNKNOWN, "")

    rows = await auth.audit_rows("magic_link.redeem")
    assert [(actor, outcome) for actor, outcome, *_ in rows] == [
        (client.user_id, "redeemed"),
        (client.user_id, "already_used"),
        ("unknown", "unknown"),
        ("unknown", "unknown"),
    ]
    assert rows[0][3] == practice.practice_id
    assert rows[0][4] == {"client_address": "198.51.100.4", "via": "web", "conversation_id": CONVERSATION}

    for call in (
        auth.stub.InspectMagicLink(
            pb.InspectMagicLinkRequest(token=link.token), metadata=auth.notify, timeout=5
        ),
        auth.stub.RedeemMagicLink(
            pb.RedeemMagicLinkRequest(token=link.token), metadata=auth.notify, timeout=5
        ),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED


async def test_expired_links_lead_to_sign_in_for_their_conversation(auth):
    _, _, client = await _client(auth)
    link = await _link(auth, client.user_id)
    await auth.execute(
        "UPDATE magic_links SET expires_at = now() - interval '1 second' WHERE token_hash = %s",
        (_hash(link.token),),
    )
    inspected = await _inspect(auth, link.token)
    assert (inspected.outcome, inspected.conversation_id) == (pb.MAGIC_LINK_OUTCOME_EXPIRED, CONVERSATION)
    redeemed = await _redeem(auth, link.token)
    assert (redeemed.outcome, redeemed.conversation_id, redeemed.session_token) == (
        pb.MAGIC_LINK_OUTCOME_EXPIRED,
        CONVERSATION,
        "",
    )
    [(count,)] = await auth.execute("SELECT count(*) FROM sessions")
    assert count == 0
    # The client can still sign in with their password, and lands on the conversation.
    signed_in = await auth.stub.SignIn(
        pb.SignInRequest(email=client.email, password="maple-window-77"), metadata=auth.web, timeout=10
    )
    assert signed_in.user == client


async def test_magic_session_reaches_one_conversation_and_ends_with_the_window(auth):
    practice, _, client = await _client(auth)
    link = await _link(auth, client.user_id)
    token = (await _redeem(auth, link.token)).session_token
    authed = await auth.stub.AuthenticateSession(
        pb.AuthenticateSessionRequest(session_token=token), metadata=auth.web, timeout=5
    )
    assert authed.session.kind == pb.SESSION_KIND_MAGIC_LINK
    assert authed.session.expires_at == link.expires_at
    principal = TokenVerifier.from_keys_dir(auth.keys_dir).verify(authed.access_token)
    assert (principal.subject, principal.role, principal.practice_id, principal.session_kind) == (
        client.user_id,
        "client",
        practice.practice_id,
        "magic_link",
    )
    assert principal.conversation_id == CONVERSATION

    session_hash = _hash(token)
    # Inactivity does not end it early (no idle rule) ...
    await auth.execute(
        "UPDATE sessions SET last_seen_at = now() - interval '1 hour', expires_at = now() + interval '20 seconds'"
        " WHERE session_hash = %s",
        (session_hash,),
    )
    authed = await auth.stub.AuthenticateSession(
        pb.AuthenticateSessionRequest(session_token=token), metadata=auth.web, timeout=5
    )
    # ... activity does not extend it, and its access token stops with it.
    assert authed.access_token_expires_at.seconds <= time.time() + 21
    [(extended,)] = await auth.execute(
        "SELECT expires_at > now() + interval '21 seconds' FROM sessions WHERE session_hash = %s",
        (session_hash,),
    )
    assert not extended
    await auth.execute("UPDATE sessions SET expires_at = now() WHERE session_hash = %s", (session_hash,))
    err = await rpc_error(
        auth.stub.AuthenticateSession(
            pb.AuthenticateSessionRequest(session_token=token), metadata=auth.web, timeout=5
        )
    )
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, "Your session has ended.")


async def test_concurrent_redemptions_exactly_one_wins(auth):
    _, _, client = await _client(auth)
    link = await _link(auth, client.user_id)
    replies = await asyncio.gather(*(_redeem(auth, link.token) for _ in range(8)))
    outcomes = sorted(pb.MagicLinkOutcome.Name(r.outcome) for r in replies)
    assert outcomes == ["MAGIC_LINK_OUTCOME_ALREADY_USED"] * 7 + ["MAGIC_LINK_OUTCOME_REDEEMED"]
    assert all(r.conversation_id == CONVERSATION for r in replies)
    [(sessions,)] = await auth.execute("SELECT count(*) FROM sessions WHERE kind = 'magic_link'")
    assert sessions == 1
    assert len(await auth.audit_rows("magic_link.redeem")) == 8
    async with await psycopg.AsyncConnection.connect(auth.database_url) as conn:
        assert await verify_chain(conn)


async def test_a_new_link_does_not_revive_an_old_one(auth):
    _, _, client = await _client(auth)
    first = await _link(auth, client.user_id)
    second = await _link(auth, client.user_id, "conv-other")
    assert first.token != second.token
    assert (await _redeem(auth, second.token)).conversation_id == "conv-other"
    assert (await _redeem(auth, first.token)).outcome == pb.MAGIC_LINK_OUTCOME_REDEEMED
