"""Who may call each messaging RPC: every role against every RPC, over real gRPC.

The world: practice P with its owner, the client's clinician, another clinician, a
team member, the client (enabled, in a conversation with the clinician) and another
client (never enabled); practice Q with a clinician; a service account of P with
messaging.read and messaging.send; the client again through a quick sign-in link for
their conversation; our auth and notify services; and an anonymous caller.

Each cell says "ok" or the status code the call must end with. Messaging answers
NOT_FOUND (not PERMISSION_DENIED) for conversations and clients the caller may not
see, so that their existence is not revealed. Calls that change something are aimed
so that repeating them in any order leaves the world as it was (enable an enabled
client, disable a never-enabled one, unarchive, save the same settings); a send to
participant_ids uses one idempotency key per role, so only its first call creates anything.
Rows named "RPC (variant)" pin a request shape whose rules differ from the RPC's plain row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.messaging.v1 import messaging_service_pb2 as pb

from tests.messaging.harness import MessagingHarness

OK = "ok"
ND = grpc.StatusCode.NOT_FOUND
PD = grpc.StatusCode.PERMISSION_DENIED
UA = grpc.StatusCode.UNAUTHENTICATED

ROLES = (
    "client", "other_client", "clinician", "other_clinician", "team_member", "owner",
    "outside_clinician", "service_account", "quick_link", "anonymous", "auth_service", "notify_service",
)
STAFF = ("clinician", "other_clinician", "team_member", "owner")
PEOPLE = ("client", "other_client", *STAFF, "outside_clinician", "quick_link")
IN_CONVERSATION = ("client", "clinician", "quick_link")


def cells(default, **overrides) -> dict[str, object]:
    """A row of the matrix: ``default`` for every role, then the named exceptions."""
    row = {role: default for role in ROLES}
    row["anonymous"] = UA
    row.update(overrides)
    assert set(row) == set(ROLES), set(row) ^ set(ROLES)
    return row


def only(roles, default=PD, **overrides) -> dict[str, object]:
    return cells(default, **{role: OK for role in roles}, **overrides)


# RPC name -> role -> expected outcome.
MATRIX: dict[str, dict[str, object]] = {
    "GetPracticeSettings": only(PEOPLE),
    "UpdatePracticeSettings": only(["owner"]),
    "GetClientMessaging": only(STAFF, outside_clinician=ND),
    "EnableClientMessaging": only(STAFF, outside_clinician=ND),
    # Clinicians and the owner: a team member may enable a client but not cut them off.
    "DisableClientMessaging": only(["clinician", "other_clinician", "owner"], outside_clinician=ND),
    "HandleClientCreated": only(["auth_service"]),
    "OpenConversation": only([*STAFF, "service_account"], outside_clinician=ND),
    # Who may start a conversation is who may look for one: OpenConversation's rules.
    "FindConversation": only([*STAFF, "service_account"], outside_clinician=ND),
    "GetConversation": only([*IN_CONVERSATION, "service_account"], **{r: ND for r in (
        "other_client", "other_clinician", "team_member", "owner", "outside_clinician")}),
    "ListConversations": only([*PEOPLE, "service_account"]),
    "ListMessages": only([*IN_CONVERSATION, "service_account"], **{r: ND for r in (
        "other_client", "other_clinician", "team_member", "owner", "outside_clinician")}),
    "SendMessage": only([*IN_CONVERSATION, "service_account"], **{r: ND for r in (
        "other_client", "other_clinician", "team_member", "owner", "outside_clinician")}),
    # To the client by participant_ids (the conversation is created with the message): any
    # staff member of the practice, or its system; never a client or a quick sign-in.
    "SendMessage (participant_ids)": only([*STAFF, "service_account"], outside_clinician=ND),
    "MarkRead": only(IN_CONVERSATION, **{r: ND for r in (
        "other_client", "other_clinician", "team_member", "owner", "outside_clinician")}),
    "GetUnreadSummary": only(PEOPLE),
    "ListRecentContacts": only([*STAFF, "outside_clinician"]),
    "ArchiveConversation": only(IN_CONVERSATION, **{r: ND for r in (
        "other_client", "other_clinician", "team_member", "owner", "outside_clinician")}),
    "GetReadState": only(["notify_service"]),
    "RotateDataKey": only(["owner"]),
    "StreamEvents": only(PEOPLE),
}


@dataclass
class World:
    messaging: MessagingHarness
    practice_id: str
    people: dict[str, auth_pb.User]
    conversation_id: str
    account_token: str

    def metadata(self, role: str):
        m = self.messaging
        if role == "anonymous":
            return None
        if role == "service_account":
            return m.tokens.metadata(self.account_token)
        if role in ("auth_service", "notify_service"):
            return m.as_service(role.removesuffix("_service"))
        if role == "quick_link":
            return m.as_user(self.people["client"], "magic_link", self.conversation_id)
        return m.as_user(self.people[role])


@pytest.fixture(scope="module")
async def world(messaging) -> World:
    m = messaging
    team = await m.team()
    outside = await m.team()
    people = {
        "owner": team.owner,
        "clinician": team.clinician,
        "other_clinician": await m.user(team.practice_id, auth_pb.ROLE_CLINICIAN, "Casey Moreno"),
        "team_member": team.team_member,
        "client": team.client,
        "other_client": team.other_client,
        "outside_clinician": outside.clinician,
    }
    conversation = await m.client_conversation(team)
    await m.send(team.clinician, conversation.conversation_id, "Hello from the clinician.")
    created = await m.auth.CreateServiceAccount(
        auth_pb.CreateServiceAccountRequest(display_name="Practice EHR", scopes=["messaging.read", "messaging.send"]),
        metadata=m.as_user(team.owner), timeout=10,
    )
    issued = await m.auth.IssueServiceAccountToken(
        auth_pb.IssueServiceAccountTokenRequest(
            client_id=created.account.client_id, client_secret=created.client_secret
        ),
        timeout=10,
    )
    return World(m, team.practice_id, people, conversation.conversation_id, issued.access_token)


Call = Callable[[World, str, object], Awaitable[object]]


def _calls() -> dict[str, Call]:
    def unary(name: str, request: Callable[[World, str], object]) -> Call:
        async def call(world: World, role: str, metadata) -> object:
            method = getattr(world.messaging.stub, name)
            return await method(request(world, role), metadata=metadata, timeout=5)
        return call

    def settings(world: World, role: str) -> pb.UpdatePracticeSettingsRequest:
        # The settings as they are: an allowed call changes nothing.
        return pb.UpdatePracticeSettingsRequest(settings=pb.PracticeSettings(
            secure_messaging_enabled=True, auto_enable_new_clients=False, team_messaging_enabled=True))

    def with_client(world: World, role: str) -> list[str]:
        others = [world.people["client"].user_id]
        if role == "service_account":  # never a participant itself: names the staff member too
            others.append(world.people["clinician"].user_id)
        return others

    def open_request(world: World, role: str) -> pb.OpenConversationRequest:
        return pb.OpenConversationRequest(participant_ids=with_client(world, role))

    async def stream(world: World, role: str, metadata) -> object:
        # From the start of time: an allowed caller is streamed (and then waits for more).
        events = world.messaging.stub.StreamEvents(
            pb.StreamEventsRequest(after_event_id=1), metadata=metadata, timeout=1.5
        )
        try:
            async for _event in events:
                return "streamed"
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return "waiting"
            raise
        return "ended"

    client = lambda w, r: w.people["client"].user_id  # noqa: E731
    conversation = lambda w, r: w.conversation_id  # noqa: E731
    return {
        "GetPracticeSettings": unary("GetPracticeSettings", lambda w, r: pb.GetPracticeSettingsRequest()),
        "UpdatePracticeSettings": unary("UpdatePracticeSettings", settings),
        "GetClientMessaging": unary(
            "GetClientMessaging", lambda w, r: pb.GetClientMessagingRequest(client_id=client(w, r))),
        "EnableClientMessaging": unary(
            "EnableClientMessaging", lambda w, r: pb.EnableClientMessagingRequest(client_id=client(w, r))),
        "DisableClientMessaging": unary(
            "DisableClientMessaging",
            lambda w, r: pb.DisableClientMessagingRequest(client_id=w.people["other_client"].user_id)),
        "HandleClientCreated": unary(
            "HandleClientCreated",
            lambda w, r: pb.HandleClientCreatedRequest(
                practice_id=w.practice_id, client_id=w.people["other_client"].user_id)),
        "OpenConversation": unary("OpenConversation", open_request),
        "FindConversation": unary(
            "FindConversation", lambda w, r: pb.FindConversationRequest(participant_ids=with_client(w, r))),
        "GetConversation": unary(
            "GetConversation", lambda w, r: pb.GetConversationRequest(conversation_id=conversation(w, r))),
        "ListConversations": unary("ListConversations", lambda w, r: pb.ListConversationsRequest()),
        "ListMessages": unary(
            "ListMessages", lambda w, r: pb.ListMessagesRequest(conversation_id=conversation(w, r))),
        "SendMessage": unary(
            "SendMessage",
            lambda w, r: pb.SendMessageRequest(
                conversation_id=conversation(w, r), body=f"A note from {r}.", idempotency_key=f"matrix-{r}")),
        "SendMessage (participant_ids)": unary(
            "SendMessage",
            lambda w, r: pb.SendMessageRequest(
                participant_ids=with_client(w, r), body=f"A first note from {r}.",
                idempotency_key=f"matrix-people-{r}")),
        "MarkRead": unary(
            "MarkRead", lambda w, r: pb.MarkReadRequest(conversation_id=conversation(w, r), read_seq=1)),
        "GetUnreadSummary": unary("GetUnreadSummary", lambda w, r: pb.GetUnreadSummaryRequest()),
        "ListRecentContacts": unary("ListRecentContacts", lambda w, r: pb.ListRecentContactsRequest()),
        "ArchiveConversation": unary(
            "ArchiveConversation",
            lambda w, r: pb.ArchiveConversationRequest(conversation_id=conversation(w, r), archived=False)),
        "GetReadState": unary(
            "GetReadState",
            lambda w, r: pb.GetReadStateRequest(
                conversation_id=conversation(w, r), user_id=w.people["clinician"].user_id)),
        "RotateDataKey": unary("RotateDataKey", lambda w, r: pb.RotateDataKeyRequest()),
        "StreamEvents": stream,
    }


CALLS = _calls()


def test_the_matrix_covers_every_messaging_rpc():
    service = pb.DESCRIPTOR.services_by_name["MessagingService"]
    assert set(MATRIX) == set(CALLS)
    assert {rpc.split(" ")[0] for rpc in MATRIX} == {method.name for method in service.methods}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("rpc", sorted(MATRIX))
async def test_cell(world: World, rpc: str, role: str):
    expected = MATRIX[rpc][role]
    try:
        reply = await CALLS[rpc](world, role, world.metadata(role))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == expected, f"{rpc} as {role}: {exc.code().name} {exc.details()!r}"
        return
    assert expected == OK, f"{rpc} as {role} was allowed; expected {expected.name}"
    if rpc == "ListConversations":
        # Allowed to list, but each sees only their own: the conversation is listed for its
        # participants and the practice's service account only.
        listed = {c.conversation_id for c in reply.conversations}
        assert (world.conversation_id in listed) == (role in (*IN_CONVERSATION, "service_account")), role
        previews = {c.conversation_id: c.preview for c in reply.conversations}
        if role == "service_account":
            assert previews[world.conversation_id] == "", "a non-participant never sees a preview"
        elif role in IN_CONVERSATION:
            assert previews[world.conversation_id], "participants see the preview"
