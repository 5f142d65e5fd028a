"""Every gRPC service refuses a bad access token with UNAUTHENTICATED: expired,
tampered with, signed by a key that is not ours, or not signed at all.

The four real services run in-process, each with its own fresh database; each is
called through one of its RPCs, first with a good token (the control: anything but
UNAUTHENTICATED), then with each bad one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import jwt
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2 as consent_pb
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from confidant.notify.v1 import notify_service_pb2 as notify_pb
from confidant.notify.v1 import notify_service_pb2_grpc as notify_grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from services.common.clients import bearer
from services.common.identity import Principal
from services.common.tokens import AUDIENCE, TokenSigner
from services.consent.app import create_service as create_consent
from services.consent.config import ConsentConfig
from services.messaging.app import create_service as create_messaging
from services.messaging.config import MessagingConfig
from services.notify.app import create_service as create_notify
from services.notify.config import NotifyConfig
from tests.support import channel, running, service_env

Call = Callable[[str], Awaitable[object]]


@contextlib.asynccontextmanager
async def four_services(fresh_database, keys_dir) -> AsyncIterator[dict[str, str]]:
    addresses: dict[str, str] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, config_cls, create in (
            ("auth", AuthConfig, create_auth),
            ("consent", ConsentConfig, create_consent),
            ("notify", NotifyConfig, create_notify),
            ("messaging", MessagingConfig, create_messaging),
        ):
            env = service_env(keys_dir, **{f"{name}_database_url": await fresh_database(name)},
                              **{f"{other}_addr": address for other, address in addresses.items()})
            addresses[name] = await stack.enter_async_context(running(await create(config_cls.load(env))))
        yield addresses


@pytest.fixture(scope="module")
async def services(fresh_database, keys_dir, tokens) -> AsyncIterator[dict]:
    """The services, a practice with its owner and a client, and one call per service."""
    async with four_services(fresh_database, keys_dir) as addresses, contextlib.AsyncExitStack() as stack:
        channels = {name: await stack.enter_async_context(channel(address)) for name, address in addresses.items()}
        auth = auth_grpc.AuthServiceStub(channels["auth"])
        web = tokens.metadata(tokens.service("web"))
        created = await auth.CreatePractice(
            auth_pb.CreatePracticeRequest(name="Token Practice", owner_email="owner@token.test",
                                          owner_display_name="Token Owner", owner_password="quiet-harbor-2026"),
            metadata=web, timeout=30,
        )
        practice_id, owner_id = created.practice.practice_id, created.owner.user_id
        client = await auth.CreateUser(
            auth_pb.CreateUserRequest(practice_id=practice_id, role=auth_pb.ROLE_CLIENT, email="client@token.test",
                                      display_name="Token Client"),
            metadata=web, timeout=30,
        )
        owner = Principal(subject=owner_id, role="owner", practice_id=practice_id, session_kind="full")
        messaging = msg_grpc.MessagingServiceStub(channels["messaging"])
        consent = consent_grpc.ConsentServiceStub(channels["consent"])
        notify = notify_grpc.NotifyServiceStub(channels["notify"])
        calls: dict[str, tuple[str, Call]] = {
            # service: (who calls it: "user" = the practice owner, else a service's name; the call)
            "auth": ("user", lambda tok: auth.GetPractice(
                auth_pb.GetPracticeRequest(practice_id=practice_id), metadata=bearer(tok), timeout=10)),
            "messaging": ("user", lambda tok: messaging.GetUnreadSummary(
                msg_pb.GetUnreadSummaryRequest(), metadata=bearer(tok), timeout=10)),
            "consent": ("user", lambda tok: consent.GetClientPhone(
                consent_pb.GetClientPhoneRequest(client_id=client.user.user_id), metadata=bearer(tok), timeout=10)),
            "notify": ("web", lambda tok: notify.ListMailbox(
                notify_pb.ListMailboxRequest(page_size=1), metadata=bearer(tok), timeout=10)),
        }
        yield {"calls": calls, "owner": owner}


def good_token(keys_dir, who: str, owner: Principal, ttl: int = 300) -> str:
    if who == "user":
        return TokenSigner.from_keys_dir(keys_dir, "auth").user_token(owner, ttl)[0]
    return TokenSigner.from_keys_dir(keys_dir, who).service_token(ttl)[0]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def tampered(token: str) -> str:
    """The same signature over a changed payload: a person made owner of everything, a service made auth."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if claims.get("rol") == "service":
        claims["exp"] = claims["exp"] + 3600
    else:
        claims["sub"] = "00000000-0000-0000-0000-000000000001"
    return ".".join([header, _b64(json.dumps(claims, separators=(",", ":")).encode()), signature])


def bad_tokens(keys_dir, who: str, owner: Principal) -> dict[str, str]:
    issuer = "auth" if who == "user" else who
    foreign = TokenSigner(issuer, Ed25519PrivateKey.generate())  # same kid and issuer, a key not in the keys dir
    stranger = TokenSigner("stranger", Ed25519PrivateKey.generate())  # a kid we have no key for
    now = int(time.time())
    unsigned = jwt.encode({"iss": issuer, "aud": AUDIENCE, "iat": now, "exp": now + 300,
                           "sub": owner.subject if who == "user" else f"service:{who}",
                           "rol": owner.role if who == "user" else "service", "prc": owner.practice_id},
                          key=None, algorithm="none", headers={"kid": issuer})
    if who == "user":
        wrongly_signed = foreign.user_token(owner)[0]
        unknown_key = stranger.sign({"sub": owner.subject, "rol": owner.role, "prc": owner.practice_id}, 300)[0]
    else:
        wrongly_signed = foreign.service_token()[0]
        unknown_key = stranger.service_token()[0]
    return {
        "expired": good_token(keys_dir, who, owner, ttl=-60),
        "tampered": tampered(good_token(keys_dir, who, owner)),
        "wrongly signed": wrongly_signed,
        "signed by an unknown key": unknown_key,
        "unsigned (alg none)": unsigned,
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize("service", ["auth", "messaging", "consent", "notify"])
async def test_every_service_refuses_expired_tampered_and_wrongly_signed_tokens(services, keys_dir, service):
    who, call = services["calls"][service]
    owner = services["owner"]
    # The control: the same call with a good token is answered (OK here).
    await call(good_token(keys_dir, who, owner))
    for kind, token in bad_tokens(keys_dir, who, owner).items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(token)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, (service, kind, refused.value.details())
    # Without any token at all.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call("")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
