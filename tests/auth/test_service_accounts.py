"""Practice service accounts: the owner creates them (secret shown once, stored
hashed), a practice system exchanges client id + secret for a short token with
scopes, and everything else is refused clearly."""

from __future__ import annotations

import hashlib
import time

import grpc
import pytest
from confidant.auth.v1 import auth_service_pb2 as pb
from confidant.auth.v1 import auth_service_pb2_grpc as pb_grpc

from services.auth.app import create_service
from services.auth.config import AuthConfig
from services.common.tokens import TokenVerifier
from tests.auth.harness import AuthHarness, rpc_error
from tests.support import channel, running, service_env


async def _create(auth: AuthHarness, owner: pb.User, scopes=("messaging.send",), name="Practice EHR"):
    return await auth.stub.CreateServiceAccount(
        pb.CreateServiceAccountRequest(display_name=name, scopes=list(scopes)),
        metadata=auth.as_user(owner),
        timeout=5,
    )


async def _issue(auth: AuthHarness, client_id: str, secret: str, scopes=()):
    # No access token at all: this is how a practice system signs in.
    return await auth.stub.IssueServiceAccountToken(
        pb.IssueServiceAccountTokenRequest(client_id=client_id, client_secret=secret, scopes=list(scopes)),
        timeout=5,
    )


async def test_create_shows_the_secret_once_and_stores_only_its_hash(auth: AuthHarness):
    practice, owner = await auth.practice()
    created = await _create(auth, owner, scopes=["messaging.send", "messaging.read"])
    account, secret = created.account, created.client_secret
    assert len(secret) >= 43 and account.client_id.startswith("sa_")
    assert account.practice_id == practice.practice_id
    assert list(account.scopes) == ["messaging.read", "messaging.send"]

    listed = await auth.stub.ListServiceAccounts(
        pb.ListServiceAccountsRequest(), metadata=auth.as_user(owner), timeout=5
    )
    assert [a.client_id for a in listed.accounts] == [account.client_id]
    assert secret not in str(listed)

    rows = await auth.execute(
        "SELECT secret_hash, client_id, scopes FROM service_accounts WHERE user_id = %s",
        (account.service_account_id,),
    )
    assert bytes(rows[0][0]) == hashlib.sha256(secret.encode()).digest()
    # The secret is nowhere in the database in clear.
    dump = await auth.execute(
        "SELECT count(*) FROM service_accounts s JOIN users u USING (user_id)"
        " WHERE strpos(s::text, %s) > 0 OR strpos(u::text, %s) > 0",
        (secret, secret),
    )
    assert dump == [(0,)]
    # The account is a users row of role service_account, outside the directory.
    users = await auth.stub.GetUsers(
        pb.GetUsersRequest(user_ids=[account.service_account_id]), metadata=auth.as_user(owner), timeout=5
    )
    assert users.users[0].role == pb.ROLE_SERVICE_ACCOUNT
    assert (await auth.audit_rows("service_account.create"))[-1][2] == account.service_account_id


async def test_token_issuance_with_right_and_wrong_secrets(auth: AuthHarness):
    practice, owner = await auth.practice()
    created = await _create(auth, owner, scopes=["messaging.send", "consent.read"])
    account, secret = created.account, created.client_secret

    issued = await _issue(auth, account.client_id, secret)
    assert sorted(issued.scopes) == ["consent.read", "messaging.send"]
    assert issued.expires_at.seconds - time.time() <= 300
    principal = TokenVerifier.from_keys_dir(auth.keys_dir).verify(issued.access_token)
    assert principal.role == "service_account"
    assert principal.subject == account.service_account_id
    assert principal.practice_id == practice.practice_id
    assert principal.scopes == frozenset({"consent.read", "messaging.send"})

    narrowed = await _issue(auth, account.client_id, secret, scopes=["messaging.send"])
    assert list(narrowed.scopes) == ["messaging.send"]

    wrong = await rpc_error(_issue(auth, account.client_id, secret + "x"))
    unknown = await rpc_error(_issue(auth, "sa_nobody", secret))
    assert wrong.code() == unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details() == unknown.details()

    not_granted = await rpc_error(_issue(auth, account.client_id, secret, scopes=["consent.write"]))
    assert not_granted.code() == grpc.StatusCode.PERMISSION_DENIED
    bad_scope = await rpc_error(_issue(auth, account.client_id, secret, scopes=["messaging.everything"]))
    assert bad_scope.code() == grpc.StatusCode.INVALID_ARGUMENT

    outcomes = [row[1] for row in await auth.audit_rows("service_account.token")]
    assert outcomes.count("success") == 2 and outcomes.count("failure") == 2 and "denied" in outcomes

    # Deleted: no more tokens.
    await auth.stub.DeleteServiceAccount(
        pb.DeleteServiceAccountRequest(service_account_id=account.service_account_id),
        metadata=auth.as_user(owner),
        timeout=5,
    )
    gone = await rpc_error(_issue(auth, account.client_id, secret))
    assert gone.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = await auth.stub.ListServiceAccounts(
        pb.ListServiceAccountsRequest(), metadata=auth.as_user(owner), timeout=5
    )
    assert list(listed.accounts) == []


