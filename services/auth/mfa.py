"""The second factor for staff: TOTP enrolment, recovery codes, and the sign-in
step between a right password and a session.

- SignIn (handlers.py) calls ``after_password``: a staff member with TOTP on, or
  whose practice requires two-step verification, gets a pending token (5 minutes,
  stored as a sha256 hash, yields at most one session) instead of a session.
- CompleteSignIn takes that token and a TOTP code (±``totp_valid_window`` steps;
  a step is never accepted twice) or a recovery code (single use).
- Wrong codes count toward the account's sign-in failures, delay and lock
  (the same counters and answers as wrong passwords).
- TOTP secrets are sealed with AES-256-GCM under the MFA data key
  (``<keys_dir>/auth-mfa.key``; the user id is the associated data); recovery
  codes are kept as HMAC-SHA256 digests under a subkey of it. Neither is logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.auth.config import AuthConfig
from services.auth.handlers import (
    SESSION_ENDED,
    AuthHandlers,
    SignedIn,
    _client_address,
    _new_token,
    _token_hash,
    address_throttled_message,
    throttled_message,
)
from services.auth.mfa_storage import MfaStorage, SecondFactorUsed, TotpCredential
from services.auth.storage import AuditEvent, AuthStorage, User
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from services.common.identity import STAFF_ROLES, Principal, caller, require_service, require_staff
from services.common.keyfiles import load_key_file

log = logging.getLogger("confidant.auth")

KEY_BYTES = 32
NONCE_BYTES = 12
CURRENT_KEY_VERSION = 1
WRONG_CODE = "The authentication code is not correct."
SIGN_IN_EXPIRED = "This sign-in has expired. Please sign in again."
MAX_CODE_LENGTH = 64
# Recovery codes: 10 characters from an alphabet without look-alikes (about 49 bits), shown as xxxxx-xxxxx.
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_LENGTH = 10


class MfaKeyError(OSError):
    """The MFA data key file is missing or malformed: auth cannot start."""


def load_mfa_key(path: Path, create_if_missing: bool) -> bytes:
    """Read the base64 key; in development, create it (mode 0600) when absent."""
    return load_key_file(path, KEY_BYTES, "MFA data key", create_if_missing, MfaKeyError)


class SecretBox:
    """Seals TOTP secrets and digests recovery codes, each with its own subkey of the MFA key."""

    def __init__(self, key: bytes) -> None:
        def subkey(info: bytes) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)

        self._aead = {CURRENT_KEY_VERSION: AESGCM(subkey(b"confidant auth totp secret v1"))}
        self._recovery_key = subkey(b"confidant auth recovery code v1")

    def seal(self, secret: str, user_id: str) -> tuple[bytes, bytes, int]:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead[CURRENT_KEY_VERSION].encrypt(nonce, secret.encode(), user_id.encode())
        return sealed, nonce, CURRENT_KEY_VERSION

    def open(self, credential: TotpCredential) -> str:
        aead = self._aead.get(credential.key_version)
        if aead is None:
            raise FailedPrecondition("Two-step verification cannot be checked right now.")
        try:
            return aead.decrypt(credential.secret_nonce, credential.secret_sealed, credential.user_id.encode()).decode()
        except InvalidTag:
            log.error("a TOTP secret did not authenticate", extra={"fields": {"user_id": credential.user_id}})
            raise FailedPrecondition("Two-step verification cannot be checked right now.") from None

    def recovery_hash(self, user_id: str, code: str) -> bytes:
        return hmac.new(self._recovery_key, f"{user_id}:{code}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class SecondFactorPending:
    """SignIn's answer when the password was right and a second factor (or enrolment) must follow."""

    pending_token: str
    user: User
    enrollment_required: bool


@dataclass(frozen=True)
class Enrollment:
    secret: str
    otpauth_uri: str


@dataclass(frozen=True)
class Confirmed:
    recovery_codes: list[str]
    signed_in: SignedIn | None


