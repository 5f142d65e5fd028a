"""Client Portal credentials: invitation and password-reset links, and password changes.

A link's token (256 bits) is shown once, in the email; auth stores only its
sha256. The email goes through the account-notice outbox (services/auth/notices.py):
the token waits in the outbox row only until notify has accepted the notice.

- InviteUser: a 24-hour link for a person who has no password yet.
- RequestPasswordReset: a 1-hour link, answered identically whether or not the
  email belongs to an account.
- SetPasswordWithLink: consumes the link exactly once (a conditional UPDATE),
  sets the password, ends every session of the account and opens a new one.
- ChangePassword: checks the current password, ends the account's other sessions.

A new link of the same purpose for the same person ends the older unused ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import grpc
import psycopg
from confidant.auth.v1 import auth_service_pb2 as pb
from psycopg import sql
from psycopg.rows import class_row, dict_row
from psycopg_pool import AsyncConnectionPool

from services.auth.config import AuthConfig
from services.auth.handlers import (
    AuthHandlers,
    SignedIn,
    _new_token,
    _token_hash,
    address_throttled_message,
    throttled_message,
)
from services.auth.passwords import Passwords, check_password_rules
from services.auth.profiles import normalize_email
from services.auth.storage import (
    _USER_COLUMNS,
    AuditEvent,
    AuthStorage,
    SessionRecord,
    User,
    _record,
    _session,
    _user,
)
from services.common.convert import ROLE_TO_PB
from services.common.convert import timestamp as _timestamp
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from services.common.identity import STAFF_ROLES, caller, require_service, require_staff

log = logging.getLogger("confidant.auth.credentials")

INVITATION = "invitation"
PASSWORD_RESET = "password_reset"
PURPOSES = (INVITATION, PASSWORD_RESET)

LINK_ENDED = "This link has expired or was already used. Ask for a new one with “Forgot password?”."
SESSION_ENDED = "Your session has ended."
WRONG_CURRENT_PASSWORD = "The current password is incorrect."
CONTAINS_PRACTICE_NAME = "The password must not contain the practice's name."

MAX_TOKEN_LENGTH = 256
MAX_CLIENT_ADDRESS_LENGTH = 64


def _address(value: str) -> str:
    return value.strip()[:MAX_CLIENT_ADDRESS_LENGTH]


# ---------------------------------------------------------------- storage


@dataclass(frozen=True)
class LinkState:
    user_id: str
    practice_id: str
    purpose: str
    used: bool
    expired: bool


@dataclass(frozen=True)
class LinkUse:
    user: User
    purpose: str
    session: SessionRecord
    sessions_revoked: int


class CredentialStorage:
    """The SQL of credential links and password changes."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def create_link(
        self, token_hash: bytes, user_id: str, purpose: str, ttl_seconds: int, token: str, event: AuditEvent
    ) -> tuple[datetime, int]:
        """Store a new link (ending older unused ones of the purpose) and queue its email, atomically.

        Returns the link's expiry and how many older links it superseded.
        """
        async with self._pool.connection() as conn, conn.transaction():
            # One issuer at a time per person, so two concurrent requests leave one live link.
            cur = await conn.execute(
                "SELECT deactivated_at IS NULL FROM users WHERE user_id = %s FOR UPDATE", (user_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound("This user does not exist.")
            if not row[0]:
                raise FailedPrecondition("This person was deactivated; reactivate them first.")
            cur = await conn.execute(
                "UPDATE credential_links SET expires_at = now()"
                " WHERE user_id = %s AND purpose = %s AND used_at IS NULL AND expires_at > now()",
                (user_id, purpose),
            )
            superseded = cur.rowcount
            # Their emails, if not yet handed over, would only carry dead links.
            await conn.execute(
                "DELETE FROM account_notices WHERE user_id = %s AND kind = %s AND sent_at IS NULL",
                (user_id, purpose),
            )
            try:
                cur = await conn.execute(
                    "INSERT INTO credential_links (token_hash, user_id, purpose, expires_at)"
                    " VALUES (%s, %s, %s, now() + make_interval(secs => %s)) RETURNING expires_at",
                    (token_hash, user_id, purpose, ttl_seconds),
                )
            except psycopg.errors.ForeignKeyViolation:
                raise NotFound("This user does not exist.") from None
            (expires_at,) = await cur.fetchone()
            await conn.execute(
                "INSERT INTO account_notices (user_id, kind, link_token) VALUES (%s, %s, %s)",
                (user_id, purpose, token),
            )
            await _record(conn, event)
        return expires_at, superseded

    async def link_state(self, token_hash: bytes) -> LinkState | None:
        async with self._pool.connection() as conn:
            return await self._link_state(conn, token_hash)

    @staticmethod
    async def _link_state(conn: psycopg.AsyncConnection, token_hash: bytes) -> LinkState | None:
        cur = conn.cursor(row_factory=class_row(LinkState))
        await cur.execute(
            # A deactivated person's links are over, like expired ones.
            "SELECT c.user_id::text AS user_id, u.practice_id::text AS practice_id, c.purpose,"
            " c.used_at IS NOT NULL AS used,"
            " c.expires_at <= now() OR u.deactivated_at IS NOT NULL AS expired"
            " FROM credential_links c JOIN users u ON u.user_id = c.user_id WHERE c.token_hash = %s",
            (token_hash,),
        )
        return await cur.fetchone()

    async def use_link(
        self,
        token_hash: bytes,
        password_hash: str,
        session_hash: bytes,
        absolute_seconds: int,
        event: Callable[[LinkUse], AuditEvent],
    ) -> LinkUse | None:
        """Consume the link, set the password, end every session, open a new one; None if the link is not live.

        Of concurrent attempts exactly one matches the conditional UPDATE: the others
        wait on its row lock, then see ``used_at`` set and match nothing.
        """
        async with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "UPDATE credential_links SET used_at = now()"
                " WHERE token_hash = %s AND used_at IS NULL AND expires_at > now()"
                "   AND user_id IN (SELECT user_id FROM users WHERE deactivated_at IS NULL)"
                " RETURNING user_id::text AS user_id, purpose",
                (token_hash,),
            )
            link = await cur.fetchone()
            if link is None:
                return None
            user_id = link["user_id"]
            # Any other outstanding link of this person is now pointless.
            await cur.execute(
                "UPDATE credential_links SET expires_at = now()"
                " WHERE user_id = %s AND used_at IS NULL AND expires_at > now()",
                (user_id,),
            )
            await cur.execute("UPDATE users SET password_hash = %s WHERE user_id = %s", (password_hash, user_id))
            await cur.execute(
                "UPDATE sessions SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL", (user_id,)
            )
            revoked = cur.rowcount
            # Whoever proves control of the mailbox is no longer locked out.
            await cur.execute("DELETE FROM sign_in_throttle WHERE account_key = %s", (user_id,))
            await cur.execute(
                "INSERT INTO sessions (session_hash, user_id, kind, expires_at)"
                " VALUES (%s, %s, 'full', now() + make_interval(secs => %s))"
                " RETURNING kind, conversation_id, last_seen_at, expires_at, now() AS now",
                (session_hash, user_id, absolute_seconds),
            )
            session = _session(await cur.fetchone())
            await cur.execute(
                sql.SQL("SELECT {} FROM users u WHERE u.user_id = %s").format(_USER_COLUMNS), (user_id,)
            )
            user = _user(await cur.fetchone())
            use = LinkUse(user, link["purpose"], session, revoked)
            await _record(conn, event(use))
        return use

    async def change_password(
        self, user_id: str, password_hash: str, keep_session_hash: bytes, event: Callable[[int], AuditEvent]
    ) -> int:
        """Set the password and revoke the account's other sessions; return how many were revoked."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("UPDATE users SET password_hash = %s WHERE user_id = %s", (password_hash, user_id))
            cur = await conn.execute(
                "UPDATE sessions SET revoked_at = now()"
                " WHERE user_id = %s AND revoked_at IS NULL AND session_hash <> %s",
                (user_id, keep_session_hash),
            )
            revoked = cur.rowcount
            # Outstanding reset links were for the old password.
            await conn.execute(
                "UPDATE credential_links SET expires_at = now()"
                " WHERE user_id = %s AND used_at IS NULL AND expires_at > now()",
                (user_id,),
            )
            await conn.execute("DELETE FROM sign_in_throttle WHERE account_key = %s", (user_id,))
            await _record(conn, event(revoked))
        return revoked

    async def recent_link(self, user_id: str, purpose: str, seconds: int) -> bool:
        """Whether a live link of this purpose was created for the person in the last ``seconds``."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM credential_links WHERE user_id = %s AND purpose = %s"
                " AND used_at IS NULL AND expires_at > now() AND created_at > now() - make_interval(secs => %s))",
                (user_id, purpose, seconds),
            )
            (found,) = await cur.fetchone()
        return bool(found)

    async def purge(self, retention_seconds: int) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM credential_links WHERE expires_at < now() - make_interval(secs => %s)",
                (retention_seconds,),
            )
            return cur.rowcount


