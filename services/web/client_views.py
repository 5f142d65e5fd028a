"""Staff pages for the practice's clients and its messaging settings.

- /clients: the Clients list (search as you type, "Load more") and "Add client";
- /clients/{id}: Client Info (name and email from auth, "Phone number" and
  "Text message ok" from consent, "Discreet notifications" from notify) and the
  client's secure messaging switch;
- /settings: the practice's messaging settings (the owner changes them, other
  staff read them), and the owner's "Send failed alerts again".

Every page works without the script (plain forms and GET links); the script
only makes the search answer while typing. Each service checks again who may
do what; the edge shows its answers. Results come back after a redirect that
carries no names or addresses, only flags (``?saved=1``).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import grpc
from aiohttp import web
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.consent.v1 import consent_service_pb2 as consent_pb
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb
from confidant.notify.v1 import notify_service_pb2 as notify_pb

from services.web.api import (
    CLIENTS_PAGE_SIZE,
    MAX_EMAIL_LENGTH,
    MAX_NAME_LENGTH,
    MAX_QUERY_LENGTH,
    page_token,
    search_query,
)
from services.web.errors import HttpError, from_rpc_error
from services.web.presenters import users_by_id, when
from services.web.rendering import render_staff
from services.web.resources import BACKENDS
from services.web.session import Person, staff_page
from services.web.views import see_other

NO_SUCH_CLIENT = "No such client in your practice."
OWNER_ONLY = "Only the practice owner can change the practice's settings."
REQUEUE_OWNER_ONLY = "Only the practice owner can send failed alerts again."

# Answers of the services that a person can act on from the page; anything else is the error page.
_SHOWN = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
          grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED)


def _shown(exc: grpc.aio.AioRpcError) -> tuple[str, int]:
    if exc.code() not in _SHOWN:
        raise exc
    error = from_rpc_error(exc)
    return error.message, error.status


def _one_line(value: object, limit: int) -> str:
    return " ".join(str(value or "").split())[:limit]


# ---------------------------------------------------------------- words

# Ledger events (services/consent/ledger.py) in words.
EVENT_WORDS = {
    "number_added": "Phone number added",
    "number_changed": "Phone number changed",
    "number_deleted": "Phone number deleted",
    "text_ok_checked": "“Text message ok” ticked",
    "text_ok_unchecked": "“Text message ok” unticked",
    "keyword_stop": "The client replied STOP: texts off",
    "keyword_start": "The client replied START: texts on",
    "help_requested": "The client asked for HELP",
    "confirmation_sent": "Confirmation text sent",
    "free_text_revocation": "The client asked in their own words to stop: texts off",
    "provider_block_seen": "The carrier still blocks texts to this number",
    "provider_opt_in_requested": "Asked the SMS provider to allow texts to this number again",
}
SOURCE_WORDS = {
    "client_info": "Client Info",
    "sms": "Text message",
    "api": "Practice system",
    "provider": "SMS provider",
}
PROVIDER_WORDS = {"sns": "Amazon SNS", "twilio": "Twilio", "development": "development mailbox"}


def _date(value: datetime) -> str:
    """Nov 27, 2026 (UTC, as the services keep time)."""
    return f"{value:%b} {value.day}, {value.year}"


def consent_sentence(phone: consent_pb.ClientPhone) -> str:
    """The consent state in one plain sentence, with the day it began when consent knows it."""
    since_at = when(phone.state_since) if phone.HasField("state_since") else None
    since = f" since {_date(since_at)}" if since_at else ""
    state = phone.state
    if state == consent_pb.CONSENT_STATE_NO_NUMBER or not phone.phone_number:
        return "No phone number on file: no text messages are sent."
    if state == consent_pb.CONSENT_STATE_NOT_GIVEN:
        return f"Text messages are off{since}: “Text message ok” is not ticked."
    if state == consent_pb.CONSENT_STATE_OPTED_IN:
        return f"Text messages are on{since}: alerts go to this number."
    if state == consent_pb.CONSENT_STATE_OPTED_OUT:
        return (f"Text messages are off{since}: the client replied STOP. "
                "They can reply START to turn them back on.")
    if state == consent_pb.CONSENT_STATE_CARRIER_BLOCKED:
        return (f"Text messages are blocked{since}: the carrier still blocks texts to this number. "
                "The client must reply START to our number; nothing will be sent until then.")
    return ""


def _event_words(event: str) -> str:
    return EVENT_WORDS.get(event) or event.replace("_", " ").capitalize()


def _source_words(entry: consent_pb.LedgerEntry) -> str:
    source = SOURCE_WORDS.get(entry.source) or entry.source.replace("_", " ").capitalize()
    provider = PROVIDER_WORDS.get(entry.provider, entry.provider)
    return f"{source} ({provider})" if provider else source


def _actor_words(entry: consent_pb.LedgerEntry, client: auth_pb.User, users: dict[str, auth_pb.User]) -> str:
    if entry.actor == client.user_id:
        return "The client"
    if entry.actor.startswith("service:"):  # consent itself (confirmations, what the provider said)
        return "Confidant"
    user = users.get(entry.actor)
    if user is None:
        return "A practice system" if entry.source == "api" else "A staff member"
    return user.display_name


async def _history(request: web.Request, person: Person, client: auth_pb.User,
                   entries: list[consent_pb.LedgerEntry]) -> list[dict]:
    """The consent ledger, newest first: when, what, how and who (numbers stay out of it)."""
    if not entries:
        return []
    actors = {e.actor for e in entries if e.actor != client.user_id and not e.actor.startswith("service:")}
    users = await users_by_id(request.app[BACKENDS], person, actors)
    return [
        {"when": when(e.created_at), "event": _event_words(e.event), "source": _source_words(e),
         "actor": _actor_words(e, client, users)}
        for e in reversed(entries)
    ]


# ---------------------------------------------------------------- the Clients list


async def _clients_page(request: web.Request, person: Person, *, query: str = "", token: str = "",
                        error: str = "", notice: str = "", status: int = 200,
                        form: dict[str, str] | None = None) -> web.Response:
    reply = await request.app[BACKENDS].auth.ListClients(
        auth_pb.ListClientsRequest(query=query, page_size=CLIENTS_PAGE_SIZE, page_token=token),
        metadata=person.metadata,
    )
    if reply.clients:
        found = ""
    elif query:
        found = f"No clients match “{query}”."
    else:
        found = "No clients yet. Add one above."
    form = form or {}
    context = {
        "title": "Clients", "error": error, "notice": notice, "max_name": MAX_NAME_LENGTH,
        "max_email": MAX_EMAIL_LENGTH, "max_query": MAX_QUERY_LENGTH,
        "form": {"display_name": form.get("display_name", ""), "email": form.get("email", "")},
        "query": query, "found": found, "clients": list(reply.clients), "next_token": reply.next_page_token,
    }
    return await render_staff(request, person, "staff/clients.html", context, status)


@staff_page
async def clients_page(request: web.Request, person: Person) -> web.Response:
    return await _clients_page(request, person, query=search_query(request), token=page_token(request))


@staff_page
async def add_client(request: web.Request, person: Person) -> web.Response:
    posted = await request.post()
    form = {"display_name": _one_line(posted.get("display_name"), MAX_NAME_LENGTH),
            "email": str(posted.get("email", "")).strip()[:MAX_EMAIL_LENGTH]}
    if not form["display_name"] or not form["email"]:
        return await _clients_page(request, person, error="Enter the client's name and email address.",
                                   status=400, form=form)
    try:
        created = await request.app[BACKENDS].auth.CreateClient(
            auth_pb.CreateClientRequest(display_name=form["display_name"], email=form["email"]),
            metadata=person.metadata,
        )
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        return await _clients_page(request, person, error=message, status=status, form=form)
    return see_other(f"/clients/{created.client.user_id}?added=1")


# ---------------------------------------------------------------- Client Info


def _client_id(request: web.Request) -> str:
    raw = request.match_info["client_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise HttpError(404, NO_SUCH_CLIENT) from None


async def _client(request: web.Request, person: Person, client_id: str) -> auth_pb.User:
    """The client, if they are one of the person's practice (auth decides what the person may see)."""
    try:
        reply = await request.app[BACKENDS].auth.GetUsers(
            auth_pb.GetUsersRequest(user_ids=[client_id]), metadata=person.metadata
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
            raise HttpError(404, NO_SUCH_CLIENT) from None
        raise
    found = [u for u in reply.users if u.user_id == client_id and u.role == auth_pb.ROLE_CLIENT]
    if not found:
        raise HttpError(404, NO_SUCH_CLIENT)
    return found[0]


_NOTICES = {
    "added": "Client added.",
    "saved": "Saved.",
}


async def _client_page(request: web.Request, person: Person, client: auth_pb.User, *, error: str = "",
                       phone_error: str = "", status: int = 200,
                       form: dict[str, str] | None = None) -> web.Response:
    """``phone_error``: consent refused the phone number; it is shown next to the field."""
    backends = request.app[BACKENDS]
    messaging, phone, settings, ledger, alerts = await asyncio.gather(
        backends.messaging.GetClientMessaging(
            msg_pb.GetClientMessagingRequest(client_id=client.user_id), metadata=person.metadata
        ),
        backends.consent.GetClientPhone(
            consent_pb.GetClientPhoneRequest(client_id=client.user_id), metadata=person.metadata
        ),
        backends.messaging.GetPracticeSettings(msg_pb.GetPracticeSettingsRequest(), metadata=person.metadata),
        backends.consent.ListLedger(consent_pb.ListLedgerRequest(client_id=client.user_id), metadata=person.metadata),
        backends.notify.GetClientNotificationSettings(
            notify_pb.GetClientNotificationSettingsRequest(client_id=client.user_id), metadata=person.metadata
        ),
    )
    name = client.display_name
    # The switch the page offers: none while the practice has secure messaging off.
    if not settings.settings.secure_messaging_enabled:
        sm_state = "Secure messaging is turned off for the practice. The practice owner can turn it on in Settings."
        sm_switch = ""
    elif messaging.enabled:
        sm_state, sm_switch = f"Secure messaging is on for {name}.", "disable"
    else:
        sm_state, sm_switch = f"Secure messaging is off for {name}.", "enable"
    notice = ""
    if not error and not phone_error:
        notice = next((text for key, text in _NOTICES.items() if request.query.get(key) == "1"), "")
        if request.query.get("messaging") in ("on", "off"):
            notice = f"Secure messaging is {request.query['messaging']} for {name}."
    form = form or {}
    context = {
        "title": "Client Info", "client": client, "error": error, "notice": notice,
        "max_name": MAX_NAME_LENGTH, "max_email": MAX_EMAIL_LENGTH,
        # What was typed when the save was refused; otherwise what the services hold.
        "form": {
            "display_name": form.get("display_name", client.display_name),
            "email": form.get("email", client.email),
            "phone_number": form.get("phone_number", phone.phone.phone_number),
            "text_ok": form["text_ok"] == "1" if "text_ok" in form else phone.phone.text_ok,
            "discreet": form["discreet"] == "1" if "discreet" in form else alerts.settings.discreet,
        },
        "phone_error": phone_error,
        "phone_state": consent_sentence(phone.phone),
        "carrier_blocked": phone.phone.state == consent_pb.CONSENT_STATE_CARRIER_BLOCKED,
        "history": await _history(request, person, client, list(ledger.entries)),
        "sm_state": sm_state, "sm_switch": sm_switch,
    }
    return await render_staff(request, person, "staff/client_info.html", context, status)


@staff_page
async def client_page(request: web.Request, person: Person) -> web.Response:
    client = await _client(request, person, _client_id(request))
    return await _client_page(request, person, client)


@staff_page
async def save_client(request: web.Request, person: Person) -> web.Response:
    """Client Info's one Save: the profile to auth and the phone to consent, each only when changed."""
    client = await _client(request, person, _client_id(request))
    posted = await request.post()
    form = {
        "display_name": _one_line(posted.get("display_name"), MAX_NAME_LENGTH),
        "email": str(posted.get("email", "")).strip()[:MAX_EMAIL_LENGTH],
        "phone_number": str(posted.get("phone_number", "")).strip()[:40],
        "text_ok": "1" if posted.get("text_ok") == "1" else "0",
        "discreet": "1" if posted.get("discreet") == "1" else "0",
    }
    if not form["display_name"] or not form["email"]:
        return await _client_page(request, person, client, error="Enter the client's name and email address.",
                                  status=400, form=form)
    backends = request.app[BACKENDS]
    profile_saved = False
    try:
        if (form["display_name"], form["email"]) != (client.display_name, client.email):
            updated = await backends.auth.UpdateClient(
                auth_pb.UpdateClientRequest(client_id=client.user_id, display_name=form["display_name"],
                                            email=form["email"]),
                metadata=person.metadata,
            )
            client, profile_saved = updated.client, True
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        return await _client_page(request, person, client, error=message, status=status, form=form)
    try:
        current = (await backends.consent.GetClientPhone(
            consent_pb.GetClientPhoneRequest(client_id=client.user_id), metadata=person.metadata
        )).phone
        if (form["phone_number"], form["text_ok"] == "1") != (current.phone_number, current.text_ok):
            await backends.consent.SetClientPhone(
                consent_pb.SetClientPhoneRequest(client_id=client.user_id, phone_number=form["phone_number"],
                                                 text_ok=form["text_ok"] == "1"),
                metadata=person.metadata,
            )
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        error = "The name and email were saved, but the phone number was not." if profile_saved else ""
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            # A number consent cannot read: say so next to the field.
            return await _client_page(request, person, client, error=error, phone_error=message, status=status,
                                      form=form)
        return await _client_page(request, person, client, error=f"{error} {message}".strip(), status=status,
                                  form=form)
    try:
        await _save_discreet(request, person, client.user_id, form["discreet"] == "1")
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        error = "The other details were saved, but “Discreet notifications” was not."
        return await _client_page(request, person, client, error=f"{error} {message}", status=status, form=form)
    return see_other(f"/clients/{client.user_id}?saved=1")


async def _save_discreet(request: web.Request, person: Person, client_id: str, discreet: bool) -> None:
    """The client's discreet alerts to notify, only when the box changed."""
    notify = request.app[BACKENDS].notify
    current = await notify.GetClientNotificationSettings(
        notify_pb.GetClientNotificationSettingsRequest(client_id=client_id), metadata=person.metadata
    )
    if current.settings.discreet != discreet:
        await notify.SetClientNotificationSettings(
            notify_pb.SetClientNotificationSettingsRequest(
                settings=notify_pb.ClientNotificationSettings(client_id=client_id, discreet=discreet)),
            metadata=person.metadata,
        )


@staff_page
async def client_secure_messaging(request: web.Request, person: Person) -> web.Response:
    """Client Info's "Enable Secure Messaging" / "Disable Secure Messaging"."""
    client = await _client(request, person, _client_id(request))
    posted = await request.post()
    enabled = str(posted.get("enabled", ""))
    if enabled not in ("0", "1"):
        return await _client_page(request, person, client, error="Choose to enable or disable secure messaging.",
                                  status=400)
    messaging = request.app[BACKENDS].messaging
    try:
        if enabled == "1":
            await messaging.EnableClientMessaging(
                msg_pb.EnableClientMessagingRequest(client_id=client.user_id), metadata=person.metadata
            )
        else:
            await messaging.DisableClientMessaging(
                msg_pb.DisableClientMessagingRequest(client_id=client.user_id), metadata=person.metadata
            )
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        return await _client_page(request, person, client, error=message, status=status)
    return see_other(f"/clients/{client.user_id}?messaging={'on' if enabled == '1' else 'off'}")


# ---------------------------------------------------------------- practice settings


async def _settings_page(request: web.Request, person: Person, *, error: str = "", status: int = 200,
                         wanted: msg_pb.PracticeSettings | None = None) -> web.Response:
    owner = person.role == "owner"
    settings = wanted
    if settings is None:
        reply = await request.app[BACKENDS].messaging.GetPracticeSettings(
            msg_pb.GetPracticeSettingsRequest(), metadata=person.metadata
        )
        settings = reply.settings
    notice = "Settings saved." if request.query.get("saved") == "1" and not error else ""
    requeued = request.query.get("requeued", "")
    if requeued.isdigit() and not error:
        count = int(requeued)
        notice = (f"{count} failed alert{' is' if count == 1 else 's are'} being sent again." if count
                  else "There were no failed alerts to send again.")
    context = {"title": "Settings", "error": error, "notice": notice, "owner": owner, "settings": settings}
    return await render_staff(request, person, "staff/settings.html", context, status)


@staff_page
async def settings_page(request: web.Request, person: Person) -> web.Response:
    return await _settings_page(request, person)


@staff_page
async def save_settings(request: web.Request, person: Person) -> web.Response:
    if person.role != "owner":
        raise HttpError(403, OWNER_ONLY)
    posted = await request.post()
    wanted = msg_pb.PracticeSettings(
        secure_messaging_enabled=posted.get("secure_messaging_enabled") == "1",
        auto_enable_new_clients=posted.get("auto_enable_new_clients") == "1",
        team_messaging_enabled=posted.get("team_messaging_enabled") == "1",
    )
    try:
        await request.app[BACKENDS].messaging.UpdatePracticeSettings(
            msg_pb.UpdatePracticeSettingsRequest(settings=wanted), metadata=person.metadata
        )
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        return await _settings_page(request, person, error=message, status=status, wanted=wanted)
    return see_other("/settings?saved=1")


@staff_page
async def requeue_failed_alerts(request: web.Request, person: Person) -> web.Response:
    """Settings' "Send failed alerts again": notify requeues the practice's failed alerts (the owner)."""
    if person.role != "owner":
        raise HttpError(403, REQUEUE_OWNER_ONLY)
    try:
        reply = await request.app[BACKENDS].notify.RequeueFailedJobs(
            notify_pb.RequeueFailedJobsRequest(), metadata=person.metadata
        )
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        return await _settings_page(request, person, error=message, status=status)
    return see_other(f"/settings?requeued={reply.requeued}")
