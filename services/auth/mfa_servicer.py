"""The RPCs of two-step verification and practice administration, mixed into AuthServicer: protos in, handler calls, protos out."""

from __future__ import annotations

import grpc
from confidant.auth.v1 import auth_service_pb2 as pb

from services.auth.admin import AdminHandlers
from services.auth.handlers import SignedIn
from services.auth.mfa import MfaHandlers
from services.common.convert import PB_TO_ROLE, ROLE_TO_PB, timestamp
from services.common.errors import InvalidArgument


def _user(user) -> pb.User:
    return pb.User(
        user_id=user.user_id,
        practice_id=user.practice_id,
        role=ROLE_TO_PB[user.role],
        email=user.email,
        display_name=user.display_name,
        has_password=user.has_password,
    )


def _session(view) -> pb.Session:
    return pb.Session(kind=pb.SESSION_KIND_FULL, expires_at=timestamp(view.expires_at),
                      conversation_id=view.conversation_id)


def _signed_in(signed_in: SignedIn):
    return {"session_token": signed_in.session_token, "user": _user(signed_in.user),
            "session": _session(signed_in.session)}


class MfaRpcs:
    """Needs ``self._mfa_handlers`` (MfaHandlers) and ``self._admin`` (AdminHandlers)."""

    _mfa_handlers: MfaHandlers
    _admin: AdminHandlers

    async def CompleteSignIn(
        self, request: pb.CompleteSignInRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteSignInResponse:
        signed_in = await self._mfa_handlers.complete_sign_in(
            request.pending_token, request.code, request.client_address
        )
        return pb.CompleteSignInResponse(**_signed_in(signed_in))

    async def BeginTotpEnrollment(
        self, request: pb.BeginTotpEnrollmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.BeginTotpEnrollmentResponse:
        enrollment = await self._mfa_handlers.begin_enrollment(request.pending_token)
        return pb.BeginTotpEnrollmentResponse(secret=enrollment.secret, otpauth_uri=enrollment.otpauth_uri)

    async def ConfirmTotpEnrollment(
        self, request: pb.ConfirmTotpEnrollmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmTotpEnrollmentResponse:
        confirmed = await self._mfa_handlers.confirm_enrollment(
            request.pending_token, request.code, request.client_address
        )
        response = pb.ConfirmTotpEnrollmentResponse(recovery_codes=confirmed.recovery_codes)
        if confirmed.signed_in is not None:
            signed_in = _signed_in(confirmed.signed_in)
            response.session_token = signed_in["session_token"]
            response.user.CopyFrom(signed_in["user"])
            response.session.CopyFrom(signed_in["session"])
        return response

    async def DisableTotp(
        self, request: pb.DisableTotpRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableTotpResponse:
        await self._mfa_handlers.disable(request.code)
        return pb.DisableTotpResponse()

    async def GetTotpStatus(
        self, request: pb.GetTotpStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTotpStatusResponse:
        enabled, left = await self._mfa_handlers.status()
        return pb.GetTotpStatusResponse(enabled=enabled, recovery_codes_left=left)

    async def GetPracticeSecurity(
        self, request: pb.GetPracticeSecurityRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPracticeSecurityResponse:
        value = await self._admin.get_practice_security()
        return pb.GetPracticeSecurityResponse(security=pb.PracticeSecurity(require_mfa_for_staff=value))

    async def UpdatePracticeSecurity(
        self, request: pb.UpdatePracticeSecurityRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdatePracticeSecurityResponse:
        if not request.HasField("security"):
            raise InvalidArgument("Say which security settings to set.")
        value = await self._admin.update_practice_security(request.security.require_mfa_for_staff)
        return pb.UpdatePracticeSecurityResponse(security=pb.PracticeSecurity(require_mfa_for_staff=value))

    async def ListStaff(self, request: pb.ListStaffRequest, context: grpc.aio.ServicerContext) -> pb.ListStaffResponse:
        rows = await self._admin.list_staff()
        return pb.ListStaffResponse(
            staff=[pb.StaffMember(user=_user(r.user), deactivated=r.deactivated, totp_enabled=r.totp_enabled)
                   for r in rows]
        )

    async def ChangeRole(
        self, request: pb.ChangeRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangeRoleResponse:
        role = PB_TO_ROLE.get(request.role)
        if role is None:
            raise InvalidArgument("Choose a role.")
        return pb.ChangeRoleResponse(user=_user(await self._admin.change_role(request.user_id, role)))

    async def DeactivateUser(
        self, request: pb.DeactivateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeactivateUserResponse:
        return pb.DeactivateUserResponse(sessions_ended=await self._admin.deactivate_user(request.user_id))
