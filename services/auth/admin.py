"""Practice administration: security settings, staff roles,
deactivation, and the owner's view of auth's audit trail.

Authorization is checked first: only the practice's owner changes anything; staff
may read the settings and the staff list of their own practice.
"""

from __future__ import annotations

import logging

from services.auth.handlers import _parse_id
from services.auth.mfa_storage import MfaStorage, StaffRow
from services.auth.storage import AuditEvent, AuthStorage, User
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.identity import require_staff, require_user

log = logging.getLogger("confidant.auth")

# The roles an owner can give: owners come with their practice, clients are never staff.
ASSIGNABLE_ROLES = frozenset({"clinician", "team_member"})


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
