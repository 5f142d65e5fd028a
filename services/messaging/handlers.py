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
- sending: the practice's switch for the conversation's kind (secure messaging
  when a client is in it, team messaging between staff) and the client's own
  switch must be on; a disabled client's conversations stay readable;
- read state for delayed staff emails: the notify service only.
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
from services.messaging.storage import (
    CLIENT_TURNED_OFF,
    AuditEntry,
    Conversation,
    Event,
    IdempotencyKeyTaken,
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


def _sending_refusal(settings: PracticeSettings, conversation: Conversation) -> str | None:
    """Why a send in this conversation would be refused now; None when it would be accepted."""
    if not conversation.client_id:
        if not settings.team_messaging_enabled:
            return "Team messaging is turned off for this practice."
        return None
    if not settings.secure_messaging_enabled:
        return "Secure messaging is turned off for this practice."
    if not conversation.client_enabled:
        return CLIENT_TURNED_OFF
    return None


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

    async def get_client_messaging(self, client_id: str) -> bool:
        """Whether the client can be messaged: their own switch and the practice's."""
        who = require_staff()
        client_id = await self._client_of_practice(who, client_id)
        settings = await self._storage.practice_settings(who.practice_id)
        enabled = await self._storage.client_messaging_enabled(client_id, who.practice_id)
        return enabled and settings.secure_messaging_enabled

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
        """Turn a client's messaging off: their conversations stay readable, sends stop."""
        who = require_staff()
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

    async def open_conversation(self, participant_ids: list[str]) -> tuple[Conversation, bool]:
        """The caller's conversation with exactly these other people, created if needed.

        A service account (messaging.send) is never a participant: it opens the
        conversation of exactly these people, which must include a staff member.
        """
        who = _staff_or_account(SCOPE_SEND)
        _full_session(who)
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
        client_id = clients[0] if clients else None
        settings = await self._storage.practice_settings(who.practice_id)
        if client_id and not settings.secure_messaging_enabled:
            raise FailedPrecondition("Secure messaging is turned off for this practice.")
        if not client_id and not settings.team_messaging_enabled:
            raise FailedPrecondition("Team messaging is turned off for this practice.")
        if client_id and not await self._storage.client_messaging_enabled(client_id, who.practice_id):
            raise FailedPrecondition("Secure messaging is not enabled for this client.")
        # A service account opens the conversation of the others, seen as its first staff member.
        members, viewer = [(who.user_id, True)], who.user_id
        if who.is_service_account:
            staff = [p for p in others if people[p].is_staff]
            if not staff:
                raise InvalidArgument(
                    "A practice system's conversation must include a clinician or team member."
                )
            members, viewer = [], staff[0]

        key = ",".join(sorted([m for m, _ in members] + others))
        existing = await self._storage.conversation_by_participants(who.practice_id, key, viewer)
        if existing is not None:
            return self._with_can_send(existing, settings), False
        created = await self._storage.create_conversation(
            practice_id=who.practice_id,
            client_id=client_id,
            participant_key=key,
            participants=members + [(p, people[p].is_staff) for p in others],
            creator_id=who.user_id,
        )
        conversation = await self._storage.conversation_by_participants(who.practice_id, key, viewer)
        if conversation is None:  # pragma: no cover - created or found just above
            raise Unavailable("The conversation could not be opened; please try again.")
        if created:
            log.info(
                "conversation created", extra={"fields": {"conversation_id": conversation.conversation_id}}
            )
        return self._with_can_send(conversation, settings), created

    @staticmethod
    def _with_can_send(conversation: Conversation, settings: PracticeSettings) -> Conversation:
        return replace(conversation, can_send=_sending_refusal(settings, conversation) is None)

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
        await self._storage.record_audit(
            AuditEntry(
                actor=who.subject,
                action="conversations.list",
                outcome="ok",
                practice_id=who.practice_id,
                detail={"conversation_ids": [c.conversation_id for c in page], "archived": archived},
            )
        )
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
            await self._storage.record_audit(replace(entry, outcome=exc.code.name.lower()))
            raise
        stored = await self._storage.read_messages(
            conversation_id, after_seq, limit, replace(entry, detail={"after_seq": after_seq})
        )
        return [await self._open(conversation, row) for row in stored]

    async def send_message(
        self, conversation_id: str, body: str, idempotency_key: str
    ) -> tuple[Message, bool]:
        """Add a message; the same sender and idempotency key never make a second one."""
        who = _person_or_account(SCOPE_SEND)
        conversation_id = _parse_id(conversation_id, "conversation id")
        _check_reach(who, conversation_id)
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
        conversation = await self._reachable_conversation(who, conversation_id)
        digest = await self._cipher.digest(who.practice_id, text)

        for _ in range(SEND_ATTEMPTS):
            existing = await self._storage.message_by_idempotency_key(who.user_id, idempotency_key)
            if existing is not None:
                return await self._replay(conversation, existing, digest), False
            refusal = _sending_refusal(await self._storage.practice_settings(who.practice_id), conversation)
            if refusal is not None:
                raise FailedPrecondition(refusal)
            message_id = str(uuid.uuid4())
            sealed = await self._cipher.seal(
                who.practice_id, text, associated_data(who.practice_id, conversation_id, message_id)
            )
            try:
                stored = await self._storage.insert_message(
                    NewMessage(
                        message_id=message_id,
                        conversation_id=conversation_id,
                        practice_id=who.practice_id,
                        sender_id=who.user_id,
                        sealed=sealed,
                        body_digest=digest,
                        idempotency_key=idempotency_key,
                        notification_event_id=str(uuid.uuid4()),
                    ),
                    AuditEntry(
                        actor=who.subject,
                        action="message.send",
                        outcome="ok",
                        practice_id=who.practice_id,
                        detail={"conversation_id": conversation_id},
                    ),
                )
            except IdempotencyKeyTaken:
                # A concurrent send with this key won the race: answer with its message.
                log.info("idempotency key race lost", extra={"fields": {"conversation_id": conversation_id}})
                continue
            return (
                Message(
                    message_id=stored.message_id,
                    conversation_id=conversation_id,
                    seq=stored.seq,
                    sender_id=who.user_id,
                    body=text,
                    created_at=stored.created_at,
                ),
                True,
            )
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