def normalize_code(value: str) -> str:
    return "".join(value.split()).replace("-", "").lower()


def is_totp_code(code: str) -> bool:
    return len(code) == 6 and code.isascii() and code.isdigit()


def new_recovery_code() -> str:
    raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


class MfaHandlers:
    def __init__(
        self,
        config: AuthConfig,
        auth: AuthHandlers,
        storage: AuthStorage,
        mfa_storage: MfaStorage,
        box: SecretBox,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._auth = auth
        self._storage = storage
        self._mfa = mfa_storage
        self._box = box
        self._clock = clock
        auth.second_factor = self.after_password
        auth.requires_second_factor = self.requires_second_factor

    # -- helpers -------------------------------------------------------------------

    def _match_step(self, secret: str, code: str, last_used_step: int) -> int | None:
        """The 30-second step whose code this is (within the window and after the last used one)."""
        if not is_totp_code(code):
            return None
        totp = pyotp.TOTP(secret)
        now_step = int(self._clock() // totp.interval)
        window = self._config.totp_valid_window
        for step in range(now_step - window, now_step + window + 1):
            if step > last_used_step and hmac.compare_digest(totp.generate_otp(step), code):
                return step
        return None

    async def _signed_in_staff(self) -> tuple[Principal, User]:
        principal = require_staff()
        if principal.session_kind != "full":
            raise PermissionDenied("Sign in with your password to change two-step verification.")
        user = await self._mfa.active_user(principal.user_id)
        if user is None:
            raise Unauthenticated(SESSION_ENDED)
        return principal, user

    async def _pending(self, pending_token: str, purpose: str) -> User:
        if not pending_token or len(pending_token) > 256:
            raise Unauthenticated(SIGN_IN_EXPIRED)
        pending = await self._mfa.pending(_token_hash(pending_token))
        if pending is None or not pending.usable or pending.purpose != purpose:
            raise Unauthenticated(SIGN_IN_EXPIRED)
        return pending.user

    async def _not_throttled(self, user: User, client_address: str, detail: dict) -> None:
        reason, message = "", ""
        if wait := await self._auth.address_throttle(client_address):
            reason, message = "address", address_throttled_message(wait)
        elif (state := await self._storage.throttle_state(user.user_id)).blocked:
            reason, message = "locked", throttled_message(state.seconds_left)
        if reason:
            await self._storage.record_audit(
                AuditEvent(actor=user.user_id, action="sign_in", outcome="throttled", target=user.user_id,
                           practice_id=user.practice_id, detail={**detail, "reason": reason})
            )
            raise ResourceExhausted(message)

    async def _failed(self, user: User, detail: dict, error: Exception) -> NoReturn:
        """Count a wrong code like a wrong password: ``error``, or the throttled answer once it throttles."""
        await self._auth.refuse_after_failure(error, user.user_id, user, user.user_id, user.practice_id, detail)

    # -- the sign-in step ------------------------------------------------------------

    async def requires_second_factor(self, user: User) -> bool:
        """Staff with two-step verification on, or whose practice requires it."""
        if user.role not in STAFF_ROLES:
            return False
        totp = await self._mfa.totp(user.user_id)
        return bool(totp is not None and totp.confirmed) or await self._mfa.require_mfa_for_staff(user.practice_id)

    async def after_password(self, user: User, detail: dict) -> SecondFactorPending | None:
        """Called by SignIn once the password is right: a pending token, or None for a session now."""
        if user.role not in STAFF_ROLES:
            return None
        totp = await self._mfa.totp(user.user_id)
        if totp is not None and totp.confirmed:
            purpose = "verify"
        elif await self._mfa.require_mfa_for_staff(user.practice_id):
            purpose = "enroll"
        else:
            return None
        token = _new_token()
        await self._mfa.create_pending(
            _token_hash(token), user.user_id, purpose, self._config.second_factor_pending_seconds
        )
        await self._storage.record_audit(
            AuditEvent(actor=user.user_id, action="sign_in", outcome="second_factor_required", target=user.user_id,
                       practice_id=user.practice_id, detail={**detail, "next": purpose})
        )
        log.info("password accepted, second factor pending",
                 extra={"fields": {"user_id": user.user_id, "next": purpose}})
        return SecondFactorPending(token, user, enrollment_required=purpose == "enroll")

    async def complete_sign_in(self, pending_token: str, code: str, client_address: str) -> SignedIn:
        principal = require_service("web")
        user = await self._pending(pending_token, "verify")
        detail = {**_client_address(client_address), "via": principal.service_name}
        await self._not_throttled(user, client_address, detail)
        totp = await self._mfa.totp(user.user_id)
        if totp is None or not totp.confirmed:
            raise Unauthenticated(SIGN_IN_EXPIRED)  # turned off meanwhile: start again
        code = normalize_code(code)[:MAX_CODE_LENGTH]
        step = recovery_hash = None
        if is_totp_code(code):
            step = self._match_step(self._box.open(totp), code, totp.last_used_step)
            factor = "totp"
        else:
            candidate = self._box.recovery_hash(user.user_id, code)
            if code and await self._mfa.has_recovery_code(user.user_id, candidate):
                recovery_hash = candidate
            factor = "recovery_code"
        if step is None and recovery_hash is None:
            await self._failed(user, {**detail, "factor": factor}, Unauthenticated(WRONG_CODE))
        session_token = _new_token()
        event = AuditEvent(actor=user.user_id, action="sign_in", outcome="success", target=user.user_id,
                           practice_id=user.practice_id, detail={**detail, "factor": factor})
        try:
            record = await self._mfa.complete_sign_in(
                _token_hash(pending_token), user.user_id, _token_hash(session_token),
                self._config.session_absolute_seconds, event, step=step, recovery_hash=recovery_hash,
            )
        except SecondFactorUsed:
            # The same code (or token) was used by a concurrent attempt: a replay.
            await self._failed(user, {**detail, "factor": factor, "reason": "replay"}, Unauthenticated(WRONG_CODE))
        await self._storage.clear_sign_in_failures(user.user_id)
        log.info("signed in", extra={"fields": {"user_id": user.user_id, "practice_id": user.practice_id,
                                                "factor": factor}})
        return SignedIn(session_token, user, self._auth._view(record))

    # -- enrolment ---------------------------------------------------------------------------

    async def begin_enrollment(self, pending_token: str) -> Enrollment:
        principal = caller()
        if principal.is_service:
            require_service("web")
            user = await self._pending(pending_token, "enroll")
        else:
            principal, user = await self._signed_in_staff()
        secret = pyotp.random_base32()
        sealed, nonce, version = self._box.seal(secret, user.user_id)
        began = await self._mfa.begin_totp(
            user.user_id, sealed, nonce, version,
            AuditEvent(actor=user.user_id, action="mfa.totp.begin", outcome="success", target=user.user_id,
                       practice_id=user.practice_id),
        )
        if not began:
            raise FailedPrecondition("Two-step verification is already on.")
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=self._config.totp_issuer)
        return Enrollment(secret, uri)

    async def confirm_enrollment(self, pending_token: str, code: str, client_address: str) -> Confirmed:
        principal = caller()
        via_pending = principal.is_service
        if via_pending:
            principal = require_service("web")
            user = await self._pending(pending_token, "enroll")
            detail = {**_client_address(client_address), "via": principal.service_name}
            await self._not_throttled(user, client_address, detail)
        else:
            principal, user = await self._signed_in_staff()
            detail = {}
        totp = await self._mfa.totp(user.user_id)
        if totp is None or totp.confirmed:
            raise FailedPrecondition("Start setting up two-step verification first.")
        step = self._match_step(self._box.open(totp), normalize_code(code)[:MAX_CODE_LENGTH], 0)
        if step is None:
            if via_pending:
                await self._failed(user, {**detail, "factor": "totp", "step": "enroll"}, Unauthenticated(WRONG_CODE))
            await self._storage.record_audit(
                AuditEvent(actor=user.user_id, action="mfa.totp.enable", outcome="failure", target=user.user_id,
                           practice_id=user.practice_id)
            )
            raise InvalidArgument(WRONG_CODE)
        codes = [new_recovery_code() for _ in range(self._config.recovery_code_count)]
        hashes = [self._box.recovery_hash(user.user_id, normalize_code(c)) for c in codes]
        events = [
            AuditEvent(actor=user.user_id, action="mfa.totp.enable", outcome="success", target=user.user_id,
                       practice_id=user.practice_id, detail={"recovery_codes": len(codes)})
        ]
        session_token = _new_token() if via_pending else ""
        if via_pending:
            events.append(
                AuditEvent(actor=user.user_id, action="sign_in", outcome="success", target=user.user_id,
                           practice_id=user.practice_id, detail={**detail, "factor": "totp_enrollment"})
            )
        try:
            record = await self._mfa.confirm_totp(
                user.user_id, step, hashes, events,
                pending_hash=_token_hash(pending_token) if via_pending else None,
                session_hash=_token_hash(session_token) if via_pending else None,
                absolute_seconds=self._config.session_absolute_seconds,
            )
        except SecondFactorUsed:
            if via_pending:
                raise Unauthenticated(SIGN_IN_EXPIRED) from None
            raise FailedPrecondition("Start setting up two-step verification first.") from None
        log.info("two-step verification turned on", extra={"fields": {"user_id": user.user_id}})
        if not via_pending:
            return Confirmed(codes, None)
        await self._storage.clear_sign_in_failures(user.user_id)
        assert record is not None
        return Confirmed(codes, SignedIn(session_token, user, self._auth._view(record)))

    async def disable(self, code: str) -> None:
        principal, user = await self._signed_in_staff()
        totp = await self._mfa.totp(user.user_id)
        if totp is None or not totp.confirmed:
            raise FailedPrecondition("Two-step verification is not on.")
        if await self._mfa.require_mfa_for_staff(user.practice_id):
            raise FailedPrecondition(
                "Your practice requires two-step verification for all staff, so it cannot be turned off."
            )
        detail = {"via": "disable_totp"}
        if (state := await self._storage.throttle_state(user.user_id)).blocked:
            raise ResourceExhausted(throttled_message(state.seconds_left))
        step = self._match_step(self._box.open(totp), normalize_code(code)[:MAX_CODE_LENGTH], totp.last_used_step)
        if step is None:
            # A wrong code here counts like a wrong password: a stolen session cannot guess its way through.
            await self._failed(user, {**detail, "factor": "totp"}, InvalidArgument(WRONG_CODE))
        try:
            await self._mfa.disable_totp(
                user.user_id, step,
                AuditEvent(actor=user.user_id, action="mfa.totp.disable", outcome="success", target=user.user_id,
                           practice_id=user.practice_id),
            )
        except SecondFactorUsed:
            raise InvalidArgument(WRONG_CODE) from None
        log.info("two-step verification turned off", extra={"fields": {"user_id": user.user_id}})

    async def status(self) -> tuple[bool, int]:
        principal = require_staff()
        totp = await self._mfa.totp(principal.user_id)
        if totp is None or not totp.confirmed:
            return False, 0
        return True, await self._mfa.recovery_codes_left(principal.user_id)

    async def purge_loop(self) -> None:
        """Delete long-ended pending sign-ins (with the hourly sweep's period)."""
        while True:
            await self._mfa.purge_pending(self._config.session_retention_seconds)
            await asyncio.sleep(self._config.purge_interval_seconds)