# ---------------------------------------------------------------- handlers


@dataclass(frozen=True)
class Inspection:
    outcome: str  # "valid" | "expired" | "already_used" | "unknown"
    purpose: str = ""
    user: User | None = None


class CredentialHandlers:
    """Authorization and rules of the credential RPCs.

    ``auth`` is the AuthHandlers instance: its session view, address window and
    failure counting are shared with sign-in, so the same limits apply.
    """

    def __init__(
        self,
        config: AuthConfig,
        storage: AuthStorage,
        links: CredentialStorage,
        passwords: Passwords,
        auth: AuthHandlers,
        notice_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = config
        self._storage = storage
        self._links = links
        self._passwords = passwords
        self._auth = auth
        self._notice_queued = notice_queued

    # -- helpers -------------------------------------------------------------------

    def _ttl(self, purpose: str) -> int:
        if purpose == INVITATION:
            return self._config.invitation_ttl_seconds
        return self._config.password_reset_ttl_seconds

    async def _user(self, user_id: str) -> User | None:
        users = await self._storage.get_users([user_id])
        return users[0] if users else None

    async def _check_rules(self, password: str, user: User) -> None:
        config = self._config
        check_password_rules(
            password,
            email=user.email,
            display_name=user.display_name,
            min_length=config.password_min_length,
            max_length=config.password_max_length,
        )
        practice = await self._storage.get_practice(user.practice_id)
        if practice is not None:
            try:
                check_password_rules(
                    password,
                    email="",
                    display_name=practice.name,
                    min_length=0,
                    max_length=config.password_max_length,
                )
            except InvalidArgument:
                raise InvalidArgument(CONTAINS_PRACTICE_NAME) from None

    async def _throttled(self, client_address: str, action: str, detail: dict) -> None:
        """Count the attempt in the sign-in address window; refuse when over the limit."""
        if wait := await self._auth.address_throttle(client_address):
            await self._storage.record_audit(
                AuditEvent(actor="unknown", action=action, outcome="throttled", detail={**detail, "reason": "address"})
            )
            log.info("credential request throttled", extra={"fields": {"action": action, "reason": "address"}})
            raise ResourceExhausted(address_throttled_message(wait))

    @staticmethod
    def _detail(client_address: str, via: str) -> dict:
        address = _address(client_address)
        return {"client_address": address, "via": via} if address else {"via": via}

    async def _issue(self, user: User, purpose: str, actor: str, detail: dict) -> datetime:
        token = _new_token()
        event = AuditEvent(
            actor=actor,
            action=f"{purpose}.create",
            outcome="success",
            target=user.user_id,
            practice_id=user.practice_id,
            detail=detail,
        )
        expires_at, superseded = await self._links.create_link(
            _token_hash(token), user.user_id, purpose, self._ttl(purpose), token, event
        )
        self._notice_queued()
        log.info(
            "credential link created",
            extra={"fields": {"user_id": user.user_id, "purpose": purpose, "superseded": superseded}},
        )
        return expires_at

    # -- RPCs --------------------------------------------------------------------------

    async def invite_user(self, user_id: str) -> datetime:
        principal = caller()
        if principal.is_service:
            require_service("messaging", "web")
        else:
            require_staff()
        try:
            user_id = str(uuid.UUID(user_id))
        except (ValueError, AttributeError, TypeError):
            raise InvalidArgument("The user id is not a valid id.") from None
        user = await self._user(user_id)
        if user is None or (not principal.is_service and user.practice_id != principal.practice_id):
            raise NotFound("This user does not exist.")
        if user.role == "service_account":
            raise FailedPrecondition("Service accounts do not sign in with a password.")
        if principal.is_service:
            if principal.service_name == "messaging" and user.role != "client":
                raise PermissionDenied("Messaging can only invite clients.")
        elif user.role in STAFF_ROLES and principal.role != "owner":
            raise PermissionDenied("Only the practice owner can invite clinicians and team members.")
        if user.has_password:
            await self._storage.record_audit(
                AuditEvent(
                    actor=principal.subject,
                    action="invitation.create",
                    outcome="has_password",
                    target=user.user_id,
                    practice_id=user.practice_id,
                )
            )
            raise FailedPrecondition(
                "This person already has a password; they can choose a new one with “Forgot password?”."
            )
        return await self._issue(user, INVITATION, principal.subject, {"role": user.role})

    async def inspect_link(self, token: str) -> Inspection:
        require_service("web")
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return Inspection("unknown")
        state = await self._links.link_state(_token_hash(token))
        if state is None:
            return Inspection("unknown")
        if state.used:
            return Inspection("already_used", state.purpose)
        if state.expired:
            return Inspection("expired", state.purpose)
        user = await self._user(state.user_id)
        if user is None:
            return Inspection("unknown")
        return Inspection("valid", state.purpose, user)

    async def set_password_with_link(self, token: str, new_password: str, client_address: str) -> SignedIn:
        """Consume the link, set the password; the new full session."""
        principal = require_service("web")
        detail = self._detail(client_address, principal.service_name)
        await self._throttled(client_address, "credential_link.use", detail)

        async def refuse(outcome: str, state: LinkState | None = None) -> FailedPrecondition:
            await self._storage.record_audit(
                AuditEvent(
                    actor=state.user_id if state else "unknown",
                    action="credential_link.use",
                    outcome=outcome,
                    target=state.user_id if state else "",
                    practice_id=state.practice_id if state else "",
                    detail={**detail, "purpose": state.purpose} if state else detail,
                )
            )
            return FailedPrecondition(LINK_ENDED)

        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise await refuse("unknown")
        token_hash = _token_hash(token)
        state = await self._links.link_state(token_hash)
        if state is None:
            raise await refuse("unknown")
        if state.used or state.expired:
            raise await refuse("already_used" if state.used else "expired", state)
        user = await self._user(state.user_id)
        if user is None:
            raise await refuse("unknown", state)
        # The rules are checked before the link is consumed: a refused password keeps the link usable.
        await self._check_rules(new_password, user)
        password_hash = await self._passwords.hash(new_password)
        session_token = _new_token()

        def event(use: LinkUse) -> AuditEvent:
            return AuditEvent(
                actor=use.user.user_id,
                action="credential_link.use",
                outcome="success",
                target=use.user.user_id,
                practice_id=use.user.practice_id,
                detail={**detail, "purpose": use.purpose, "sessions_revoked": use.sessions_revoked},
            )

        use = await self._links.use_link(
            token_hash, password_hash, _token_hash(session_token), self._config.session_absolute_seconds, event
        )
        if use is None:
            # Another attempt consumed it (or it ended) between the check and now.
            raise await refuse("already_used", state)
        log.info(
            "password set with link",
            extra={"fields": {"user_id": use.user.user_id, "purpose": use.purpose,
                              "sessions_revoked": use.sessions_revoked}},
        )
        if self._auth.requires_second_factor is not None and await self._auth.requires_second_factor(use.user):
            # A link proves one factor only: staff with two-step verification sign in
            # with the new password and a code, so the link's session ends here.
            await self._auth.end_session(session_token, reason="second_factor_required")
            return SignedIn("", use.user, None)
        return SignedIn(session_token, use.user, self._auth._view(use.session))

    async def request_password_reset(self, email: str, client_address: str) -> None:
        """Email a reset link if the address has an account; the answer never says which."""
        principal = require_service("web")
        detail = self._detail(client_address, principal.service_name)
        await self._throttled(client_address, "password_reset.request", detail)
        # Checked like every address auth accepts; for a well-formed one the answer never says
        # whether it has an account.
        email = normalize_email(email, allow_test_domains=self._config.common.development)
        found = await self._storage.user_credentials(email)
        if found is None or found[0].role == "service_account":
            await self._storage.record_audit(
                AuditEvent(
                    actor="unknown",
                    action="password_reset.request",
                    outcome="no_account",
                    detail={**detail, "email_sha256": hashlib.sha256(email.encode()).hexdigest()},
                )
            )
            return
        user = found[0]
        interval = self._config.password_reset_min_interval_seconds
        if interval > 0 and await self._links.recent_link(user.user_id, PASSWORD_RESET, interval):
            # One reset email per interval: requests from many addresses cannot flood a mailbox.
            await self._storage.record_audit(
                AuditEvent(
                    actor="unknown",
                    action="password_reset.request",
                    outcome="suppressed",
                    target=user.user_id,
                    practice_id=user.practice_id,
                    detail=detail,
                )
            )
            return
        await self._issue(user, PASSWORD_RESET, "unknown", {**detail, "role": user.role})

    async def change_password(
        self, session_token: str, current_password: str, new_password: str, client_address: str
    ) -> int:
        """Returns how many other sessions were ended."""
        principal = require_service("web")
        detail = self._detail(client_address, principal.service_name)
        if not session_token or len(session_token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(SESSION_ENDED)
        session_hash = _token_hash(session_token)
        found = await self._storage.touch_session(session_hash, self._config.session_idle_seconds)
        if found is None:
            raise Unauthenticated(SESSION_ENDED)
        user, record = found
        if record.kind != "full":
            raise PermissionDenied("Sign in with your password to change it.")
        if not current_password or not new_password:
            raise InvalidArgument("Enter your current password and a new one.")
        await self._throttled(client_address, "password.change", detail)
        throttle = await self._storage.throttle_state(user.user_id)
        if throttle.blocked:
            raise ResourceExhausted(throttled_message(throttle.seconds_left))
        credentials = await self._storage.user_credentials(user.email)
        stored_hash = credentials[1] if credentials else None
        candidate = current_password if len(current_password) <= self._config.password_max_length else ""
        if not (await self._passwords.verify(stored_hash, candidate) and candidate):
            await self._storage.record_audit(
                AuditEvent(
                    actor=user.user_id,
                    action="password.change",
                    outcome="wrong_password",
                    target=user.user_id,
                    practice_id=user.practice_id,
                    detail=detail,
                )
            )
            # Counted like a failed sign-in: the same delays, lock, lock email and answers.
            await self._auth.refuse_after_failure(
                InvalidArgument(WRONG_CURRENT_PASSWORD), user.user_id, user, user.user_id, user.practice_id,
                {**detail, "during": "password_change"},
            )
        if new_password == current_password:
            raise InvalidArgument("Choose a new password that differs from the current one.")
        await self._check_rules(new_password, user)
        password_hash = await self._passwords.hash(new_password)

        def event(revoked: int) -> AuditEvent:
            return AuditEvent(
                actor=user.user_id,
                action="password.change",
                outcome="success",
                target=user.user_id,
                practice_id=user.practice_id,
                detail={**detail, "sessions_revoked": revoked},
            )

        revoked = await self._links.change_password(user.user_id, password_hash, session_hash, event)
        log.info("password changed", extra={"fields": {"user_id": user.user_id, "sessions_revoked": revoked}})
        return revoked

    async def purge_loop(self) -> None:
        """Delete links that ended long ago (kept as long as magic links), with the hourly sweep."""
        while True:
            purged = await self._links.purge(self._config.magic_link_retention_seconds)
            if purged:
                log.info("purged", extra={"fields": {"credential_links": purged}})
            await asyncio.sleep(self._config.purge_interval_seconds)


# ---------------------------------------------------------------- gRPC methods

_PURPOSE_TO_PB = {
    INVITATION: pb.CREDENTIAL_PURPOSE_INVITATION,
    PASSWORD_RESET: pb.CREDENTIAL_PURPOSE_PASSWORD_RESET,
    "": pb.CREDENTIAL_PURPOSE_UNSPECIFIED,
}
_OUTCOME_TO_PB = {
    "valid": pb.CREDENTIAL_LINK_OUTCOME_VALID,
    "expired": pb.CREDENTIAL_LINK_OUTCOME_EXPIRED,
    "already_used": pb.CREDENTIAL_LINK_OUTCOME_ALREADY_USED,
    "unknown": pb.CREDENTIAL_LINK_OUTCOME_UNKNOWN,
}


class CredentialRpcs:
    """The credential RPCs of AuthServicer (mixed in; ``self._credentials`` is a CredentialHandlers)."""

    _credentials: CredentialHandlers

    async def InviteUser(self, request: pb.InviteUserRequest, context: grpc.aio.ServicerContext) -> pb.InviteUserResponse:
        expires_at = await self._credentials.invite_user(request.user_id)
        return pb.InviteUserResponse(expires_at=_timestamp(expires_at))

    async def InspectCredentialLink(
        self, request: pb.InspectCredentialLinkRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectCredentialLinkResponse:
        found = await self._credentials.inspect_link(request.token)
        response = pb.InspectCredentialLinkResponse(
            outcome=_OUTCOME_TO_PB[found.outcome], purpose=_PURPOSE_TO_PB[found.purpose]
        )
        if found.user is not None:
            response.email = found.user.email
            response.role = ROLE_TO_PB[found.user.role]
        return response

    async def SetPasswordWithLink(
        self, request: pb.SetPasswordWithLinkRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetPasswordWithLinkResponse:
        from services.auth.servicer import _session, _user

        signed_in = await self._credentials.set_password_with_link(
            request.token, request.new_password, request.client_address
        )
        user = _user(replace(signed_in.user, has_password=True))
        if signed_in.session is None:
            return pb.SetPasswordWithLinkResponse(user=user, sign_in_required=True)
        return pb.SetPasswordWithLinkResponse(
            session_token=signed_in.session_token, user=user, session=_session(signed_in.session)
        )

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequestPasswordResetResponse:
        await self._credentials.request_password_reset(request.email, request.client_address)
        return pb.RequestPasswordResetResponse()

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangePasswordResponse:
        await self._credentials.change_password(
            request.session_token, request.current_password, request.new_password, request.client_address
        )
        return pb.ChangePasswordResponse()
