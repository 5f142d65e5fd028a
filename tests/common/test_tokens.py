"""Access tokens: who may sign what, and what verification refuses."""

from __future__ import annotations

import time

import jwt
import pytest

from services.common.errors import Unauthenticated
from services.common.identity import Principal
from services.common.tokens import TokenSigner, TokenVerifier


@pytest.fixture(scope="module")
def verifier(keys_dir):
    return TokenVerifier.from_keys_dir(keys_dir)


def test_user_token_round_trip(keys_dir, verifier):
    signer = TokenSigner.from_keys_dir(keys_dir, "auth")
    person = Principal(subject="u1", role="client", practice_id="p1", session_kind="magic_link", conversation_id="c1")
    token, expires = signer.user_token(person, ttl_seconds=60)
    assert expires - time.time() <= 60
    assert verifier.verify(token) == person


def test_only_auth_signs_user_tokens(keys_dir, verifier):
    with pytest.raises(ValueError):
        TokenSigner.from_keys_dir(keys_dir, "web").user_token(Principal(subject="u1", role="owner"))
    # Even hand-made, a person's token from another issuer is refused.
    forged, _ = TokenSigner.from_keys_dir(keys_dir, "web").sign({"sub": "u1", "rol": "owner", "prc": "p1"}, 60)
    with pytest.raises(Unauthenticated, match="Only the auth service"):
        verifier.verify(forged)


def test_service_speaks_only_for_itself(keys_dir, verifier):
    web = TokenSigner.from_keys_dir(keys_dir, "web")
    assert verifier.verify(web.service_token()[0]).service_name == "web"
    impersonation, _ = web.sign({"sub": "service:notify", "rol": "service"}, 60)
    with pytest.raises(Unauthenticated):
        verifier.verify(impersonation)


def test_expired_and_tampered_tokens_are_refused(keys_dir, verifier):
    signer = TokenSigner.from_keys_dir(keys_dir, "auth")
    expired, _ = signer.sign({"sub": "u1", "rol": "owner", "iat": int(time.time()) - 120}, ttl_seconds=-60)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(expired)
    good, _ = signer.user_token(Principal(subject="u1", role="clinician", practice_id="p1"))
    header, payload, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    claims["rol"] = "owner"
    forged_payload = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(claims).encode()).decode()
    with pytest.raises(Unauthenticated):
        verifier.verify(f"{header}.{forged_payload}.{signature}")
