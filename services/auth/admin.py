"""Practice administration: security settings, staff roles,
deactivation, and the owner's view of auth's audit trail.

Authorization is checked first: only the practice's owner changes anything; staff
may read the settings and the staff list of their own practice.
"""

from __future__ import annotations

import json
import logging

from services.auth.handlers import _parse_id
from services.auth.mfa_storage import AuditRow, MfaStorage, StaffRow
from services.auth.storage import AuditEvent, AuthStorage, User
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.identity import require_staff, require_user

log = logging.getLogger("confidant.auth")

# The roles an owner can give: owners come with their practice, clients are never staff.
ASSIGNABLE_ROLES = frozenset({"clinician", "team_member"})
DEFAULT_AUDIT_PAGE = 50
MAX_AUDIT_PAGE = 200


class AdminHandlers:
    def __init__(self, storage: AuthStorage, mfa_storage: MfaStorage) -> None:
        self._storage = storage
        self._mfa = mfa_storage

    # -- practice security ------------------------------------------------------------

    async def get_practice_security(self) -> bool:
        principal = require_staff()
        value = await self._mfa.require_mfa_for_staff(principal.practice_id)
        if value is None:
            raise NotFound("This practice does not exist.")
        return value

    async def update_practice_security(self, require_mfa_for_staff: bool) -> bool:
        principal = require_user("owner")
        before = await self._mfa.require_mfa_for_staff(principal.practice_id)
        if before is None:
            raise NotFound("This practice does not exist.")
        await self._mfa.set_require_mfa_for_staff(
            principal.practice_id,
            require_mfa_for_staff,
            AuditEvent(actor=principal.subject, action="practice.security.update", outcome="success",
                       target=principal.practice_id, practice_id=principal.practice_id,
                       detail={"require_mfa_for_staff": require_mfa_for_staff, "was": before}),
        )
        log.info("practice security updated", extra={"fields": {"practice_id": principal.practice_id,
                                                                "require_mfa_for_staff": require_mfa_for_staff}})
        return require_mfa_for_staff

    # -- staff --------------------------------------------------------------------------

    async def list_staff(self) -> list[StaffRow]:
        principal = require_staff()
        return await self._mfa.list_staff(principal.practice_id)

    async def _member(self, practice_id: str, user_id: str) -> StaffRow:
        row = await self._mfa.staff_row(_parse_id(user_id, "user id"))
        if row is None or row.user.practice_id != practice_id:
            raise NotFound("This person is not in your practice.")
        return row

    async def change_role(self, user_id: str, role: str) -> User:
        principal = require_user("owner")
        if role not in ASSIGNABLE_ROLES:
            raise InvalidArgument("A person can be made a clinician or a team member.")
        target = await self._member(principal.practice_id, user_id)
        if target.user.role == "owner":
            raise FailedPrecondition("The practice owner's role cannot be changed.")
        if target.user.role == "client":
            raise FailedPrecondition("A client cannot become a member of staff.")
        if target.deactivated:
            raise FailedPrecondition("This person is deactivated.")
        if target.user.role == role:
            return target.user
        user = await self._mfa.change_role(
            target.user.user_id, role,
            AuditEvent(actor=principal.subject, action="user.role_change", outcome="success",
                       target=target.user.user_id, practice_id=principal.practice_id,
                       detail={"from": target.user.role, "to": role}),
        )
        log.info("role changed", extra={"fields": {"user_id": user.user_id, "role": role}})
        return user

    async def deactivate_user(self, user_id: str) -> int:
        principal = require_user("owner")
        target = await self._member(principal.practice_id, user_id)
        if target.user.user_id == principal.user_id or target.user.role == "owner":
            raise FailedPrecondition("The practice owner cannot be deactivated.")
        if target.user.role == "client":
            raise FailedPrecondition("Only clinicians and team members can be deactivated here.")
        if target.deactivated:
            return 0
        ended = await self._mfa.deactivate(
            target.user.user_id,
            AuditEvent(actor=principal.subject, action="user.deactivate", outcome="success",
                       target=target.user.user_id, practice_id=principal.practice_id),
        )
        log.info("user deactivated", extra={"fields": {"user_id": target.user.user_id, "sessions_ended": ended}})
        return ended

    # -- the audit trail ---------------------------------------------------------------------

    async def list_audit_events(self, page_size: int, page_token: str) -> tuple[list[AuditRow], str]:
        principal = require_user("owner")
        if page_size < 0:
            raise InvalidArgument("The page size must not be negative.")
        limit = min(page_size or DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE)
        before = None
        if page_token:
            if not page_token.isdigit() or len(page_token) > 19:
                raise InvalidArgument("The page token is not valid.")
            before = int(page_token)
        rows = await self._mfa.audit_page(principal.practice_id, before, limit + 1)
        await self._storage.record_audit(
            AuditEvent(actor=principal.subject, action="audit.list", outcome="success",
                       practice_id=principal.practice_id, detail={"rows": min(len(rows), limit)})
        )
        next_token = str(rows[limit - 1].event_id) if len(rows) > limit else ""
        return rows[:limit], next_token

    async def verify_audit_trail(self) -> tuple[bool, int]:
        principal = require_user("owner")
        intact, rows = await self._mfa.verify_audit_trail()
        await self._storage.record_audit(
            AuditEvent(actor=principal.subject, action="audit.verify", outcome="intact" if intact else "broken",
                       practice_id=principal.practice_id, detail={"rows": rows})
        )
        if not intact:
            log.error("the audit trail's hash chain is broken", extra={"fields": {"rows": rows}})
        log.info("audit trail verified", extra={"fields": {"practice_id": principal.practice_id, "intact": intact}})
        return intact, rows


def detail_json(row: AuditRow) -> str:
    return json.dumps(row.detail, sort_keys=True, separators=(",", ":"))
