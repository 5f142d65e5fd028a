"""Protos -> JSON objects and page values, and the one batched name lookup per request."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import grpc
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb

from services.web import timefmt
from services.web.resources import Backends
from services.web.session import ROLE_LABELS, STAFF_ROLES, Person, role_name

UNKNOWN_NAME = "Unknown person"
# Why nobody can send (messaging's CannotSendReason), as the script and the pages name it.
CANNOT_SEND_REASONS = {
    msg_pb.CANNOT_SEND_REASON_PRACTICE_DISABLED: "practice_disabled",
    msg_pb.CANNOT_SEND_REASON_CLIENT_DISABLED: "client_disabled",
    msg_pb.CANNOT_SEND_REASON_TEAM_DISABLED: "team_disabled",
}


def when(ts) -> datetime | None:
    """A protobuf Timestamp as an aware datetime; None when unset."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)


def iso(ts) -> str | None:
    value = when(ts)
    return value.isoformat().replace("+00:00", "Z") if value else None


async def users_by_id(backends: Backends, person: Person, user_ids: Iterable[str]) -> dict[str, auth_pb.User]:
    """Users of the person's practice by id, in one call (names for lists and threads)."""
    wanted = sorted({uid for uid in user_ids if uid})
    if not wanted:
        return {}
    if person.user_id in wanted and len(wanted) == 1:
        return {person.user_id: person.user}
    try:
        reply = await backends.auth.GetUsers(auth_pb.GetUsersRequest(user_ids=wanted), metadata=person.metadata)
    except grpc.aio.AioRpcError as exc:
        # Names are a courtesy: a person who may not look everyone up still sees the thread.
        if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
            return {person.user_id: person.user}
        raise
    found = {user.user_id: user for user in reply.users}
    found.setdefault(person.user_id, person.user)
    return found


def masked_email(email: str) -> str:
    """``jordan@client.test`` as ``jor•••@client.test``: enough to tell two people apart at a
    glance, not the whole address on every screen (a short local part shows one character)."""
    local, at, domain = email.partition("@")
    if not at or not local:
        return ""
    shown = local[:3] if len(local) > 4 else local[:1]
    return f"{shown}•••@{domain}"


def person_hint(user: auth_pb.User) -> str:
    """What tells a person apart from another of the same name, wherever someone picks or reads
    one: a client's masked email and date of birth where known ("j•••@client.test · DOB Mar 14,
    1991"); a staff member's role."""
    role = role_name(user)
    if role in STAFF_ROLES:
        return ROLE_LABELS.get(role, "")
    parts = [masked_email(user.email)]
    if user.date_of_birth:
        parts.append(f"DOB {timefmt.date_of_birth(user.date_of_birth)}")
    return " · ".join(part for part in parts if part)


def user_json(user: auth_pb.User, viewer: Person | None = None) -> dict:
    """A person for the script; ``hint`` (see person_hint) only for staff viewers: a client is
    never shown another person's details."""
    role = role_name(user)
    out = {
        "user_id": user.user_id,
        "display_name": user.display_name,
        "role": role,
        "role_label": ROLE_LABELS.get(role, ""),
        "is_staff": role in STAFF_ROLES,
    }
    if viewer is not None and viewer.is_staff:
        out["hint"] = person_hint(user)
    return out


def display_name(users: dict[str, auth_pb.User], user_id: str) -> str:
    user = users.get(user_id)
    if user is not None and user.display_name:
        return user.display_name
    return UNKNOWN_NAME


def conversation_title(conversation: msg_pb.Conversation, users: dict[str, auth_pb.User], person: Person) -> str:
    """The other participants' names, as a person would say them."""
    others = [p.user_id for p in conversation.participants if p.user_id != person.user_id]
    if not others:
        return "Only you"
    names = [display_name(users, uid) for uid in others]
    if person.is_client and all(n == UNKNOWN_NAME for n in names):
        return "Your care team"
    return ", ".join(names)


def conversation_hint(conversation: msg_pb.Conversation, users: dict[str, auth_pb.User], person: Person) -> str:
    """For staff: what tells this conversation's client apart (see person_hint); "" otherwise."""
    if not person.is_staff or not conversation.client_id:
        return ""
    client = users.get(conversation.client_id)
    return person_hint(client) if client is not None else ""


def conversation_json(conversation: msg_pb.Conversation, users: dict[str, auth_pb.User], person: Person) -> dict:
    def participant(p: msg_pb.Participant) -> dict:
        out = {
            "user_id": p.user_id,
            "display_name": display_name(users, p.user_id),
            "is_staff": p.is_staff,
            "is_me": p.user_id == person.user_id,
        }
        if person.is_staff and p.user_id in users:
            out["hint"] = person_hint(users[p.user_id])
        return out

    return {
        "conversation_id": conversation.conversation_id,
        "title": conversation_title(conversation, users, person),
        "hint": conversation_hint(conversation, users, person),
        "participants": [participant(p) for p in conversation.participants],
        "client_id": conversation.client_id,
        "last_activity_at": iso(conversation.last_activity_at),
        "last_seq": conversation.last_seq,
        "unread_count": conversation.unread_count,
        "preview": conversation.preview,
        "last_sender_id": conversation.last_sender_id,
        "last_sender_name": preview_sender(conversation, users, person),
        "archived": conversation.archived,
        "can_send": conversation.can_send,
        "cannot_send_reason": CANNOT_SEND_REASONS.get(conversation.cannot_send_reason, ""),
    }


def preview_sender(conversation: msg_pb.Conversation, users: dict[str, auth_pb.User], person: Person) -> str:
    """Who wrote the previewed message, as the list says it ("You", a name, or nothing)."""
    sender = conversation.last_sender_id
    if not sender or not conversation.preview:
        return ""
    if sender == person.user_id:
        return "You"
    name = display_name(users, sender)
    return "" if name == UNKNOWN_NAME else name


def client_json(user: auth_pb.User) -> dict:
    """A client in the Clients list (staff only: the email is the practice's record)."""
    return {
        "user_id": user.user_id,
        "display_name": user.display_name,
        "email": user.email,
        "date_of_birth": user.date_of_birth,
        "hint": person_hint(user),
        "has_password": user.has_password,
    }


def message_json(message: msg_pb.Message, users: dict[str, auth_pb.User], person: Person) -> dict:
    return {
        "message_id": message.message_id,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "sender_id": message.sender_id,
        "sender_name": display_name(users, message.sender_id),
        "body": message.body,
        "created_at": iso(message.created_at),
        "mine": message.sender_id == person.user_id,
    }


def person_json(person: Person) -> dict:
    kinds = {auth_pb.SESSION_KIND_FULL: "full", auth_pb.SESSION_KIND_MAGIC_LINK: "magic_link"}
    return {
        **user_json(person.user),
        "practice_id": person.user.practice_id,
        "session": {
            "kind": kinds.get(person.session.kind, "unknown"),
            "expires_at": iso(person.session.expires_at),
            "conversation_id": person.session.conversation_id,
        },
    }