@pytest.mark.parametrize("scopes", [[], ["messaging.send", "messaging.delete"], ["MESSAGING.SEND"]])
async def test_scopes_are_validated(auth: AuthHarness, scopes):
    _, owner = await auth.practice()
    err = await rpc_error(_create(auth, owner, scopes=scopes))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_the_practice_owner_manages_service_accounts(auth: AuthHarness):
    practice, owner = await auth.practice()
    clinician = await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Riley Park")
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Jordan Lee")
    created = await _create(auth, owner)
    account = created.account

    for metadata in (auth.as_user(clinician), auth.as_user(client), auth.web):
        err = await rpc_error(
            auth.stub.CreateServiceAccount(
                pb.CreateServiceAccountRequest(display_name="EHR", scopes=["messaging.send"]),
                metadata=metadata,
                timeout=5,
            )
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = await rpc_error(
            auth.stub.ListServiceAccounts(pb.ListServiceAccountsRequest(), metadata=metadata, timeout=5)
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = await rpc_error(
            auth.stub.DeleteServiceAccount(
                pb.DeleteServiceAccountRequest(service_account_id=account.service_account_id),
                metadata=metadata,
                timeout=5,
            )
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    # Another practice's owner neither sees nor deletes it.
    _, other_owner = await auth.practice(name="Hillside Therapy", owner_name="Morgan Blake")
    listed = await auth.stub.ListServiceAccounts(
        pb.ListServiceAccountsRequest(), metadata=auth.as_user(other_owner), timeout=5
    )
    assert list(listed.accounts) == []
    err = await rpc_error(
        auth.stub.DeleteServiceAccount(
            pb.DeleteServiceAccountRequest(service_account_id=account.service_account_id),
            metadata=auth.as_user(other_owner),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(
        auth.stub.DeleteServiceAccount(
            pb.DeleteServiceAccountRequest(service_account_id="not-an-id"),
            metadata=auth.as_user(owner),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    # A service account's token reaches no person's RPCs in auth, and the open method is the only open one.
    issued = await _issue(auth, account.client_id, created.client_secret)
    sa = auth.tokens.metadata(issued.access_token)
    err = await rpc_error(
        auth.stub.SearchDirectory(pb.SearchDirectoryRequest(query="a"), metadata=sa, timeout=5)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(
        auth.stub.ListServiceAccounts(pb.ListServiceAccountsRequest(), metadata=sa, timeout=5)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(auth.stub.ListServiceAccounts(pb.ListServiceAccountsRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_token_requests_are_throttled_per_client_id(fresh_database, keys_dir, tokens):
    url = await fresh_database("auth")
    env = service_env(keys_dir, auth_database_url=url, service_account_token_limit="3")
    service = await create_service(AuthConfig.load(env))
    async with running(service) as address, channel(address) as ch:
        auth = AuthHarness(pb_grpc.AuthServiceStub(ch), url, tokens, keys_dir)
        _, owner = await auth.practice()
        first = await _create(auth, owner)
        second = await _create(auth, owner, name="Scheduler")
        await _issue(auth, first.account.client_id, first.client_secret)
        await rpc_error(_issue(auth, first.account.client_id, "wrong"))
        await _issue(auth, first.account.client_id, first.client_secret)
        err = await rpc_error(_issue(auth, first.account.client_id, first.client_secret))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Another client id is counted on its own.
        await _issue(auth, second.account.client_id, second.client_secret)
        assert "throttled" in [row[1] for row in await auth.audit_rows("service_account.token")]
