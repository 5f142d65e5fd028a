"""Messaging's domain logic and authorization.

Who may do what is decided here, in the owning service:
- practice settings: any person of the practice reads them; only the owner changes them;
- client enablement: staff only (full session), for clients of their own
  practice (asked of auth); auth's service reports new clients for automatic enablement;
- conversations: staff open them; only participants see or touch one (anyone
  else gets NOT_FOUND, so existence is not revealed); services are never
  participants; a magic-link session reaches only the conversation its link
  was sent for (and may archive that one: archiving changes only the caller's
  own list);
- finding a conversation and starting one with its first message (SendMessage to
  participant_ids) follow OpenConversation's rules; a conversation is listed to nobody
  until it has a message;
- sending: the practice's switch for the conversation's kind (secure messaging
  when a client is in it, team messaging between staff) and the client's own
  switch must be on (services/messaging/sending.py says which wins and in what
  words); a disabled client's conversations stay readable;
- read state for delayed staff emails: the notify service only.

Every audit row about a conversation with a client names the client (its target or
``detail.client_id``), so the owner's trail filtered by the client finds it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime

from services.common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.common.identity import (
    Principal,
    caller,
    require_scope,
    require_service,
    require_staff,
    require_user,
)
from services.messaging.crypto import DecryptionError, associated_data
from services.messaging.directory import Directory
from services.messaging.events import EventHub
from services.messaging.keyring import Keyring
from services.messaging.sending import CannotSend, cannot_send
from services.messaging.storage import (
    AuditEntry,
    Conversation,
    Event,
    IdempotencyKeyTaken,
    NewConversation,
    NewMessage,
    PracticeSettings,
    Storage,
    StoredMessage,
)

log = logging.getLogger("confidant.messaging")

CONVERSATIONS_PAGE = (20, 100)  # (default, largest) page sizes
MESSAGES_PAGE = (50, 200)
CONTACTS_PAGE = (10, 100)
# The other people one conversation may hold besides the person opening it.
MAX_OTHER_PARTICIPANTS = 20
MAX_IDEMPOTENCY_KEY_CHARS = 200
STREAM_BATCH = 100
# A send that keeps losing idempotency races to sends that then roll back gives up.
SEND_ATTEMPTS = 3
MAGIC_LINK = "magic_link"
# Who may turn a client's secure messaging off (see disable_client_messaging).
DISABLE_ROLES = ("owner", "clinician")
SETTINGS_FIELDS = ("secure_messaging_enabled", "auto_enable_new_clients", "team_messaging_enabled")
# The start of the last message shown in the conversation list.
PREVIEW_CHARS = 100


@dataclass(frozen=True)
class Message:
    message_id: str
    conversation_id: str
    seq: int
    sender_id: str
    body: str
    created_at: datetime


@dataclass(frozen=True)
class Limits:
    client_max_chars: int
    staff_max_chars: int


@dataclass(frozen=True)
class Sent:
    message: Message
    # False when the idempotency key had been used already: this is the first send's message.
    created: bool
    # True when this message created its conversation.
    conversation_created: bool = False


@dataclass(frozen=True)
class Recipients:
    """The people a caller names for a conversation, checked (see ``Handlers._recipients``)."""

    practice_id: str
    # The client among them; None between staff.
    client_id: str | None
    # (user_id, is_staff) of every participant: the caller first, unless a service account.
    participants: tuple[tuple[str, bool], ...]
    participant_key: str
    # Whose view of the conversation is returned: the caller, or a service account's first staff member.
    viewer: str


@dataclass(frozen=True)
class Found:
    """FindConversation's answer: the conversation if there is one, and whether one can send."""

    conversation: Conversation | None
    cannot_send_reason: CannotSend | None

    @property
    def can_send(self) -> bool:
        return self.cannot_send_reason is None


# OpenConversation's refusals keep the words practice systems and the web edge have had
# from it since before the reasons existed; SendMessage says CannotSend's own.
_OPEN_REFUSALS = {
    CannotSend.PRACTICE_DISABLED: "Secure messaging is turned off for this practice.",
    CannotSend.CLIENT_DISABLED: "Secure messaging is not enabled for this client.",
    CannotSend.TEAM_DISABLED: "Team messaging is turned off for this practice.",
}


