"""Auth's domain logic and authorization: who may do what, and the rules.

Handlers take and return plain values and the storage dataclasses; the
servicer turns them into protos. Authorization is checked here, first, before
any argument that could reveal whether something exists is looked up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import math
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from services.auth.config import AuthConfig
from services.auth.passwords import Passwords, check_password_rules
from services.auth.profiles import (
    email_lookup_key,
    normalize_email,
    normalize_phone,
    normalize_time_zone,
    parse_date_of_birth,
    today_in,
)
from services.auth.storage import (
    PRACTICE_FIELDS,
    AccountNotice,
    AuditEvent,
    AuthStorage,
    DirectoryQuery,
    FailureOutcome,
    Practice,
    Redemption,
    SessionRecord,
    User,
)
from services.common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from services.common.identity import (
    SERVICE_ACCOUNT,
    STAFF_ROLES,
    Principal,
    caller,
    require_scope,
    require_service,
    require_staff,
    require_user,
)
from services.common.tokens import TokenSigner

log = logging.getLogger("confidant.auth")

SIGN_IN_FAILED = "Email or password is incorrect."
SESSION_ENDED = "Your session has ended."
INVALID_PAGE_TOKEN = "The page token is not valid."


def _minutes(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def throttled_message(seconds: float) -> str:
    """The one answer while an account (or an email no account has) refuses attempts.

    Known and unknown emails are counted alike, so the same history gives the same sentence
    whether or not the account exists, and the right password gets it as well as a wrong one.
    A password reset still works meanwhile (a used reset link lifts the throttle).
    """
    return (
        f"Too many sign-in attempts. Try again in {_minutes(seconds)}, "
        "or choose a new password now with “Forgot password?”."
    )


def address_throttled_message(seconds: float) -> str:
    """The answer while a network address is over its limit: it covers every account, and the
    password-reset form too, so it offers no way round it, only when to come back."""
    return f"Too many attempts from your network. Try again in {_minutes(seconds)}."

# Roles CreateUser may add; owners come with their practice, service accounts elsewhere.
CREATABLE_ROLES = frozenset({"clinician", "team_member", "client"})
# Roles the directory lists; never service accounts.
DIRECTORY_ROLES = ("owner", "clinician", "team_member", "client")

MAX_NAME_LENGTH = 200
# Sign-in looks up what was typed; nothing longer than an address can be is looked up at all.
MAX_LOOKUP_EMAIL_LENGTH = 254
MAX_GET_USERS = 500
MAX_CONVERSATION_ID_LENGTH = 128
MAX_SEARCH_QUERY_LENGTH = 200
MAX_SEARCH_WORDS = 8
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# The scopes a practice system's service account needs to read and to change clients.
SCOPE_CLIENTS_READ = "clients.read"
SCOPE_CLIENTS_WRITE = "clients.write"
# Our tokens are 43 characters; anything far longer is not one of ours.
MAX_TOKEN_LENGTH = 256
MAX_CLIENT_ADDRESS_LENGTH = 64


@dataclass(frozen=True)
class SessionView:
    """A session as the caller sees it: when it ends if nothing else happens."""

    kind: str
    expires_at: datetime
    conversation_id: str


@dataclass(frozen=True)
class SignedIn:
    session_token: str
    user: User
    session: SessionView


@dataclass(frozen=True)
class Authenticated:
    user: User
    session: SessionView
    access_token: str
    access_token_expires_at: datetime


@dataclass(frozen=True)
class MagicLink:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class RedeemResult:
    outcome: str  # "redeemed" | "expired" | "already_used" | "unknown"
    conversation_id: str = ""
    session_token: str = ""
    user: User | None = None
    session: SessionView | None = None


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _new_token() -> str:
    # 256 bits of randomness; only its sha256 is stored.
    return secrets.token_urlsafe(32)


def _parse_id(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"The {what} is not a valid id.") from None


def _required_name(value: str, what: str) -> str:
    name = " ".join(value.split())
    if not name:
        raise InvalidArgument(f"The {what} is required.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"The {what} must be at most {MAX_NAME_LENGTH} characters long.")
    return name


def _search_words(query: str) -> list[str]:
    if len(query) > MAX_SEARCH_QUERY_LENGTH:
        raise InvalidArgument(f"The search must be at most {MAX_SEARCH_QUERY_LENGTH} characters long.")
    return query.split()[:MAX_SEARCH_WORDS]


def _page_limit(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument("The page size must not be negative.")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _page_token(user_id: str, rank: int) -> str:
    """The opaque token of the directory page after this row: its rank and id only, never a
    name (tokens end up in URLs); storage reads the row's name in the page's own statement."""
    return base64.urlsafe_b64encode(uuid.UUID(user_id).bytes + bytes([rank])).decode().rstrip("=")


def _after(token: str, words: int) -> tuple[int, str] | None:
    """The (rank, user id) a page token continues after; a rank the query cannot have is refused."""
    if not token:
        return None
    try:
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if len(raw) != 17 or raw[16] > words:
            raise ValueError("not a page token of this search")
        return raw[16], str(uuid.UUID(bytes=raw[:16]))
    except (ValueError, TypeError, binascii.Error):
        raise InvalidArgument(INVALID_PAGE_TOKEN) from None


def _client_manager(scope: str) -> Principal:
    """Staff signed in with a full session, or a service account of the practice holding ``scope``."""
    if caller().is_service_account:
        return require_scope(scope)
    principal = require_staff()
    if principal.session_kind != "full":
        raise PermissionDenied("Sign in with your email and password to do this.")
    return principal


def _client_address(value: str) -> dict:
    address = value.strip()[:MAX_CLIENT_ADDRESS_LENGTH]
    return {"client_address": address} if address else {}


class AuthHandlers:
    def __init__(
        self,
        config: AuthConfig,
        storage: AuthStorage,
        passwords: Passwords,
        signer: TokenSigner,
        notice_queued: Callable[[], None] = lambda: None,
        client_created: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = config
        # Called after a new client (and its client-created outbox row) is committed, to relay it at once.
        self._client_created = client_created
        # Called after a lock email is committed to the outbox, to relay it at once.
        self._notice_queued = notice_queued
        self._storage = storage
        self._passwords = passwords
        self._signer = signer
        # Set by MfaHandlers; after a right password it returns a pending
        # second-factor sign-in instead of a session (or None for a session now).
        self.second_factor: Callable[[User, dict], Awaitable[object | None]] | None = None
        # Whether this person's sign-in needs a second factor (set by MfaHandlers too).
        self.requires_second_factor: Callable[[User], Awaitable[bool]] | None = None

    # -- practices and users -----------------------------------------------------

    def _email(self, value: str) -> str:
        """An email address a person typed, checked and normalized (``.test`` domains in development only)."""
        return normalize_email(value, allow_test_domains=self._config.common.development)

    def _check_password(self, password: str, email: str, display_name: str) -> None:
        check_password_rules(
            password,
            email=email,
            display_name=display_name,
            min_length=self._config.password_min_length,
            max_length=self._config.password_max_length,
        )

    async def create_practice(
        self, name: str, owner_email: str, owner_display_name: str, owner_password: str, time_zone: str = ""
    ) -> tuple[Practice, User]:
        principal = require_service("web")
        name = _required_name(name, "practice name")
        time_zone = normalize_time_zone(time_zone) if time_zone.strip() else self._config.default_time_zone
        email = self._email(owner_email)
        display_name = _required_name(owner_display_name, "owner's name")
        self._check_password(owner_password, email, display_name)
        password_hash = await self._passwords.hash(owner_password)
        practice_id, owner_id = str(uuid.uuid4()), str(uuid.uuid4())
        owner = User(owner_id, practice_id, "owner", email, display_name, has_password=True)
        event = AuditEvent(
            actor=principal.subject,
            action="practice.create",
            outcome="success",
            target=practice_id,
            practice_id=practice_id,
            detail={"owner_user_id": owner_id},
        )
        practice, owner = await self._storage.create_practice(
            Practice(practice_id, name, time_zone), owner, password_hash, event
        )
        log.info("practice created", extra={"fields": {"practice_id": practice_id, "user_id": owner_id}})
        return practice, owner

    async def get_practice(self, practice_id: str) -> Practice:
        """The practice's profile: for our services, and for its own staff, clients (whatever their
        session) and service accounts; anyone else's practice is refused before it is looked up."""
        principal = caller()
        practice_id = _parse_id(practice_id, "practice id")
        if not principal.is_service:
            require_user(*STAFF_ROLES, "client", SERVICE_ACCOUNT)
            if principal.practice_id != practice_id:
                raise PermissionDenied("You can only see your own practice.")
        practice = await self._storage.get_practice(practice_id)
        if practice is None:
            raise NotFound("This practice does not exist.")
        return practice

    async def update_practice(self, wanted: Practice, update_mask: Sequence[str]) -> Practice:
        """Change the owner's practice's profile fields named in ``update_mask`` (empty: all of
        them), audited as ``practice.update`` with the names of the fields that changed."""
        principal = require_user("owner")
        if principal.session_kind != "full":
            raise PermissionDenied("Sign in with your email and password to do this.")
        paths = list(dict.fromkeys(update_mask)) or list(PRACTICE_FIELDS)
        unknown = [path for path in paths if path not in PRACTICE_FIELDS]
        if unknown:
            raise InvalidArgument(
                f"The update mask names {unknown[0]!r}; a practice's fields are {', '.join(PRACTICE_FIELDS)}."
            )
        checks: dict[str, Callable[[str], str]] = {
            "name": lambda value: _required_name(value, "practice name"),
            "time_zone": normalize_time_zone,
            "contact_phone": normalize_phone,
            "contact_email": lambda value: self._email(value) if value.strip() else "",
        }
        changes = {path: checks[path](getattr(wanted, path)) for path in paths}

        def event(changed: list[str]) -> AuditEvent:
            # Field names only: a practice's phone and email are not for the audit trail.
            return AuditEvent(
                actor=principal.subject,
                action="practice.update",
                outcome="success",
                target=principal.practice_id,
                practice_id=principal.practice_id,
                detail={"fields": changed},
            )

        practice = await self._storage.update_practice(principal.practice_id, changes, event)
        if practice is None:
            raise NotFound("This practice does not exist.")
        log.info("practice updated", extra={"fields": {"practice_id": principal.practice_id}})
        return practice

    async def create_user(
        self, practice_id: str, role: str, email: str, display_name: str, password: str
    ) -> User:
        principal = caller()
        if principal.is_service:
            require_service("web")
        else:
            require_user("owner")
        practice_id = _parse_id(practice_id, "practice id")
        if not principal.is_service and principal.practice_id != practice_id:
            raise PermissionDenied("You can only add people to your own practice.")
        if role not in CREATABLE_ROLES:
            raise InvalidArgument("A user can be added as a clinician, a team member or a client.")
        email = self._email(email)
        display_name = _required_name(display_name, "name")
        password_hash = None
        if password:
            self._check_password(password, email, display_name)
            password_hash = await self._passwords.hash(password)
        user = User(
            str(uuid.uuid4()), practice_id, role, email, display_name, has_password=password_hash is not None
        )
        event = AuditEvent(
            actor=principal.subject,
            action="user.create",
            outcome="success",
            target=user.user_id,
            practice_id=practice_id,
            detail={"role": role},
        )
        user = await self._storage.create_user(user, password_hash, event)
        if role == "client":
            self._client_created()
        return user

    @staticmethod
    def _visible(principal: Principal, user: User) -> bool:
        """Whether ``principal`` may read ``user``'s profile."""
        if principal.is_service:
            return True
        if user.practice_id != principal.practice_id:
            return False
        if principal.is_client:
            return user.user_id == principal.user_id or user.role in STAFF_ROLES
        return True  # staff and service accounts: everyone in their practice

    async def _audit_client_reads(self, principal: Principal, action: str, users: Sequence[User]) -> None:
        """One row per client shown: a client's profile is PHI (being someone's client is), and each
        row names its client as its target, so the owner's audit page finds it by client."""
        await self._storage.record_audits(
            [
                AuditEvent(
                    actor=principal.subject,
                    action=action,
                    outcome="success",
                    target=user.user_id,
                    practice_id=user.practice_id,
                )
                for user in users
                if user.role == "client"
            ]
        )

    async def get_users(self, user_ids: Sequence[str]) -> list[User]:
        principal = caller()
        if not principal.is_service:
            require_user()
        if len(user_ids) > MAX_GET_USERS:
            raise InvalidArgument(f"Ask for at most {MAX_GET_USERS} users at a time.")
        wanted = list(dict.fromkeys(_parse_id(value, "user id") for value in user_ids))
        if not wanted:
            return []
        found = {u.user_id: u for u in await self._storage.get_users(wanted) if self._visible(principal, u)}
        missing = [user_id for user_id in wanted if user_id not in found]
        if missing:
            await self._storage.record_audit(
                AuditEvent(
                    actor=principal.subject,
                    action="users.read",
                    outcome="not_found",
                    practice_id=principal.practice_id,
                    detail={"user_ids": wanted, "missing": len(missing)},
                )
            )
            if len(wanted) == 1:
                raise NotFound("The requested user was not found.")
            raise NotFound(f"{len(missing)} of the {len(wanted)} requested users were not found.")
        users = [found[user_id] for user_id in wanted]
        await self._audit_client_reads(principal, "users.read", users)
        return users

    async def _directory_page(
        self, principal: Principal, action: str, roles: Sequence[str], query: str, page_size: int, page_token: str
    ) -> tuple[list[User], str]:
        """A page of SearchDirectory or ListClients: word starts first, then name order (storage.DirectoryQuery)."""
        words = _search_words(query)
        limit = _page_limit(page_size)
        after = _after(page_token, len(words))
        rows = await self._storage.directory_page(
            DirectoryQuery(principal.practice_id, roles, words, after, limit + 1)
        )
        if rows is None:
            raise InvalidArgument(INVALID_PAGE_TOKEN)
        page = rows[:limit]
        next_token = _page_token(page[-1][0].user_id, page[-1][1]) if len(rows) > limit else ""
        users = [user for user, _ in page]
        await self._audit_client_reads(principal, action, users)
        return users, next_token

    async def search_directory(
        self, query: str, roles: Sequence[str], page_size: int, page_token: str = ""
    ) -> tuple[list[User], str]:
        """A page of the practice's clients and staff matching every word of ``query``, and the next page's token."""
        principal = require_staff()
        if any(role not in DIRECTORY_ROLES for role in roles):
            raise InvalidArgument("The directory lists owners, clinicians, team members and clients only.")
        return await self._directory_page(
            principal, "directory.search", sorted(set(roles)) or DIRECTORY_ROLES, query, page_size, page_token
        )

    # -- clients (staff, and practice systems with the clients.* scopes) ------------------

    async def _date_of_birth(self, practice_id: str, value: str) -> str:
        """A date of birth as stored ("YYYY-MM-DD", or empty): not after today where the practice is."""
        if not value.strip():
            return ""
        practice = await self._storage.get_practice(practice_id)
        today = today_in(practice.time_zone if practice else self._config.default_time_zone)
        born = parse_date_of_birth(value, today)
        return born.isoformat() if born else ""

    async def create_client(self, email: str, display_name: str, date_of_birth: str = "") -> User:
        """Add a client to the caller's practice, without a password.

        The portal invitation (and secure messaging, where the practice enables new
        clients automatically) comes from messaging, told through the client-created outbox.
        """
        principal = _client_manager(SCOPE_CLIENTS_WRITE)
        email = self._email(email)
        display_name = _required_name(display_name, "name")
        born = await self._date_of_birth(principal.practice_id, date_of_birth)
        client = User(
            str(uuid.uuid4()), principal.practice_id, "client", email, display_name, has_password=False,
            date_of_birth=born,
        )
        event = AuditEvent(
            actor=principal.subject,
            action="client.create",
            outcome="success",
            target=client.user_id,
            practice_id=principal.practice_id,
            detail={"via": principal.role},
        )
        client = await self._storage.create_user(client, None, event)
        self._client_created()
        log.info("client created", extra={"fields": {"practice_id": principal.practice_id, "user_id": client.user_id}})
        return client

    async def update_client(self, client_id: str, email: str, display_name: str, date_of_birth: str = "") -> User:
        """Replace a client's whole profile (an empty date of birth: not known); another practice's
        client, or anyone not a client, is not found."""
        principal = _client_manager(SCOPE_CLIENTS_WRITE)
        client_id = _parse_id(client_id, "client id")
        email = self._email(email)
        display_name = _required_name(display_name, "name")
        born = await self._date_of_birth(principal.practice_id, date_of_birth)

        def event(changed: list[str]) -> AuditEvent:
            # Field names only: the old and new values are PHI.
            return AuditEvent(
                actor=principal.subject,
                action="client.update",
                outcome="success",
                target=client_id,
                practice_id=principal.practice_id,
                detail={"fields": changed, "via": principal.role},
            )

        client = await self._storage.update_client(
            principal.practice_id, client_id, email, display_name, born, event
        )
        if client is None:
            raise NotFound("No such client.")
        log.info("client updated", extra={"fields": {"practice_id": principal.practice_id, "user_id": client_id}})
        return client

    async def list_clients(self, query: str, page_size: int, page_token: str) -> tuple[list[User], str]:
        """A page of the practice's clients, each matching every word of ``query`` (word starts
        first, then name order), and the next page's token."""
        principal = _client_manager(SCOPE_CLIENTS_READ)
        return await self._directory_page(principal, "clients.list", ("client",), query, page_size, page_token)

    # -- sessions ----------------------------------------------------------------------

    def _view(self, record: SessionRecord) -> SessionView:
        if record.kind == "full":
            idle_deadline = record.last_seen_at + timedelta(seconds=self._config.session_idle_seconds)
            expires_at = min(record.expires_at, idle_deadline)
        else:
            expires_at = record.expires_at
        return SessionView(record.kind, expires_at, record.conversation_id)

    async def refuse_after_failure(
        self, error: DomainError, account_key: str, user: User | None, actor: str, practice_id: str, detail: dict
    ) -> NoReturn:
        """Count a wrong password (or code) and raise ``error`` for it, unless this failure throttled
        the account: then the throttled answer, which every attempt gets until the delay or lock ends.

        Answering the throttling failure itself as throttled is what keeps the answers from
        alternating: a person who retries after a short delay ran out, with a wrong password
        again, is throttled again at once, and hears "Too many" again rather than "incorrect".
        """
        outcome = await self._sign_in_failed(account_key, user, actor, practice_id, detail)
        if outcome.block_seconds:
            raise ResourceExhausted(throttled_message(outcome.block_seconds))
        raise error

    async def _sign_in_failed(
        self, account_key: str, user: User | None, actor: str, practice_id: str, detail: dict
    ) -> FailureOutcome:
        """Count the failure, apply its delay or lock, queue the lock email, audit it all together."""
        lock_minutes = max(1, round(self._config.sign_in_lock_seconds / 60))

        def events(outcome: FailureOutcome) -> list[AuditEvent]:
            extra = {"failures": outcome.failures}
            if outcome.block_seconds and not outcome.locked:
                extra["delay_seconds"] = outcome.block_seconds
            rows = [
                AuditEvent(
                    actor=actor,
                    action="sign_in",
                    outcome="failure",
                    target=user.user_id if user else "",
                    practice_id=practice_id,
                    detail={**detail, **extra},
                )
            ]
            if outcome.locked:
                rows.append(
                    AuditEvent(
                        actor=actor,
                        action="sign_in.lock",
                        outcome="locked",
                        target=user.user_id if user else "",
                        practice_id=practice_id,
                        detail={**detail, "failures": outcome.failures, "lock_seconds": outcome.block_seconds},
                    )
                )
            return rows

        def notice(outcome: FailureOutcome) -> AccountNotice | None:
            if not outcome.locked or user is None:
                return None
            return AccountNotice(0, user.user_id, "locked", lock_minutes)

        outcome = await self._storage.record_sign_in_failure(account_key, self._block, events, notice)
        if outcome.locked:
            log.warning(
                "account locked",
                extra={"fields": {"user_id": user.user_id if user else "", "failures": outcome.failures}},
            )
            if user is not None:
                self._notice_queued()
        return outcome

    def _block(self, failures: int) -> tuple[int, bool]:
        """How long an account refuses attempts after ``failures`` consecutive failures, and whether that is a lock."""
        config = self._config
        if failures >= config.sign_in_lock_after_failures:
            return config.sign_in_lock_seconds, True
        if failures >= config.sign_in_delay_after_failures:
            exponent = failures - config.sign_in_delay_after_failures
            # Capped before exponentiation so a large configured gap cannot build a huge number.
            delay = config.sign_in_max_delay_seconds if exponent >= 31 else 2**exponent
            return min(delay, config.sign_in_max_delay_seconds), False
        return 0, False

    async def address_throttle(self, client_address: str) -> int:
        """Count an attempt from this address; the seconds until its window ends when it is over
        the per-address limit, else 0."""
        address = client_address.strip()[:MAX_CLIENT_ADDRESS_LENGTH]
        if not address:
            return 0  # nothing to key on (web always sends the address)
        attempts, seconds_left = await self._storage.count_address_attempt(
            address, self._config.sign_in_address_window_seconds
        )
        return max(1, seconds_left) if attempts > self._config.sign_in_address_limit else 0

    def lookup_email(self, value: str) -> str:
        """How sign-in and password reset look an address up: as stored, and never refused."""
        return email_lookup_key(value, allow_test_domains=self._config.common.development)

    async def sign_in(self, email: str, password: str, client_address: str) -> SignedIn:
        principal = require_service("web")
        if not email.strip() or not password:
            raise InvalidArgument("Enter your email and password.")
        email = self.lookup_email(email)
        detail = {**_client_address(client_address), "via": principal.service_name}
        email_sha256 = hashlib.sha256(email.encode()).hexdigest()
        found = await self._storage.user_credentials(email) if len(email) <= MAX_LOOKUP_EMAIL_LENGTH else None
        # Unknown emails are counted and throttled like accounts, under the email's hash.
        if found is None:
            account_key, actor, practice_id = f"email:{email_sha256}", "unknown", ""
            detail["email_sha256"] = email_sha256
        else:
            account_key, actor, practice_id = found[0].user_id, found[0].user_id, found[0].practice_id
        target = actor if found else ""

        # Throttled: refused before the password is looked at, so a locked account
        # never reveals whether it was right, and known and unknown answer alike.
        reason, message = "", ""
        if wait := await self.address_throttle(client_address):
            reason, message = "address", address_throttled_message(wait)
        else:
            state = await self._storage.throttle_state(account_key)
            if state.blocked:
                reason = "locked" if state.locked else "delayed"
                message = throttled_message(state.seconds_left)
        if reason:
            await self._storage.record_audit(
                AuditEvent(
                    actor=actor,
                    action="sign_in",
                    outcome="throttled",
                    target=target,
                    practice_id=practice_id,
                    detail={**detail, "reason": reason},
                )
            )
            log.info("sign-in throttled", extra={"fields": {"reason": reason, "user_id": target}})
            raise ResourceExhausted(message)

        password_hash = found[1] if found else None
        # Over-long passwords are never valid; check a short one so the time spent matches.
        candidate = password if len(password) <= self._config.password_max_length else ""
        ok = await self._passwords.verify(password_hash, candidate) and bool(candidate)
        if found is None or not ok:
            await self.refuse_after_failure(
                Unauthenticated(SIGN_IN_FAILED), account_key, found[0] if found else None, actor, practice_id, detail
            )
        user, password_hash = found
        if password_hash and self._passwords.needs_rehash(password_hash):
            await self._storage.update_password_hash(user.user_id, await self._passwords.hash(password))
        # A second factor (or its enrolment) comes first; the failure count
        # stays until it succeeds, so wrong codes keep counting toward the lock.
        if self.second_factor is not None:
            pending = await self.second_factor(user, detail)
            if pending is not None:
                return pending  # services.auth.mfa.SecondFactorPending
        await self._storage.clear_sign_in_failures(account_key)
        token = _new_token()
        record = await self._storage.create_full_session(
            _token_hash(token),
            user.user_id,
            self._config.session_absolute_seconds,
            AuditEvent(
                actor=user.user_id,
                action="sign_in",
                outcome="success",
                target=user.user_id,
                practice_id=user.practice_id,
                detail={**detail, "via": principal.service_name},
            ),
        )
        log.info("signed in", extra={"fields": {"user_id": user.user_id, "practice_id": user.practice_id}})
        return SignedIn(token, user, self._view(record))

    async def authenticate_session(self, session_token: str, background: bool = False) -> Authenticated:
        """The session's person and a fresh access token; ``background`` checks are not activity."""
        require_service("web")
        if not session_token or len(session_token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(SESSION_ENDED)
        found = await self._storage.touch_session(
            _token_hash(session_token), self._config.session_idle_seconds, active=not background
        )
        if found is None:
            raise Unauthenticated(SESSION_ENDED)
        user, record = found
        view = self._view(record)
        seconds_left = int((view.expires_at - record.now).total_seconds())
        if seconds_left < 1:
            raise Unauthenticated(SESSION_ENDED)
        principal = Principal(
            subject=user.user_id,
            role=user.role,
            practice_id=user.practice_id,
            session_kind=record.kind,
            conversation_id=record.conversation_id if record.kind == "magic_link" else "",
        )
        # The access token never outlives the session it was issued for.
        access_token, expires = self._signer.user_token(
            principal, min(self._config.access_token_ttl_seconds, seconds_left)
        )
        expires_at = datetime.fromtimestamp(expires, tz=record.now.tzinfo)
        return Authenticated(user, view, access_token, expires_at)

    async def sign_out(self, session_token: str) -> None:
        principal = require_service("web")
        if not session_token or len(session_token) > MAX_TOKEN_LENGTH:
            return  # nothing to revoke: signing out is idempotent

        await self.end_session(session_token, reason="sign_out", via=principal.service_name)

    async def end_session(self, session_token: str, reason: str, via: str = "") -> None:
        """Revoke a session and audit why (sign-out, or a session that must not stand)."""

        def event(user: User) -> AuditEvent:
            return AuditEvent(
                actor=user.user_id,
                action="sign_out" if reason == "sign_out" else "session.end",
                outcome="success",
                target=user.user_id,
                practice_id=user.practice_id,
                detail={"via": via} if reason == "sign_out" else {"reason": reason},
            )

        user = await self._storage.revoke_session(_token_hash(session_token), event)
        if user is not None:
            log.info("session ended", extra={"fields": {"user_id": user.user_id, "reason": reason}})

    # -- magic links -----------------------------------------------------------------------

    async def create_magic_link(self, user_id: str, conversation_id: str) -> MagicLink:
        principal = require_service("notify")
        user_id = _parse_id(user_id, "user id")
        conversation_id = conversation_id.strip()
        if not conversation_id:
            raise InvalidArgument("A magic link needs the conversation it was sent for.")
        if len(conversation_id) > MAX_CONVERSATION_ID_LENGTH:
            raise InvalidArgument("The conversation id is too long.")
        users = await self._storage.get_users([user_id])
        if not users:
            raise NotFound("This user does not exist.")
        user = users[0]
        if user.role != "client":
            raise FailedPrecondition("Quick sign-in links are only for clients.")
        token = _new_token()
        expires_at = await self._storage.create_magic_link(
            _token_hash(token),
            user.user_id,
            conversation_id,
            self._config.magic_link_ttl_seconds,
            AuditEvent(
                actor=principal.subject,
                action="magic_link.create",
                outcome="success",
                target=user.user_id,
                practice_id=user.practice_id,
                detail={"conversation_id": conversation_id},
            ),
        )
        return MagicLink(token, expires_at)

    async def inspect_magic_link(self, token: str) -> tuple[str, str]:
        """The link's outcome if redeemed now ("valid", "expired", "already_used", "unknown") and its conversation."""
        require_service("web")
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return "unknown", ""
        state = await self._storage.inspect_magic_link(_token_hash(token))
        if state is None:
            return "unknown", ""
        if state.used:
            return "already_used", state.conversation_id
        if state.expired:
            return "expired", state.conversation_id
        return "valid", state.conversation_id

    async def redeem_magic_link(self, token: str, client_address: str) -> RedeemResult:
        principal = require_service("web")
        detail = {**_client_address(client_address), "via": principal.service_name}
        if wait := await self.address_throttle(client_address):
            await self._storage.record_audit(
                AuditEvent(
                    actor="unknown",
                    action="magic_link.redeem",
                    outcome="throttled",
                    detail={**detail, "reason": "address"},
                )
            )
            log.info("magic-link redemption throttled", extra={"fields": {"reason": "address"}})
            raise ResourceExhausted(address_throttled_message(wait))
        if not token or len(token) > MAX_TOKEN_LENGTH:
            await self._storage.record_audit(
                AuditEvent(actor="unknown", action="magic_link.redeem", outcome="unknown", detail=detail)
            )
            return RedeemResult("unknown")
        session_token = _new_token()

        def event(result: Redemption) -> AuditEvent:
            return AuditEvent(
                actor=result.user_id or "unknown",
                action="magic_link.redeem",
                outcome=result.outcome,
                target=result.user_id,
                practice_id=result.practice_id,
                detail={**detail, "conversation_id": result.conversation_id}
                if result.conversation_id
                else detail,
            )

        result = await self._storage.redeem_magic_link(_token_hash(token), _token_hash(session_token), event)
        if result.outcome != "redeemed":
            return RedeemResult(result.outcome, result.conversation_id)
        assert result.user is not None and result.session is not None
        log.info("magic link redeemed", extra={"fields": {"user_id": result.user.user_id}})
        return RedeemResult(
            "redeemed", result.conversation_id, session_token, result.user, self._view(result.session)
        )

    # -- housekeeping ------------------------------------------------------------------------

    async def purge_loop(self) -> None:
        """Delete long-ended sessions and links, hourly by default."""
        while True:
            sessions, links = await self._storage.purge_expired(
                self._config.session_retention_seconds, self._config.magic_link_retention_seconds
            )
            if sessions or links:
                log.info("purged", extra={"fields": {"sessions": sessions, "magic_links": links}})
            await self._storage.purge_throttling(self._config.sign_in_failure_memory_seconds)
            await asyncio.sleep(self._config.purge_interval_seconds)
