"""Who people are, as the auth service knows them (its GetUsers RPC).

Messaging keeps no copy of the directory: before it enables a client or opens a
conversation it asks auth, with its own service token, which practice each
person belongs to and in which role.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc

from services.common.convert import role_name
from services.common.errors import Unavailable
from services.common.identity import STAFF_ROLES

log = logging.getLogger("confidant.messaging.directory")



@dataclass(frozen=True)
class Person:
    user_id: str
    practice_id: str
    role: str

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def is_client(self) -> bool:
        return self.role == "client"


class Directory:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._auth = auth_grpc.AuthServiceStub(channel)

    async def people(self, user_ids: Sequence[str]) -> dict[str, Person]:
        """The people with these ids, by id. Unknown ids are simply absent.

        Auth answers NOT_FOUND when any id is unknown; callers need every id
        anyway, so that answer is "none of them". Auth being unreachable is
        UNAVAILABLE for our caller, never a wrong "not found".
        """
        if not user_ids:
            return {}
        try:
            reply = await self._auth.GetUsers(auth_pb.GetUsersRequest(user_ids=list(user_ids)))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return {}
            log.warning(
                "auth GetUsers failed", extra={"fields": {"code": exc.code().name, "count": len(user_ids)}}
            )
            raise Unavailable("The directory is not reachable right now; please try again.") from None
        return {
            user.user_id: Person(
                user_id=user.user_id, practice_id=user.practice_id, role=role_name(user.role)
            )
            for user in reply.users
        }

    # A client enabled for secure messaging without portal credentials gets an invitation.
    async def invite_if_no_password(self, user_id: str) -> bool:
        """Ask auth to email an invitation when the person has no password; True when one was sent.

        Never raises: a failed invitation must not undo enabling secure messaging (the
        staff member can enable again later, or the client can use "Forgot password?").
        """
        fields = {"user_id": user_id}
        try:
            reply = await self._auth.GetUsers(auth_pb.GetUsersRequest(user_ids=[user_id]))
            if not any(u.user_id == user_id and not u.has_password for u in reply.users):
                return False
            await self._auth.InviteUser(auth_pb.InviteUserRequest(user_id=user_id))
        except grpc.aio.AioRpcError as exc:
            log.warning("portal invitation not sent", extra={"fields": {**fields, "code": exc.code().name}})
            return False
        log.info("portal invitation sent", extra={"fields": fields})
        return True
