"""Every row of auth's audit trail about a client names that client (as the row's target), in
the client's practice's trail, so the owner's audit page finds it with the "client" filter of
confidant.audit.v1.AuditService."""

from __future__ import annotations

import json

import grpc
from confidant.audit.v1 import audit_service_pb2 as audit_pb
from confidant.auth.v1 import auth_service_pb2 as pb

from tests.auth.harness import AuthHarness, rpc_error
from tests.auth.test_credentials import latest_token

ADDRESS = "198.51.100.23"
CLIENT_PASSWORD = "maple-window-77-lantern"


async def _client_rows(auth: AuthHarness, owner: pb.User, client_id: str) -> list[audit_pb.AuditEvent]:
    reply = await auth.audit.ListAuditEvents(
        audit_pb.ListAuditEventsRequest(client_id=client_id, page_size=500), metadata=auth.as_user(owner), timeout=5
    )
    return list(reply.events)


async def test_a_clients_sign_ins_profile_changes_and_magic_links_are_found_by_the_client_filter(auth: AuthHarness):
    _, owner = await auth.practice()
    me = auth.as_user(owner)
    client = (
        await auth.stub.CreateClient(
            pb.CreateClientRequest(email="jordan@client.test", display_name="Jordan Lee"), metadata=me, timeout=5
        )
    ).client
    other = (
        await auth.stub.CreateClient(
            pb.CreateClientRequest(email="alex@client.test", display_name="Alex Chen"), metadata=me, timeout=5
        )
    ).client

    # The portal invitation, used once, then once too often.
    await auth.stub.InviteUser(pb.InviteUserRequest(user_id=client.user_id), metadata=me, timeout=10)
    invitation = await latest_token(auth, client.user_id, "invitation")
    await auth.stub.SetPasswordWithLink(
        pb.SetPasswordWithLinkRequest(token=invitation, new_password=CLIENT_PASSWORD, client_address=ADDRESS),
        metadata=auth.web, timeout=10,
    )
    await rpc_error(
        auth.stub.SetPasswordWithLink(
            pb.SetPasswordWithLinkRequest(token=invitation, new_password=CLIENT_PASSWORD, client_address=ADDRESS),
            metadata=auth.web, timeout=10,
        )
    )

    # The client signs in (once wrongly), and out.
    async def sign_in(password: str):
        return await auth.stub.SignIn(
            pb.SignInRequest(email=client.email, password=password, client_address=ADDRESS), metadata=auth.web,
            timeout=10,
        )

    err = await rpc_error(sign_in("not-the-password-at-all"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    session = await sign_in(CLIENT_PASSWORD)
    await auth.stub.SignOut(pb.SignOutRequest(session_token=session.session_token), metadata=auth.web, timeout=5)

    # Staff change the profile, read it, find it in a search and in the list.
    await auth.stub.UpdateClient(
        pb.UpdateClientRequest(client_id=client.user_id, email=client.email, display_name="Jordan A. Lee",
                               date_of_birth="1984-07-23"),
        metadata=me, timeout=5,
    )
    await auth.stub.GetUsers(pb.GetUsersRequest(user_ids=[client.user_id, other.user_id]), metadata=me, timeout=5)
    await auth.stub.SearchDirectory(pb.SearchDirectoryRequest(query="lee"), metadata=me, timeout=5)
    await auth.stub.ListClients(pb.ListClientsRequest(), metadata=me, timeout=5)

    # notify mints a magic link; the client redeems it, then the used link is tried again.
    link = await auth.stub.CreateMagicLink(
        pb.CreateMagicLinkRequest(user_id=client.user_id, conversation_id="conv-1"), metadata=auth.notify, timeout=5
    )
    for _ in range(2):
        await auth.stub.RedeemMagicLink(
            pb.RedeemMagicLinkRequest(token=link.token, client_address=ADDRESS), metadata=auth.web, timeout=5
        )

    rows = await _client_rows(auth, owner, client.user_id)
    found = {(row.action, row.outcome) for row in rows}
    for expected in (
        ("client.create", "success"),
        ("invitation.create", "success"),
        ("credential_link.use", "success"),
        ("credential_link.use", "already_used"),
        ("sign_in", "failure"),
        ("sign_in", "success"),
        ("sign_out", "success"),
        ("client.update", "success"),
        ("users.read", "success"),
        ("directory.search", "success"),
        ("clients.list", "success"),
        ("magic_link.create", "success"),
        ("magic_link.redeem", "redeemed"),
        ("magic_link.redeem", "already_used"),
    ):
        assert expected in found, expected
    # Each names the client by its target, and none is another client's.
    assert all(row.target == client.user_id and row.service == "auth" for row in rows)
    assert all(client.email not in row.detail_json and "Jordan" not in row.detail_json for row in rows)
    assert [json.loads(r.detail_json)["fields"] for r in rows if r.action == "client.update"] == [
        ["display_name", "date_of_birth"]
    ]
    # The other client's rows are theirs: only the read and the list name them.
    theirs = {(row.action, row.outcome) for row in await _client_rows(auth, owner, other.user_id)}
    assert theirs == {("client.create", "success"), ("users.read", "success"), ("clients.list", "success")}

    # The rows of a list were appended in one go (services/common/audit.py record_many), still one chain.
    verified = await auth.audit.VerifyAuditTrail(audit_pb.VerifyAuditTrailRequest(), metadata=me, timeout=5)
    assert verified.intact and verified.rows > len(rows)

    # Another practice's owner finds none of it, even asking by the client's id.
    _, stranger = await auth.practice("Hillside Therapy", "Riley Stone")
    assert await _client_rows(auth, stranger, client.user_id) == []
