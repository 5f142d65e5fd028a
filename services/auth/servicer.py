"""The gRPC face of auth: request protos in, handler calls, response protos out."""

from __future__ import annotations

import grpc
from confidant.auth.v1 import auth_service_pb2 as pb
from confidant.auth.v1 import auth_service_pb2_grpc as pb_grpc

from services.auth.admin import AdminHandlers
from services.auth.credentials import CredentialHandlers, CredentialRpcs
from services.auth.handlers import AuthHandlers, SessionView
from services.auth.key_rpcs import KeyRpcs
from services.auth.mfa import MfaHandlers, SecondFactorPending
from services.auth.mfa_servicer import MfaRpcs
from services.auth.revocations import RevocationRpcs
from services.auth.storage import Practice, User
from services.common.convert import PB_TO_ROLE as _PB_TO_ROLE
from services.common.convert import ROLE_TO_PB as _ROLE_TO_PB
from services.common.convert import timestamp as _timestamp
from services.common.errors import InvalidArgument

_KIND_TO_PB = {"full": pb.SESSION_KIND_FULL, "magic_link": pb.SESSION_KIND_MAGIC_LINK}
_OUTCOME_TO_PB = {
    "valid": pb.MAGIC_LINK_OUTCOME_VALID,
    "redeemed": pb.MAGIC_LINK_OUTCOME_REDEEMED,
    "expired": pb.MAGIC_LINK_OUTCOME_EXPIRED,
    "already_used": pb.MAGIC_LINK_OUTCOME_ALREADY_USED,
    "unknown": pb.MAGIC_LINK_OUTCOME_UNKNOWN,
}


def _role(value: int) -> str:
    try:
        return _PB_TO_ROLE[value]
    except KeyError:
        raise InvalidArgument("Choose a role.") from None


def _user(user: User) -> pb.User:
    return pb.User(
        user_id=user.user_id,
        practice_id=user.practice_id,
        role=_ROLE_TO_PB[user.role],
        email=user.email,
        display_name=user.display_name,
        has_password=user.has_password,
        date_of_birth=user.date_of_birth,
    )


def _practice(practice: Practice) -> pb.Practice:
    return pb.Practice(
        practice_id=practice.practice_id,
        name=practice.name,
        time_zone=practice.time_zone,
        contact_phone=practice.contact_phone,
        contact_email=practice.contact_email,
    )


def _session(session: SessionView) -> pb.Session:
    return pb.Session(
        kind=_KIND_TO_PB[session.kind],
        expires_at=_timestamp(session.expires_at),
        conversation_id=session.conversation_id,
    )