def _parse_id(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"The {what} is not a valid id.") from None


def _page_size(requested: int, sizes: tuple[int, int]) -> int:
    default, largest = sizes
    if requested < 0:
        raise InvalidArgument("The page size cannot be negative.")
    return min(requested or default, largest)


def _encode_page_token(conversation: Conversation) -> str:
    raw = json.dumps([conversation.last_activity_at.isoformat(), conversation.conversation_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        at, conversation_id = json.loads(raw)
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("naive timestamp")
        return moment, str(uuid.UUID(conversation_id))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("The page token is not valid.") from None


def _magic_conversation(who: Principal) -> str | None:
    """The one conversation a magic-link session may reach; None for full sessions."""
    if who.session_kind != MAGIC_LINK:
        return None
    try:
        return str(uuid.UUID(who.conversation_id))
    except ValueError:
        raise PermissionDenied("This quick sign-in does not reach any conversation.") from None


def _check_reach(who: Principal, conversation_id: str) -> None:
    only = _magic_conversation(who)
    if only is not None and only != conversation_id:
        raise PermissionDenied("This quick sign-in reaches only the conversation it was sent for.")


# What a practice's service account may do, by scope.
SCOPE_SEND = "messaging.send"
SCOPE_READ = "messaging.read"


def _staff_or_account(scope: str) -> Principal:
    """Staff, or a service account of the practice holding ``scope``."""
    who = caller()
    return require_scope(scope) if who.is_service_account else require_staff()


def _person_or_account(scope: str) -> Principal:
    """A signed-in person, or a service account of the practice holding ``scope``."""
    who = caller()
    return require_scope(scope) if who.is_service_account else require_user()


def _full_session(who: Principal) -> None:
    if who.session_kind == MAGIC_LINK:
        raise PermissionDenied("Sign in with your email and password to do this.")


def _cannot_send(settings: PracticeSettings, client_id: str | None, client_enabled: bool) -> CannotSend | None:
    return cannot_send(
        client_id=client_id,
        client_enabled=client_enabled,
        secure_messaging_enabled=settings.secure_messaging_enabled,
        team_messaging_enabled=settings.team_messaging_enabled,
    )


def _about(client_id: str | None) -> dict:
    """The audit detail naming the client a row is about."""
    return {"client_id": client_id} if client_id else {}


class Handlers:
    def __init__(
        self,
        storage: Storage,
        directory: Directory,
        cipher: Keyring,
        hub: EventHub,
        limits: Limits,
    ) -> None:
        self._storage = storage
        self._directory = directory
        self._cipher = cipher
        self._hub = hub
        self._limits = limits

    # -- practice settings -------------------------------------------------

    async def get_practice_settings(self) -> PracticeSettings:
        who = require_user()
        return await self._storage.practice_settings(who.practice_id)

    async def update_practice_settings(
        self, settings: PracticeSettings | None, update_mask: list[str] | None = None
    ) -> PracticeSettings:
        """Save the practice's settings (the owner). ``update_mask`` names the fields to change;
        empty changes them all (a caller that omits a field then turns it off, as proto3 reads it)."""
        who = require_user("owner")
        _full_session(who)
        if settings is None:
            raise InvalidArgument("The new settings are required.")
        if update_mask:
            unknown = sorted(set(update_mask) - set(SETTINGS_FIELDS))
            if unknown:
                raise InvalidArgument(
                    f"update_mask names {unknown[0]!r}; the settings are {', '.join(SETTINGS_FIELDS)}."
                )
            current = await self._storage.practice_settings(who.practice_id)
            settings = replace(current, **{name: getattr(settings, name) for name in update_mask})
        return await self._storage.save_practice_settings(
            who.practice_id,
            settings,
            AuditEntry(
                actor=who.subject,
                action="practice_settings.update",
                outcome="ok",
                target=who.practice_id,
                practice_id=who.practice_id,
                detail={
                    "secure_messaging_enabled": settings.secure_messaging_enabled,
                    "auto_enable_new_clients": settings.auto_enable_new_clients,
                    "team_messaging_enabled": settings.team_messaging_enabled,
                },
            ),
        )

    async def rotate_data_key(self) -> int:
        """A new version of the practice's message data key (the owner only; audited as
        ``data_key.rotate``). New messages use it; older ones keep theirs."""
        who = require_user("owner")
        _full_session(who)
        return await self._cipher.rotate(who.practice_id, actor=who.subject)

    # -- client enablement -------------------------------------------------

    async def _client_of_practice(self, who: Principal, client_id: str) -> str:
        client_id = _parse_id(client_id, "client id")
        person = (await self._directory.people([client_id])).get(client_id)
        if person is None or person.practice_id != who.practice_id or not person.is_client:
            raise NotFound("No such client.")
        return client_id

    async def get_client_messaging(self, client_id: str) -> tuple[bool, bool]:
        """(the client's own switch, the practice's "secure messaging with clients"): the
        client can be messaged when both are on, and the page says which one is off."""
        who = require_staff()
        client_id = await self._client_of_practice(who, client_id)
        settings = await self._storage.practice_settings(who.practice_id)
        enabled = await self._storage.client_messaging_enabled(client_id, who.practice_id)
        return enabled, settings.secure_messaging_enabled

    async def enable_client_messaging(self, client_id: str) -> bool:
        who = require_staff()
        _full_session(who)
        client_id = await self._client_of_practice(who, client_id)
        settings = await self._storage.practice_settings(who.practice_id)
        if not settings.secure_messaging_enabled:
            raise FailedPrecondition("Secure messaging is turned off for this practice.")
        changed = await self._storage.enable_client_messaging(client_id, who.practice_id, who.subject)
        log.info("client messaging enabled", extra={"fields": {"client_id": client_id, "changed": changed}})
        if changed:
            await self._directory.invite_if_no_password(client_id)
        return True

    async def disable_client_messaging(self, client_id: str) -> bool:
        """Turn a client's messaging off: their conversations stay readable, sends stop.

        Clinicians and the owner only: cutting a client off from their care team is a clinical
        decision, not an administrative one (team members may enable, to onboard clients)."""
        who = require_user(*DISABLE_ROLES)
        _full_session(who)
        client_id = await self._client_of_practice(who, client_id)
        changed = await self._storage.disable_client_messaging(client_id, who.practice_id, who.subject)
        log.info("client messaging disabled", extra={"fields": {"client_id": client_id, "changed": changed}})
        return False

    async def handle_client_created(self, practice_id: str, client_id: str) -> bool:
        """auth's hook for a new client: enable and invite them when the practice says so.

        Delivered at least once: only a client messaging has never seen is
        enabled (and invited), so a repeat has no effect, and a client disabled
        in the meantime stays disabled. Returns whether the client can be messaged.
        """
        who = require_service("auth")
        practice_id = _parse_id(practice_id, "practice id")
        client_id = _parse_id(client_id, "client id")
        person = (await self._directory.people([client_id])).get(client_id)
        if person is None or person.practice_id != practice_id or not person.is_client:
            raise NotFound("No such client in this practice.")
        settings = await self._storage.practice_settings(practice_id)
        if settings.secure_messaging_enabled and settings.auto_enable_new_clients:
            changed = await self._storage.enable_client_messaging(
                client_id, practice_id, who.subject, only_if_new=True, detail={"automatic": True}
            )
            log.info(
                "new client enabled automatically",
                extra={"fields": {"client_id": client_id, "changed": changed}},
            )
            if changed:
                await self._directory.invite_if_no_password(client_id)
        enabled = await self._storage.client_messaging_enabled(client_id, practice_id)
        return enabled and settings.secure_messaging_enabled

    # -- conversations -----------------------------------------------------

    async def _participant_conversation(self, who: Principal, conversation_id: str) -> Conversation:
        _check_reach(who, conversation_id)
        conversation = await self._storage.conversation_for(conversation_id, who.user_id, who.practice_id)
        if conversation is None:
            raise NotFound("No such conversation.")
        return conversation

    async def _reachable_conversation(self, who: Principal, conversation_id: str) -> Conversation:
        """A participant's conversation, or for a service account any of its practice's."""
        if not who.is_service_account:
            return await self._participant_conversation(who, conversation_id)
        conversation = await self._storage.practice_conversation(conversation_id, who.practice_id)
        if conversation is None:
            raise NotFound("No such conversation.")
        return conversation

    async def _recipients(self, who: Principal, participant_ids: list[str]) -> Recipients:
        """The conversation the caller names by its other people, checked: each is a staff
        member or client of the caller's practice (else NOT_FOUND), at most one client, at
        least one other person. A service account (messaging.send) is never a participant:
        it names the conversation of exactly these people, which must include a staff member."""
        others: list[str] = []
        for raw in participant_ids:
            person_id = _parse_id(raw, "participant id")
            if person_id != who.user_id and person_id not in others:
                others.append(person_id)
        if not others:
            raise InvalidArgument("Choose at least one other person for the conversation.")
        if len(others) > MAX_OTHER_PARTICIPANTS:
            raise InvalidArgument(
                f"A conversation can include at most {MAX_OTHER_PARTICIPANTS} other people."
            )
        people = await self._directory.people(others)
        for person_id in others:
            person = people.get(person_id)
            if (
                person is None
                or person.practice_id != who.practice_id
                or not (person.is_staff or person.is_client)
            ):
                raise NotFound("No such person in your practice.")
        clients = [person_id for person_id in others if people[person_id].is_client]
        if len(clients) > 1:
            raise InvalidArgument("A conversation can include at most one client.")
        members, viewer = [(who.user_id, True)], who.user_id
        if who.is_service_account:
            staff = [p for p in others if people[p].is_staff]
            if not staff:
                raise InvalidArgument(
                    "A practice system's conversation must include a clinician or team member."
                )
            members, viewer = [], staff[0]
        return Recipients(
            practice_id=who.practice_id,
            client_id=clients[0] if clients else None,
            participants=tuple(members + [(p, people[p].is_staff) for p in others]),
            participant_key=",".join(sorted([m for m, _ in members] + others)),
            viewer=viewer,
        )

    async def _cannot_send_to(
        self, recipients: Recipients, settings: PracticeSettings, existing: Conversation | None = None
    ) -> CannotSend | None:
        """Why nobody could send to these people now (in their conversation, or by starting one)."""
        if existing is not None:
            return _cannot_send(settings, existing.client_id, existing.client_enabled)
        client_enabled = bool(recipients.client_id) and await self._storage.client_messaging_enabled(
            recipients.client_id, recipients.practice_id
        )
        return _cannot_send(settings, recipients.client_id, client_enabled)

    def _new_conversation(self, who: Principal, recipients: Recipients) -> tuple[NewConversation, AuditEntry]:
        new = NewConversation(
            conversation_id=str(uuid.uuid4()),
            practice_id=recipients.practice_id,
            client_id=recipients.client_id,
            participant_key=recipients.participant_key,
            participants=recipients.participants,
            creator_id=who.user_id,
        )
        entry = AuditEntry(
            actor=who.subject, action="conversation.create", outcome="ok", practice_id=who.practice_id
        )
        return new, entry

    async def open_conversation(self, participant_ids: list[str]) -> tuple[Conversation, bool]:
        """The caller's conversation with exactly these other people, created (empty) if needed.

        It is listed to nobody until its first message; the web edge instead finds the
        conversation and creates it with its first message (``send_message`` to participants).
        """
        who = _staff_or_account(SCOPE_SEND)
        _full_session(who)
        recipients = await self._recipients(who, participant_ids)
        settings = await self._storage.practice_settings(who.practice_id)
        reason = await self._cannot_send_to(recipients, settings)
        if reason is not None:
            raise FailedPrecondition(_OPEN_REFUSALS[reason])
        key, viewer = recipients.participant_key, recipients.viewer
        existing = await self._storage.conversation_by_participants(who.practice_id, key, viewer)
        if existing is not None:
            return self._with_can_send(existing, settings), False
        created = await self._storage.create_conversation(*self._new_conversation(who, recipients))
        conversation = await self._storage.conversation_by_participants(who.practice_id, key, viewer)
        if conversation is None:  # pragma: no cover - created or found just above
            raise Unavailable("The conversation could not be opened; please try again.")
        if created:
            log.info(
                "conversation created", extra={"fields": {"conversation_id": conversation.conversation_id}}
            )
        return self._with_can_send(conversation, settings), created

    async def find_conversation(self, participant_ids: list[str]) -> Found:
        """The caller's conversation with exactly these other people if there is one, and
        whether the caller could send to them now (and why not). Creates nothing.

        Who may ask is who may open one (OpenConversation's rules). Like GetConversation
        it reads conversation metadata, not messages, so it is not an audited PHI read.
        """
        who = _staff_or_account(SCOPE_SEND)
        _full_session(who)
        recipients = await self._recipients(who, participant_ids)
        settings = await self._storage.practice_settings(who.practice_id)
        existing = await self._storage.conversation_by_participants(
            who.practice_id, recipients.participant_key, recipients.viewer
        )
        reason = await self._cannot_send_to(recipients, settings, existing)
        return Found(
            conversation=None if existing is None else self._with_can_send(existing, settings),
            cannot_send_reason=reason,
        )

    @staticmethod
    def _with_can_send(conversation: Conversation, settings: PracticeSettings) -> Conversation:
        reason = _cannot_send(settings, conversation.client_id, conversation.client_enabled)
        return replace(conversation, can_send=reason is None, cannot_send_reason=reason)

    async def get_conversation(self, conversation_id: str) -> Conversation:
        """A participant's conversation, or (messaging.read) any of a practice system's practice."""
        who = _person_or_account(SCOPE_READ)
        conversation = await self._reachable_conversation(who, _parse_id(conversation_id, "conversation id"))
        return self._with_can_send(conversation, await self._storage.practice_settings(who.practice_id))

    async def list_conversations(
        self, page_size: int, page_token: str, archived: bool = False
    ) -> tuple[list[Conversation], str]:
        """A page of the caller's conversations (archived ones, or the others), newest
        activity first, each with its unread count and a preview of its last message.

        Previews are decrypted for participants only; a practice's service account
        sees the whole practice's conversations without them (and has archived none).
        The page is one query; showing it is a PHI read, audited with its ids.
        """
        who = _person_or_account(SCOPE_READ)
        limit = _page_size(page_size, CONVERSATIONS_PAGE)
        after = _decode_page_token(page_token)
        if who.is_service_account:
            rows = (
                []
                if archived
                else await self._storage.practice_conversations(who.practice_id, limit + 1, after=after)
            )
        else:
            rows = await self._storage.list_conversations(
                who.user_id,
                who.practice_id,
                limit + 1,
                after=after,
                only_conversation=_magic_conversation(who),
                archived=archived,
            )
        next_token = _encode_page_token(rows[limit - 1]) if len(rows) > limit else ""
        settings = await self._storage.practice_settings(who.practice_id)
        page = []
        for row in rows[:limit]:
            preview = "" if who.is_service_account else await self._preview(row)
            page.append(replace(self._with_can_send(row, settings), preview=preview))
        await self._storage.record_audits(_list_audit(who, page, archived))
        return page, next_token

    async def _preview(self, conversation: Conversation) -> str:
        """The start of the last message; empty when there is none or it cannot be read
        (that is logged, and the thread itself then says so)."""
        if conversation.last_message is None:
            return ""
        try:
            message = await self._open(conversation, conversation.last_message)
        except DomainError:
            return ""
        return message.body[:PREVIEW_CHARS]

    async def archive_conversation(self, conversation_id: str, archived: bool) -> bool:
        """Archive (or bring back) a conversation in the caller's own list. Audited.

        Any participant may, a magic-link session too (for its one conversation):
        it hides nothing from anyone else, and a new message brings it back.
        """
        who = require_user()
        conversation_id = _parse_id(conversation_id, "conversation id")
        _check_reach(who, conversation_id)
        changed = await self._storage.set_archived(
            conversation_id,
            who.user_id,
            archived,
            AuditEntry(
                actor=who.subject,
                action="conversation.archive" if archived else "conversation.unarchive",
                outcome="ok",
                target=conversation_id,
                practice_id=who.practice_id,
            ),
        )
        if changed is None:
            raise NotFound("No such conversation.")
        return archived

    async def read_state(self, conversation_id: str, user_id: str) -> tuple[bool, int, int]:
        """(participant, read_seq, last_seq) for notify's delayed staff emails (notify only)."""
        require_service("notify")
        state = await self._storage.read_state(
            _parse_id(conversation_id, "conversation id"), _parse_id(user_id, "user id")
        )
        if state is None:
            return False, 0, 0
        return True, state[0], state[1]

    # -- messages ----------------------------------------------------------

    async def _open(self, conversation: Conversation, stored: StoredMessage) -> Message:
        aad = associated_data(conversation.practice_id, conversation.conversation_id, stored.message_id)
        try:
            body = await self._cipher.open(conversation.practice_id, stored.sealed, aad)
        except DecryptionError:
            log.error(
                "message body failed to decrypt",
                extra={
                    "fields": {"message_id": stored.message_id, "conversation_id": stored.conversation_id}
                },
            )
            raise DomainError(
                "A message in this conversation cannot be read; the operators have been alerted."
            ) from None
        return Message(
            message_id=stored.message_id,
            conversation_id=stored.conversation_id,
            seq=stored.seq,
            sender_id=stored.sender_id,
            body=body,
            created_at=stored.created_at,
        )

    async def list_messages(self, conversation_id: str, after_seq: int, page_size: int) -> list[Message]:
        """A page of messages, oldest first. A PHI read: every call is audited, refused ones too."""
        entry = AuditEntry(
            actor=caller().subject, action="messages.read", outcome="ok", practice_id=caller().practice_id
        )
        try:
            who = _person_or_account(SCOPE_READ)
            conversation_id = _parse_id(conversation_id, "conversation id")
            entry = replace(entry, target=conversation_id)
            if after_seq < 0:
                raise InvalidArgument("after_seq cannot be negative.")
            limit = _page_size(page_size, MESSAGES_PAGE)
            conversation = await self._reachable_conversation(who, conversation_id)
        except DomainError as exc:
            # A refused read of one of the practice's conversations still names its client.
            client_id = None
            if entry.target and entry.practice_id:
                client_id = await self._storage.conversation_client(entry.target, entry.practice_id)
            await self._storage.record_audit(
                replace(entry, outcome=exc.code.name.lower(), detail=_about(client_id))
            )
            raise
        stored = await self._storage.read_messages(
            conversation_id,
            after_seq,
            limit,
            replace(entry, detail={"after_seq": after_seq, **_about(conversation.client_id)}),
        )
        return [await self._open(conversation, row) for row in stored]

    async def send_message(
        self, conversation_id: str, body: str, idempotency_key: str, participant_ids: list[str] | None = None
    ) -> Sent:
        """Add a message; the same sender and idempotency key never make a second one.

        The message goes to ``conversation_id``, or (instead) to the caller's conversation
        with ``participant_ids``, which this message creates when there is none.
        """
        who = _person_or_account(SCOPE_SEND)
        if bool(conversation_id) == bool(participant_ids):
            raise InvalidArgument(
                "Give either the conversation or the people to send to, not both."
                if conversation_id
                else "Say where the message goes: a conversation or the people to send to."
            )
        if participant_ids:
            # Starting a conversation is opening one: OpenConversation's rules.
            _staff_or_account(SCOPE_SEND)
            _full_session(who)
            text = self._checked_body(who, body, idempotency_key)
            return await self._send_to_people(who, participant_ids, text, idempotency_key)
        conversation_id = _parse_id(conversation_id, "conversation id")
        _check_reach(who, conversation_id)
        text = self._checked_body(who, body, idempotency_key)
        conversation = await self._reachable_conversation(who, conversation_id)
        digest = await self._cipher.digest(who.practice_id, text)

        for _ in range(SEND_ATTEMPTS):
            existing = await self._storage.message_by_idempotency_key(who.user_id, idempotency_key)
            if existing is not None:
                return Sent(await self._replay(conversation, existing, digest), created=False)
            settings = await self._storage.practice_settings(who.practice_id)
            reason = _cannot_send(settings, conversation.client_id, conversation.client_enabled)
            if reason is not None:
                raise FailedPrecondition(reason.message)
            try:
                return Sent(await self._append(who, conversation_id, text, digest, idempotency_key), created=True)
            except IdempotencyKeyTaken:
                # A concurrent send with this key won the race: answer with its message.
                log.info("idempotency key race lost", extra={"fields": {"conversation_id": conversation_id}})
        raise Unavailable("The message could not be sent; please try again.")

    def _checked_body(self, who: Principal, body: str, idempotency_key: str) -> str:
        """The message text to store (trimmed), after the length and idempotency-key rules."""
        text = body.strip()
        if not text:
            raise InvalidArgument("A message cannot be empty.")
        if who.is_client:
            limit, whose = self._limits.client_max_chars, "clients"
        else:
            limit, whose = self._limits.staff_max_chars, "staff"
        if len(text) > limit:
            raise InvalidArgument(f"Messages from {whose} can be at most {limit:,} characters.")
        if not idempotency_key:
            raise InvalidArgument("Every message needs an idempotency key.")
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS:
            raise InvalidArgument(
                f"The idempotency key can be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters."
            )
        return text

    async def _new_message(
        self, who: Principal, conversation_id: str, text: str, digest: bytes, idempotency_key: str
    ) -> tuple[NewMessage, AuditEntry]:
        """The message sealed for its conversation (its ids are the associated data), and its audit row."""
        message_id = str(uuid.uuid4())
        sealed = await self._cipher.seal(
            who.practice_id, text, associated_data(who.practice_id, conversation_id, message_id)
        )
        new = NewMessage(
            message_id=message_id,
            conversation_id=conversation_id,
            practice_id=who.practice_id,
            sender_id=who.user_id,
            sealed=sealed,
            body_digest=digest,
            idempotency_key=idempotency_key,
            notification_event_id=str(uuid.uuid4()),
        )
        entry = AuditEntry(
            actor=who.subject,
            action="message.send",
            outcome="ok",
            practice_id=who.practice_id,
            detail={"conversation_id": conversation_id},
        )
        return new, entry

    @staticmethod
    def _sent_message(new: NewMessage, stored: StoredMessage, text: str) -> Message:
        return Message(
            message_id=stored.message_id,
            conversation_id=new.conversation_id,
            seq=stored.seq,
            sender_id=new.sender_id,
            body=text,
            created_at=stored.created_at,
        )

    async def _append(
        self, who: Principal, conversation_id: str, text: str, digest: bytes, idempotency_key: str
    ) -> Message:
        """Seal and store a message in an existing conversation (raises ``IdempotencyKeyTaken``)."""
        new, entry = await self._new_message(who, conversation_id, text, digest, idempotency_key)
        return self._sent_message(new, await self._storage.insert_message(new, entry), text)

    async def _send_to_people(
        self, who: Principal, participant_ids: list[str], text: str, idempotency_key: str
    ) -> Sent:
        """Send to the caller's conversation with these people, creating it with this message.

        Concurrent first sends to the same people end in one conversation: the one whose
        transaction creates it wins, the others (waiting on the conversation's unique key)
        find it on their next attempt and send into it.
        """
        recipients = await self._recipients(who, participant_ids)
        digest = await self._cipher.digest(who.practice_id, text)
        for _ in range(SEND_ATTEMPTS):
            conversation = await self._storage.conversation_by_participants(
                who.practice_id, recipients.participant_key, recipients.viewer
            )
            existing = await self._storage.message_by_idempotency_key(who.user_id, idempotency_key)
            if existing is not None:
                if conversation is None:
                    raise FailedPrecondition("This idempotency key was already used for a different message.")
                return Sent(await self._replay(conversation, existing, digest), created=False)
            settings = await self._storage.practice_settings(who.practice_id)
            reason = await self._cannot_send_to(recipients, settings, conversation)
            if reason is not None:
                raise FailedPrecondition(reason.message)
            try:
                if conversation is not None:
                    message = await self._append(
                        who, conversation.conversation_id, text, digest, idempotency_key
                    )
                    return Sent(message, created=True)
                new_conversation, conversation_entry = self._new_conversation(who, recipients)
                new, entry = await self._new_message(
                    who, new_conversation.conversation_id, text, digest, idempotency_key
                )
                stored = await self._storage.create_conversation_with_message(
                    new_conversation, conversation_entry, new, replace(entry, detail={
                        **entry.detail, "conversation_created": True})
                )
            except IdempotencyKeyTaken:
                log.info("idempotency key race lost", extra={"fields": {"participants": len(participant_ids)}})
                continue
            if stored is None:
                # A concurrent first send created the conversation: this message goes into it.
                continue
            log.info(
                "conversation created with its first message",
                extra={"fields": {"conversation_id": new.conversation_id}},
            )
            return Sent(self._sent_message(new, stored, text), created=True, conversation_created=True)
        raise Unavailable("The message could not be sent; please try again.")

    async def _replay(self, conversation: Conversation, existing: StoredMessage, digest: bytes) -> Message:
        same = existing.conversation_id == conversation.conversation_id and hmac.compare_digest(
            existing.body_digest, digest
        )
        if not same:
            raise FailedPrecondition("This idempotency key was already used for a different message.")
        return await self._open(conversation, existing)

    async def mark_read(self, conversation_id: str, read_seq: int) -> int:
        who = require_user()
        conversation_id = _parse_id(conversation_id, "conversation id")
        _check_reach(who, conversation_id)
        if read_seq < 0:
            raise InvalidArgument("read_seq cannot be negative.")
        cursor = await self._storage.mark_read(conversation_id, who.user_id, read_seq)
        if cursor is None:
            raise NotFound("No such conversation.")
        return cursor

    async def unread_summary(self) -> tuple[int, int]:
        who = require_user()
        return await self._storage.unread_summary(
            who.user_id, who.practice_id, only_conversation=_magic_conversation(who)
        )

    async def recent_contacts(self, page_size: int) -> list[str]:
        who = require_staff()
        _full_session(who)
        return await self._storage.recent_contacts(
            who.user_id, who.practice_id, _page_size(page_size, CONTACTS_PAGE)
        )

    # -- live events -------------------------------------------------------

    async def stream_events(self, after_event_id: int, until: float | None = None) -> AsyncIterator[Event]:
        """The caller's events after a cursor, then live ones as they commit.

        ``after_event_id`` 0 means only new events. Ends when ``until`` (by
        default the caller's access token expiry, epoch seconds) passes, so a
        session that ended stops receiving; the client reconnects with a fresh
        token and its last event id. Ends too when the server shuts down.
        """
        who = require_user()
        if until is None and who.expires_at:
            until = float(who.expires_at)
        only = _magic_conversation(who)
        if after_event_id < 0:
            raise InvalidArgument("after_event_id cannot be negative.")
        async with self._hub.subscription():
            high_water = await self._hub.current()
            if after_event_id > high_water:
                raise InvalidArgument("The event cursor is not valid.")
            cursor = after_event_id or high_water
            while True:
                while cursor < high_water:
                    batch = await self._storage.events_for(
                        who.user_id, cursor, high_water, STREAM_BATCH, only
                    )
                    for event in batch:
                        yield event
                    cursor = batch[-1].event_id if len(batch) == STREAM_BATCH else high_water
                timeout = None if until is None else until - time.time()
                if timeout is not None and timeout <= 0:
                    return
                try:
                    # asyncio.timeout rather than wait_for, which can swallow a cancellation on 3.11.
                    async with asyncio.timeout(timeout):
                        high_water = await self._hub.wait_beyond(high_water)
                except TimeoutError:
                    return
                if self._hub.closed and cursor >= high_water:
                    return


def _list_audit(who: Principal, page: list[Conversation], archived: bool) -> list[AuditEntry]:
    """A page of the list is a PHI read (previews): one audit row per client whose
    conversations it showed, naming them, and one for conversations among staff (or for an
    empty page), so the owner's trail filtered by a client finds every list that showed them."""
    by_client: dict[str | None, list[str]] = {}
    for conversation in page:
        by_client.setdefault(conversation.client_id or None, []).append(conversation.conversation_id)
    if not by_client:
        by_client[None] = []
    return [
        AuditEntry(
            actor=who.subject,
            action="conversations.list",
            outcome="ok",
            practice_id=who.practice_id,
            detail={"conversation_ids": ids, "archived": archived, **_about(client_id)},
        )
        for client_id, ids in by_client.items()
    ]
