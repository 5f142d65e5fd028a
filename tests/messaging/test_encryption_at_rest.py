"""Encryption at rest through the real service: a canary never reaches the database
in clear, a moved ciphertext does not decrypt, rotation keeps old messages readable,
with the key file (development) and with KMS on moto's server."""

from __future__ import annotations

import asyncio
import base64

import grpc
import pytest
from confidant.messaging.v1 import messaging_service_pb2 as pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as pb_grpc

from services.common import pgserver
from services.messaging.crypto import DataKey, associated_data, load_data_key
from tests.aws import kms_key, moto_server
from tests.messaging.harness import MessagingHarness, Team, messaging_service, rpc_error
from tests.support import channel, unique


@pytest.fixture(scope="module")
def aws():
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
async def kms_messaging(fresh_database, keys_dir, tokens, auth_address, auth_stub, aws, tmp_path):
    """A messaging service whose data keys KMS (on moto) wraps; it has no key file at all."""
    key_arn = kms_key(aws)
    async with (
        messaging_service(
            fresh_database,
            keys_dir,
            auth_address,
            messaging_kms_key_id=key_arn,
            aws_endpoint_url=aws,
            messaging_data_key_file=str(tmp_path / "no-such.key"),
        ) as (address, url),
        channel(address) as ch,
    ):
        yield MessagingHarness(pb_grpc.MessagingServiceStub(ch), auth_stub, tokens, url), key_arn


async def dump(database_url: str) -> bytes:
    """The whole messaging database as pg_dump writes it (plain SQL, bytea in hex)."""
    pg_dump = pgserver._find_bin("pg_dump")
    assert pg_dump, "pg_dump is needed for this test"
    process = await asyncio.create_subprocess_exec(
        pg_dump, "--format=plain", "--no-owner", f"--dbname={database_url}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode(errors="replace")
    return out


def assert_not_in_clear(canary: str, dumped: bytes) -> None:
    raw = canary.encode()
    # As text, as bytea (hex), as base64 and as a hex string of any case.
    for form in (raw, raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw)):
        assert form not in dumped


async def rotate(messaging: MessagingHarness, user, session_kind: str = "full") -> int:
    reply = await messaging.stub.RotateDataKey(
        pb.RotateDataKeyRequest(), metadata=messaging.as_user(user, session_kind), timeout=10
    )
    return reply.key_version


async def canary_round_trip(messaging: MessagingHarness, team: Team) -> None:
    canary = f"CANARY-{unique('c')}-the client's panic attacks are worse"
    cid = (await messaging.client_conversation(team)).conversation_id
    sent = await messaging.send(team.clinician, cid, canary)
    # The API gives it back in clear: the thread, and the conversation list's preview.
    assert [m.body for m in await messaging.messages(team.client, cid)] == [canary]
    listed = await messaging.stub.ListConversations(
        pb.ListConversationsRequest(), metadata=messaging.as_user(team.client), timeout=5
    )
    [preview] = [c.preview for c in listed.conversations if c.conversation_id == cid]
    assert len(preview) >= 20 and canary.startswith(preview)  # the preview path really ran
    dumped = await dump(messaging.database_url)
    assert sent.message.message_id.encode() in dumped  # the dump holds the message row
    assert_not_in_clear(canary, dumped)
    assert_not_in_clear(canary[:20], dumped)


async def test_a_canary_never_appears_in_clear_in_a_dump(messaging, team):
    await canary_round_trip(messaging, team)
    [(kek,)] = await messaging.sql("SELECT kek FROM data_keys WHERE practice_id = %s", (team.practice_id,))
    assert kek.startswith("local:")