class AuthServicer(
    MfaRpcs, KeyRpcs, RevocationRpcs, CredentialRpcs, pb_grpc.AuthServiceServicer
):
    def __init__(
        self,
        handlers: AuthHandlers,
        credentials: CredentialHandlers | None = None,
        mfa: MfaHandlers | None = None,
        admin: AdminHandlers | None = None,
    ) -> None:
        self._handlers = handlers
        self._credentials = credentials
        self._mfa_handlers = mfa
        self._admin = admin

    async def CreatePractice(
        self, request: pb.CreatePracticeRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePracticeResponse:
        practice, owner = await self._handlers.create_practice(
            request.name, request.owner_email, request.owner_display_name, request.owner_password, request.time_zone
        )
        return pb.CreatePracticeResponse(practice=_practice(practice), owner=_user(owner))

    async def GetPractice(
        self, request: pb.GetPracticeRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPracticeResponse:
        return pb.GetPracticeResponse(
            practice=_practice(await self._handlers.get_practice(request.practice_id))
        )

    async def UpdatePractice(
        self, request: pb.UpdatePracticeRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdatePracticeResponse:
        wanted = Practice(
            "",
            request.practice.name,
            request.practice.time_zone,
            request.practice.contact_phone,
            request.practice.contact_email,
        )
        practice = await self._handlers.update_practice(wanted, list(request.update_mask.paths))
        return pb.UpdatePracticeResponse(practice=_practice(practice))

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateUserResponse:
        user = await self._handlers.create_user(
            request.practice_id, _role(request.role), request.email, request.display_name, request.password
        )
        return pb.CreateUserResponse(user=_user(user))

    async def GetUsers(
        self, request: pb.GetUsersRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsersResponse:
        users = await self._handlers.get_users(list(request.user_ids))
        return pb.GetUsersResponse(users=[_user(u) for u in users])

    async def SearchDirectory(
        self, request: pb.SearchDirectoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchDirectoryResponse:
        roles = [_role(r) for r in request.roles]
        users, next_token = await self._handlers.search_directory(
            request.query, roles, request.page_size, request.page_token
        )
        return pb.SearchDirectoryResponse(users=[_user(u) for u in users], next_page_token=next_token)

    async def CreateClient(
        self, request: pb.CreateClientRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateClientResponse:
        client = await self._handlers.create_client(request.email, request.display_name, request.date_of_birth)
        return pb.CreateClientResponse(client=_user(client))

    async def UpdateClient(
        self, request: pb.UpdateClientRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateClientResponse:
        client = await self._handlers.update_client(
            request.client_id, request.email, request.display_name, request.date_of_birth
        )
        return pb.UpdateClientResponse(client=_user(client))

    async def ListClients(
        self, request: pb.ListClientsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListClientsResponse:
        clients, next_token = await self._handlers.list_clients(request.query, request.page_size, request.page_token)
        return pb.ListClientsResponse(clients=[_user(c) for c in clients], next_page_token=next_token)

    async def SignIn(self, request: pb.SignInRequest, context: grpc.aio.ServicerContext) -> pb.SignInResponse:
        signed_in = await self._handlers.sign_in(request.email, request.password, request.client_address)
        if isinstance(signed_in, SecondFactorPending):
            return pb.SignInResponse(
                user=_user(signed_in.user),
                second_factor_required=True,
                pending_token=signed_in.pending_token,
                enrollment_required=signed_in.enrollment_required,
            )
        return pb.SignInResponse(
            session_token=signed_in.session_token,
            user=_user(signed_in.user),
            session=_session(signed_in.session),
        )

    async def AuthenticateSession(
        self, request: pb.AuthenticateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateSessionResponse:
        result = await self._handlers.authenticate_session(request.session_token, request.background)
        return pb.AuthenticateSessionResponse(
            user=_user(result.user),
            session=_session(result.session),
            access_token=result.access_token,
            access_token_expires_at=_timestamp(result.access_token_expires_at),
        )

    async def SignOut(
        self, request: pb.SignOutRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignOutResponse:
        await self._handlers.sign_out(request.session_token)
        return pb.SignOutResponse()

    async def CreateMagicLink(
        self, request: pb.CreateMagicLinkRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateMagicLinkResponse:
        link = await self._handlers.create_magic_link(request.user_id, request.conversation_id)
        return pb.CreateMagicLinkResponse(token=link.token, expires_at=_timestamp(link.expires_at))

    async def RedeemMagicLink(
        self, request: pb.RedeemMagicLinkRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedeemMagicLinkResponse:
        result = await self._handlers.redeem_magic_link(request.token, request.client_address)
        response = pb.RedeemMagicLinkResponse(
            outcome=_OUTCOME_TO_PB[result.outcome],
            conversation_id=result.conversation_id,
            session_token=result.session_token,
        )
        if result.user is not None:
            response.user.CopyFrom(_user(result.user))
        if result.session is not None:
            response.session.CopyFrom(_session(result.session))
        return response

    async def InspectMagicLink(
        self, request: pb.InspectMagicLinkRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectMagicLinkResponse:
        outcome, conversation_id = await self._handlers.inspect_magic_link(request.token)
        return pb.InspectMagicLinkResponse(outcome=_OUTCOME_TO_PB[outcome], conversation_id=conversation_id)
