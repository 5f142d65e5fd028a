"""Signed access tokens between services (EdDSA JWTs, PyJWT).

Two kinds of token travel in the ``authorization`` metadata of gRPC calls:
- user tokens, signed only by the auth service after it checked a session;
- service tokens, signed by one of our services for its own calls
  (``sub = "service:<name>"``; the issuer must match the subject).

Each issuer has an Ed25519 key pair in the keys directory (``<issuer>.key`` /
``<issuer>.pub``); every service verifies tokens locally against the public keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common.errors import Unauthenticated
from services.common.identity import Principal

AUDIENCE = "confidant"
USER_TOKEN_ISSUER = "auth"
SERVICE_NAMES = ("auth", "messaging", "consent", "notify", "web")
_LEEWAY_SECONDS = 5


def generate_key_pair(keys_dir: Path, name: str) -> None:
    """Write ``name.key`` and ``name.pub`` unless they exist (development keys)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    private_path = keys_dir / f"{name}.key"
    public_path = keys_dir / f"{name}.pub"
    if private_path.exists() and public_path.exists():
        return
    key = Ed25519PrivateKey.generate()
    private_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def ensure_dev_keys(keys_dir: Path) -> None:
    for name in SERVICE_NAMES:
        generate_key_pair(keys_dir, name)


class TokenSigner:
    def __init__(self, issuer: str, private_key: Ed25519PrivateKey) -> None:
        self.issuer = issuer
        self._key = private_key

    @classmethod
    def from_keys_dir(cls, keys_dir: Path, issuer: str) -> TokenSigner:
        path = keys_dir / f"{issuer}.key"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"The signing key {path} does not exist.") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key.")
        return cls(issuer, key)

    def sign(self, claims: dict, ttl_seconds: int) -> tuple[str, int]:
        now = int(time.time())
        expires = now + ttl_seconds
        payload = {"iss": self.issuer, "aud": AUDIENCE, "iat": now, "exp": expires, **claims}
        token = jwt.encode(payload, self._key, algorithm="EdDSA", headers={"kid": self.issuer})
        return token, expires

    def user_token(self, principal: Principal, ttl_seconds: int = 300) -> tuple[str, int]:
        if self.issuer != USER_TOKEN_ISSUER:
            raise ValueError("Only the auth service signs user tokens.")
        return self.sign(
            {
                "sub": principal.subject,
                "prc": principal.practice_id,
                "rol": principal.role,
                "scp": sorted(principal.scopes),
                "ses": principal.session_kind,
                "cnv": principal.conversation_id,
            },
            ttl_seconds,
        )

    def service_token(self, ttl_seconds: int = 300) -> tuple[str, int]:
        return self.sign({"sub": f"service:{self.issuer}", "rol": "service"}, ttl_seconds)


class TokenVerifier:
    def __init__(self, public_keys: dict[str, Ed25519PublicKey]) -> None:
        self._keys = public_keys

    @classmethod
    def from_keys_dir(cls, keys_dir: Path) -> TokenVerifier:
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(keys_dir.glob("*.pub")):
            key = serialization.load_pem_public_key(path.read_bytes())
            if isinstance(key, Ed25519PublicKey):
                keys[path.stem] = key
        if USER_TOKEN_ISSUER not in keys:
            raise FileNotFoundError(f"No public key for the auth service in {keys_dir}.")
        return cls(keys)

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The access token is malformed.") from exc
        issuer = header.get("kid")
        key = self._keys.get(issuer) if isinstance(issuer, str) else None
        if key is None:
            raise Unauthenticated("The access token was signed by an unknown key.")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=AUDIENCE,
                issuer=issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The access token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The access token is not valid.") from exc
        role = claims.get("rol", "")
        subject = claims["sub"]
        if role == "service":
            # A service speaks only for itself.
            if subject != f"service:{issuer}":
                raise Unauthenticated("A service token must be issued by that service.")
            return Principal(subject=subject, role="service", expires_at=claims["exp"])
        if issuer != USER_TOKEN_ISSUER:
            raise Unauthenticated("Only the auth service issues tokens for people.")
        return Principal(
            subject=subject,
            role=role,
            practice_id=claims.get("prc", ""),
            scopes=frozenset(claims.get("scp", [])),
            session_kind=claims.get("ses", ""),
            conversation_id=claims.get("cnv", ""),
            expires_at=claims["exp"],
        )


@dataclass
class ServiceTokenSource:
    """Keeps a fresh service token for outgoing calls."""

    signer: TokenSigner
    ttl_seconds: int = 300
    _token: str = ""
    _expires: int = 0

    def token(self) -> str:
        if time.time() > self._expires - 60:
            self._token, self._expires = self.signer.service_token(self.ttl_seconds)
        return self._token