async def test_a_ciphertext_copied_into_another_row_fails_to_decrypt(messaging, team):
    client_cid = (await messaging.client_conversation(team)).conversation_id
    team_cid = (await messaging.open(team.clinician, team.team_member)).conversation_id
    await messaging.send(team.clinician, client_cid, "Your appointment moved to Friday.")
    await messaging.send(team.clinician, team_cid, "Lunch at noon?")
    # Someone with database access copies the client message's sealed body into the staff thread.
    await messaging.sql(
        "UPDATE messages m SET body_ciphertext = s.body_ciphertext, nonce = s.nonce, key_version = s.key_version"
        "  FROM messages s WHERE s.conversation_id = %s AND m.conversation_id = %s",
        (client_cid, team_cid),
    )
    err = await rpc_error(messaging.messages(team.team_member, team_cid))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "cannot be read" in err.details() and "Friday" not in err.details()
    # The original still reads.
    assert [m.body for m in await messaging.messages(team.client, client_cid)] == [
        "Your appointment moved to Friday."
    ]


async def test_after_a_rotation_old_and_new_messages_read_back(messaging, team, keys_dir):
    cid = (await messaging.client_conversation(team)).conversation_id
    await messaging.send(team.clinician, cid, "before the rotation")
    assert await rotate(messaging, team.owner) == 2
    await messaging.send(team.client, cid, "after the rotation")
    assert [m.body for m in await messaging.messages(team.clinician, cid)] == [
        "before the rotation",
        "after the rotation",
    ]
    rows = await messaging.sql("SELECT seq, key_version FROM messages WHERE conversation_id = %s ORDER BY seq", (cid,))
    assert rows == [(1, 1), (2, 2)]
    assert await rotate(messaging, team.owner) == 3
    [(actor, detail)] = await messaging.sql(
        "SELECT actor, detail FROM audit_events WHERE action = 'data_key.rotate' AND detail->>'key_version' = '3'"
    )
    assert actor == team.owner.user_id and detail["kek"] == "local"

    # A message sealed with the key file itself before per-practice keys (version 0) still reads.
    legacy_key = load_data_key(keys_dir / "messaging-data.key", create_if_missing=False)
    [(message_id,)] = await messaging.sql("SELECT message_id::text FROM messages WHERE seq = 1 AND conversation_id = %s", (cid,))
    legacy = DataKey(legacy_key, 0).seal("from before the keyring", associated_data(team.practice_id, cid, message_id))
    await messaging.sql(
        "UPDATE messages SET body_ciphertext = %s, nonce = %s, key_version = 0 WHERE message_id = %s",
        (legacy.ciphertext, legacy.nonce, message_id),
    )
    assert [m.body for m in await messaging.messages(team.client, cid)] == [
        "from before the keyring",
        "after the rotation",
    ]


async def test_only_the_owner_rotates_and_only_in_a_full_session(messaging, team):
    for person in (team.clinician, team.team_member, team.client):
        err = await rpc_error(rotate(messaging, person))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(rotate(messaging, team.owner, session_kind="magic_link"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(
        messaging.stub.RotateDataKey(pb.RotateDataKeyRequest(), metadata=messaging.as_service("web"), timeout=5)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await messaging.sql("SELECT * FROM data_keys WHERE version > 1") == []


async def test_the_kms_path_on_moto(kms_messaging):
    messaging, key_arn = kms_messaging
    team = await messaging.team()
    await canary_round_trip(messaging, team)
    cid = (await messaging.client_conversation(team)).conversation_id
    assert await rotate(messaging, team.owner) == 2
    await messaging.send(team.clinician, cid, "sealed with version two")
    bodies = [m.body for m in await messaging.messages(team.client, cid)]
    assert len(bodies) == 2 and bodies[1] == "sealed with version two"
    rows = await messaging.sql("SELECT key_version FROM messages WHERE conversation_id = %s ORDER BY seq", (cid,))
    assert rows == [(1,), (2,)]
    keks = await messaging.sql("SELECT DISTINCT kek FROM data_keys WHERE practice_id = %s", (team.practice_id,))
    assert keks == [(f"kms:{key_arn}",)]
    # A ciphertext moved to another row fails here too.
    await messaging.sql(
        "UPDATE messages m SET body_ciphertext = s.body_ciphertext, nonce = s.nonce, key_version = s.key_version"
        "  FROM messages s WHERE s.conversation_id = m.conversation_id AND s.seq = 1 AND m.seq = 2"
        "   AND m.conversation_id = %s",
        (cid,),
    )
    err = await rpc_error(messaging.messages(team.client, cid))
    assert err.code() == grpc.StatusCode.INTERNAL
