"""Signed access tokens between services (EdDSA JWTs, PyJWT).

Two kinds of token travel in the ``authorization`` metadata of gRPC calls:
- user tokens, signed only by the auth service after it checked a session;
- service tokens, signed by one of our services for its own calls
  (``sub = "service:<name>"``; the issuer must match the subject).

Each service has an Ed25519 key pair in the keys directory (``<issuer>.key`` /
``<issuer>.pub``) for its own service tokens; every service verifies those
locally against the public key files.

People's tokens are signed by auth with keys it keeps (and rotates) in its
database and publishes through its ``ListSigningKeys`` RPC (kid, public key,
not-after). Verifiers fetch and cache them (``PublishedKeys``): refreshed
periodically, and at once (rate-limited) when a token names an unknown kid.
Until the published keys were fetched once, the ``auth.pub`` file (the key auth
imports as its first signing key) is trusted for people's tokens, so a service
starts and works while auth is still coming up.

Deactivating a person or deleting a service account ends its tokens at once:
auth publishes recent revocations (``ListRevocations``), each verifier keeps
them in memory (``Revocations``, refreshed every couple of seconds by a
background loop that ``GrpcService`` runs) and refuses a token of a revoked
subject issued before its revocation. Verification itself never calls auth; if
auth is unreachable the last known set is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common.errors import Unauthenticated
from services.common.identity import Principal
from services.common.keyfiles import mark_development_keys

AUDIENCE = "confidant"
USER_TOKEN_ISSUER = "auth"
SERVICE_NAMES = ("auth", "messaging", "consent", "notify", "web")
_LEEWAY_SECONDS = 5
# Kept for callers outside this module (e.g. the not-after of retired keys).
LEEWAY_SECONDS = _LEEWAY_SECONDS

log = logging.getLogger("confidant.tokens")


def generate_key_pair(keys_dir: Path, name: str) -> None:
    """Write ``name.key`` and ``name.pub`` unless they exist (development keys, marked as such)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    private_path = keys_dir / f"{name}.key"
    public_path = keys_dir / f"{name}.pub"
    if private_path.exists() and public_path.exists():
        return
    mark_development_keys(keys_dir)
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


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key_pem(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("Not an Ed25519 public key.")
    return key


class TokenSigner:
    def __init__(self, issuer: str, private_key: Ed25519PrivateKey, kid: str = "") -> None:
        self.issuer = issuer
        # The key id in the token header: the issuer for key files, auth's key id for rotated keys.
        self.kid = kid or issuer
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
        token = jwt.encode(payload, self._key, algorithm="EdDSA", headers={"kid": self.kid})
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


@dataclass(frozen=True)
class PublishedKey:
    """One of auth's published signing keys."""

    kid: str
    public_key: Ed25519PublicKey
    # Epoch seconds after which no token it signed is valid any more; 0 while it is in use.
    not_after: int = 0


KeyFetcher = Callable[[], Awaitable[Sequence[PublishedKey]]]


class PublishedKeys:
    """A cache of auth's published signing keys.

    ``fetch`` returns the current set (auth's ListSigningKeys, or auth's own
    database inside auth). The set is refreshed when older than
    ``refresh_seconds``, and when a token names a kid it does not know, but at
    most once every ``min_refresh_seconds`` so a flood of made-up kids cannot
    hammer auth. A failed fetch keeps the last known set.
    """

    def __init__(
        self, fetch: KeyFetcher, refresh_seconds: float = 300.0, min_refresh_seconds: float = 5.0
    ) -> None:
        self._fetch = fetch
        self.refresh_seconds = refresh_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self._keys: dict[str, PublishedKey] = {}
        self.loaded = False
        self._fetched_at = 0.0  # monotonic time of the last successful fetch
        self._tried_at = float("-inf")  # monotonic time of the last attempt
        self._lock = asyncio.Lock()

    def get(self, kid: str) -> PublishedKey | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def _stale(self) -> bool:
        return not self.loaded or time.monotonic() - self._fetched_at >= self.refresh_seconds

    async def ensure(self, kid: str) -> None:
        """Refresh if the set is old, or if ``kid`` is unknown (rate-limited)."""
        if kid in self._keys and not self._stale():
            return
        async with self._lock:
            # Checked again under the lock: concurrent callers share one fetch.
            if kid in self._keys and not self._stale():
                return
            if time.monotonic() - self._tried_at < self.min_refresh_seconds:
                return
            await self._refresh()

    async def refresh(self) -> bool:
        """Fetch the published keys now; False (keeping the last set) when that fails."""
        async with self._lock:
            return await self._refresh()

    async def _refresh(self) -> bool:
        self._tried_at = time.monotonic()
        try:
            keys = await self._fetch()
        except Exception as exc:  # auth unreachable: keep what we know
            log.warning("signing keys not fetched", extra={"fields": {"error": type(exc).__name__}})
            return False
        self._keys = {key.kid: key for key in keys}
        self.loaded = True
        self._fetched_at = time.monotonic()
        return True


@dataclass(frozen=True)
class Revocation:
    """Every token of ``subject`` issued before ``revoked_at`` (epoch seconds) is refused."""

    subject: str
    revoked_at: float
    revision: int = 0


@dataclass(frozen=True)
class RevocationBatch:
    """One answer of auth's revocation feed (see ListRevocations)."""

    revocations: Sequence[Revocation]
    # The feed's newest revision; lower than the one asked after when the feed started over.
    revision: int
    # A revocation matters this long after it was made (longest token lifetime + leeway).
    retention_seconds: float
    # How often auth asks verifiers to look again.
    refresh_seconds: float


RevocationFetcher = Callable[[int], Awaitable[RevocationBatch]]

DEFAULT_REVOCATION_REFRESH_SECONDS = 2.0
# Auth's advice on the interval is followed within these bounds.
_MIN_REVOCATION_REFRESH_SECONDS = 0.1
_MAX_REVOCATION_REFRESH_SECONDS = 60.0
# Until auth said otherwise: the longest token lifetime (5 minutes) plus leeway, twice.
_DEFAULT_RETENTION_SECONDS = 300 + 2 * _LEEWAY_SECONDS


class Revocations:
    """The subjects revoked within the last token lifetime, kept in memory.

    ``refresh`` asks auth's feed for what is new since the last revision;
    ``run`` does that every ``refresh_seconds`` (auth's advice once it answered).
    A failed fetch keeps the last set. ``revoked_at`` is a dictionary lookup, so
    verification stays synchronous and fast.
    """

    def __init__(self, fetch: RevocationFetcher, refresh_seconds: float = DEFAULT_REVOCATION_REFRESH_SECONDS) -> None:
        self._fetch = fetch
        self.refresh_seconds = refresh_seconds
        self.retention_seconds = float(_DEFAULT_RETENTION_SECONDS)
        self.revision = 0
        self.loaded = False
        self._revoked: dict[str, float] = {}
        self._failing = False
        self._lock = asyncio.Lock()

    def revoked_at(self, subject: str) -> float | None:
        return self._revoked.get(subject)

    def __len__(self) -> int:
        return len(self._revoked)

    async def refresh(self) -> bool:
        """Fetch what is new now; False (keeping the last set) when auth cannot be reached."""
        async with self._lock:
            try:
                batch = await self._fetch(self.revision)
                # Auth's feed started over (e.g. a restored database): reload it whole.
                restarted = batch.revision < self.revision
                if restarted:
                    batch = await self._fetch(0)
            except Exception as exc:  # auth unreachable: keep what we know
                if not self._failing:
                    log.warning("revocations not fetched", extra={"fields": {"error": type(exc).__name__}})
                self._failing = True
                return False
            if self._failing:
                log.info("revocations fetched again")
            self._failing = False
            if restarted:
                self._revoked.clear()
                self.revision = 0
            for entry in batch.revocations:
                self._revoked[entry.subject] = max(entry.revoked_at, self._revoked.get(entry.subject, 0.0))
            self.revision = max(self.revision, batch.revision)
            if batch.retention_seconds > 0:
                self.retention_seconds = float(batch.retention_seconds)
            if batch.refresh_seconds > 0:
                self.refresh_seconds = min(
                    max(batch.refresh_seconds, _MIN_REVOCATION_REFRESH_SECONDS), _MAX_REVOCATION_REFRESH_SECONDS
                )
            # Older revocations no longer matter: every token they could refuse has expired.
            horizon = time.time() - self.retention_seconds
            self._revoked = {subject: at for subject, at in self._revoked.items() if at >= horizon}
            self.loaded = True
            return True

    async def run(self) -> None:
        """Refresh now and then every ``refresh_seconds``, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.refresh_seconds)


class AuthFeed:
    """What verifiers learn from auth through ``channel`` (which adds this service's
    token): its published signing keys (calling the feed) and its revocations."""

    def __init__(self, channel, timeout: float = 3.0) -> None:
        self._channel = channel
        self._timeout = timeout

    def _stub(self):
        # Imported here: generated protos import nothing from services, but keep this module light.
        from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc

        return auth_grpc.AuthServiceStub(self._channel)

    async def __call__(self) -> list[PublishedKey]:
        from confidant.auth.v1 import auth_service_pb2 as auth_pb

        reply = await self._stub().ListSigningKeys(auth_pb.ListSigningKeysRequest(), timeout=self._timeout)
        keys = []
        for key in reply.keys:
            try:
                public_key = load_public_key_pem(key.public_key_pem)
            except ValueError:
                log.warning("published key skipped", extra={"fields": {"kid": key.kid}})
                continue
            not_after = key.not_after.seconds if key.HasField("not_after") else 0
            keys.append(PublishedKey(key.kid, public_key, not_after))
        return keys

    async def revocations(self, after_revision: int) -> RevocationBatch:
        from confidant.auth.v1 import auth_service_pb2 as auth_pb

        reply = await self._stub().ListRevocations(
            auth_pb.ListRevocationsRequest(after_revision=after_revision), timeout=self._timeout
        )
        return RevocationBatch(
            revocations=[
                Revocation(r.subject, r.revoked_at.seconds + r.revoked_at.nanos / 1e9, r.revision)
                for r in reply.revocations
            ],
            revision=reply.revision,
            retention_seconds=float(reply.retention_seconds),
            refresh_seconds=reply.refresh_seconds,
        )


def auth_key_fetcher(channel, timeout: float = 3.0) -> AuthFeed:
    """Fetches auth's published keys (and revocations) through ``channel``."""
    return AuthFeed(channel, timeout)


class TokenVerifier:
    def __init__(self, public_keys: dict[str, Ed25519PublicKey], published: PublishedKeys | None = None) -> None:
        # Service tokens: each service's key file, by name.
        self._keys = public_keys
        # People's tokens: auth's published keys, once configured ...
        self.published = published
        # ... and auth's revocations (a background loop refreshes them; see GrpcService).
        self.revocations: Revocations | None = None

    @classmethod
    def from_keys_dir(cls, keys_dir: Path, published: PublishedKeys | None = None) -> TokenVerifier:
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(keys_dir.glob("*.pub")):
            key = serialization.load_pem_public_key(path.read_bytes())
            if isinstance(key, Ed25519PublicKey):
                keys[path.stem] = key
        if USER_TOKEN_ISSUER not in keys:
            raise FileNotFoundError(f"No public key for the auth service in {keys_dir}.")
        return cls(keys, published)

    def use_published_keys(
        self, fetch: KeyFetcher, refresh_seconds: float = 300.0, min_refresh_seconds: float = 5.0
    ) -> PublishedKeys:
        """Verify people's tokens against auth's published keys from now on.

        With auth's feed (``auth_key_fetcher``) auth's revocations are followed too:
        a verifier that trusts auth's keys must also honour what auth revoked.
        """
        self.published = PublishedKeys(fetch, refresh_seconds, min_refresh_seconds)
        if isinstance(fetch, AuthFeed):
            self.use_revocations(fetch.revocations)
        return self.published

    def use_revocations(
        self, fetch: RevocationFetcher, refresh_seconds: float = DEFAULT_REVOCATION_REFRESH_SECONDS
    ) -> Revocations:
        """Refuse the tokens of revoked subjects (kept fresh by ``Revocations.run``)."""
        self.revocations = Revocations(fetch, refresh_seconds)
        return self.revocations

    async def authenticate(self, token: str) -> Principal:
        """``verify``, after refreshing auth's published keys when the token needs it."""
        if self.published is not None:
            try:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(token, options={"verify_signature": False})
            except jwt.PyJWTError as exc:
                raise Unauthenticated("The access token is malformed.") from exc
            kid = header.get("kid")
            if isinstance(kid, str) and claims.get("rol") != "service":
                await self.published.ensure(kid)
        return self.verify(token)

    def _user_key(self, kid: str) -> Ed25519PublicKey | None:
        if self.published is None or not self.published.loaded:
            # No published keys (yet): the key file auth imports as its first signing key.
            return self._keys.get(kid) if kid == USER_TOKEN_ISSUER else None
        found = self.published.get(kid)
        if found is None or (found.not_after and found.not_after < time.time() - _LEEWAY_SECONDS):
            return None
        return found.public_key

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The access token is malformed.") from exc
        kid = header.get("kid")
        if not isinstance(kid, str) or not isinstance(unverified, dict):
            raise Unauthenticated("The access token was signed by an unknown key.")
        is_service = unverified.get("rol") == "service"
        if is_service:
            key, issuer = self._keys.get(kid), kid
        else:
            # People's tokens: the issuer is always auth, the kid names one of its keys.
            key, issuer = self._user_key(kid), unverified.get("iss")
            if issuer != USER_TOKEN_ISSUER and key is None and kid in self._keys:
                key, issuer = self._keys[kid], kid
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
        if self.revocations is not None:
            revoked_at = self.revocations.revoked_at(subject)
            # Leeway: a token minted while the revocation was being committed is refused too.
            if revoked_at is not None and claims["iat"] <= revoked_at + _LEEWAY_SECONDS:
                raise Unauthenticated("This access has been revoked.")
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
