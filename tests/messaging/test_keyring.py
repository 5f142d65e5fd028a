"""Per-practice data keys: made lazily, wrapped (key file or KMS on moto), rotated, cached."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from services.common.audit import verify_chain
from services.common.db import apply_migrations, open_pool
from services.common.errors import Unavailable
from services.messaging.config import MessagingConfig
from services.messaging.crypto import DataKey, DecryptionError, SealedBody, associated_data
from services.messaging.keyring import Keyring, KeySources, LocalKeyEncryptionKey
from services.messaging.kms import KmsKeyEncryptionKey, kms_client
from tests.aws import REGION, kms_key, moto_server
from tests.support import service_env, unique

FILE_KEY = b"f" * 32
AAD = associated_data("practice", "conversation", "message")
MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "messaging" / "migrations"


@pytest.fixture(scope="module")
def aws():
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
async def pool(fresh_database):
    url = await fresh_database("messaging")
    pool = await open_pool(url, max_size=4)
    yield pool
    await pool.close()


def local_sources(file_key: bytes = FILE_KEY, legacy: bool = True) -> KeySources:
    kek = LocalKeyEncryptionKey(file_key)
    return KeySources(wrapping=kek, unwrapping=(kek,), legacy_key=file_key if legacy else None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def rows(pool, query: str, params=()) -> list[tuple]:
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


async def test_the_first_seal_makes_a_wrapped_key_that_a_fresh_process_unwraps(pool):
    practice = unique("practice")
    sealed = await Keyring(pool, local_sources()).seal(practice, "See you Thursday.", AAD)
    assert sealed.key_version == 1 and b"Thursday" not in sealed.ciphertext
    [(version, wrapped, kek)] = await rows(
        pool, "SELECT version, wrapped_key, kek FROM data_keys WHERE practice_id = %s", (practice,)
    )
    assert version == 1 and kek.startswith("local:") and len(bytes(wrapped)) == 12 + 32 + 16
    # Another replica (nothing cached) opens it; another key file cannot, and says why.
    assert await Keyring(pool, local_sources()).open(practice, sealed, AAD) == "See you Thursday."
    with pytest.raises(DecryptionError, match="does not hold"):
        await Keyring(pool, local_sources(b"g" * 32)).open(practice, sealed, AAD)
    # The associated data still binds the body to its row.
    with pytest.raises(DecryptionError):
        await Keyring(pool, local_sources()).open(practice, sealed, associated_data("practice", "c", "m2"))


async def test_practices_have_their_own_keys(pool):
    keyring = Keyring(pool, local_sources())
    first, second = unique("practice"), unique("practice")
    sealed = await keyring.seal(first, "hello", AAD)
    await keyring.seal(second, "hello", AAD)
    wrapped = await rows(pool, "SELECT wrapped_key FROM data_keys WHERE practice_id IN (%s, %s)", (first, second))
    assert len({bytes(w) for (w,) in wrapped}) == 2
    # Same version number, same associated data, another practice: its key does not open it.
    with pytest.raises(DecryptionError):
        await keyring.open(second, sealed, AAD)
    assert await keyring.digest(first, "yes") != await keyring.digest(second, "yes")


async def test_replicas_racing_for_a_new_practice_share_one_key(pool):
    practice = unique("practice")
    replicas = [Keyring(pool, local_sources()) for _ in range(3)]
    sealed = await asyncio.gather(
        *(replicas[i % 3].seal(practice, f"message {i}", AAD) for i in range(12))
    )
    [(count,)] = await rows(pool, "SELECT count(*) FROM data_keys WHERE practice_id = %s", (practice,))
    assert count == 1
    for i, body in enumerate(sealed):
        assert await replicas[(i + 1) % 3].open(practice, body, AAD) == f"message {i}"


async def test_rotation_adds_a_version_and_old_bodies_stay_readable(pool):
    practice = unique("practice")
    clock = Clock()
    here, other = Keyring(pool, local_sources()), Keyring(pool, local_sources(), 30.0, clock)
    old = await here.seal(practice, "before", AAD)
    digest_before = await other.digest(practice, "same body")
    assert (await other.seal(practice, "x", AAD)).key_version == 1

    assert await here.rotate(practice, actor="owner-1") == 2
    new = await here.seal(practice, "after", AAD)
    assert (old.key_version, new.key_version) == (1, 2)
    assert await here.open(practice, old, AAD) == "before"
    assert await other.open(practice, new, AAD) == "after"
    # Another replica follows the rotation once its cached current version expires.
    assert (await other.seal(practice, "x", AAD)).key_version == 1
    clock.now += 31
    assert (await other.seal(practice, "x", AAD)).key_version == 2
    # The idempotency digest does not change with the key.
    assert await here.digest(practice, "same body") == digest_before == await other.digest(practice, "same body")

    assert await other.rotate(practice, actor="owner-1") == 3
    [(versions,)] = await rows(
        pool, "SELECT array_agg(version ORDER BY version) FROM data_keys WHERE practice_id = %s", (practice,)
    )
    assert versions == [1, 2, 3]
    audits = await rows(
        pool,
        "SELECT actor, action, target, detail FROM audit_events WHERE action = 'data_key.rotate'"
        " AND practice_id = %s ORDER BY event_id",
        (practice,),
    )
    assert [(a, t, d["key_version"], d["kek"]) for a, _, t, d in audits] == [
        ("owner-1", practice, 2, "local"),
        ("owner-1", practice, 3, "local"),
    ]
    async with pool.connection() as conn:
        assert await verify_chain(conn)


async def test_concurrent_rotations_each_get_their_own_version(pool):
    practice = unique("practice")
    replicas = [Keyring(pool, local_sources()) for _ in range(3)]
    await replicas[0].seal(practice, "first", AAD)
    versions = await asyncio.gather(*(r.rotate(practice, actor="owner") for r in replicas))
    assert sorted(versions) == [2, 3, 4]


async def test_unknown_versions_moved_keys_and_the_legacy_key(pool):
    practice = unique("practice")
    keyring = Keyring(pool, local_sources())
    sealed = await keyring.seal(practice, "body", AAD)
    with pytest.raises(DecryptionError, match="no data key of version 7"):
        await keyring.open(practice, SealedBody(sealed.ciphertext, sealed.nonce, 7), AAD)
    # A wrapped key copied to another practice does not unwrap there.
    stolen = unique("practice")
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO data_keys (practice_id, version, wrapped_key, kek)"
            " SELECT %s, version, wrapped_key, kek FROM data_keys WHERE practice_id = %s",
            (stolen, practice),
        )
    with pytest.raises(DecryptionError, match="wrapped data key"):
        await Keyring(pool, local_sources()).open(stolen, sealed, AAD)
    # Version 0: sealed with the key file itself before per-practice keys.
    legacy = DataKey(FILE_KEY, 0).seal("from before", AAD)
    assert await keyring.open(practice, legacy, AAD) == "from before"
    with pytest.raises(DecryptionError, match="legacy"):
        await Keyring(pool, local_sources(legacy=False)).open(practice, legacy, AAD)


async def test_the_kms_path_on_moto(pool, aws):
    key_arn = kms_key(aws)
    kms = KmsKeyEncryptionKey(kms_client(REGION, aws), key_arn)
    sources = KeySources(wrapping=kms, unwrapping=(kms,))
    practice = unique("practice")
    keyring = Keyring(pool, sources)
    sealed = await keyring.seal(practice, "Wrapped by KMS.", AAD)
    [(wrapped, kek)] = await rows(pool, "SELECT wrapped_key, kek FROM data_keys WHERE practice_id = %s", (practice,))
    assert kek == f"kms:{key_arn}"
    # A fresh replica asks KMS to unwrap; rotation makes a second KMS-wrapped key.
    fresh = Keyring(pool, sources)
    assert await fresh.open(practice, sealed, AAD) == "Wrapped by KMS."
    assert await fresh.rotate(practice, actor="owner") == 2
    newer = await fresh.seal(practice, "Version two.", AAD)
    assert newer.key_version == 2
    again = Keyring(pool, sources)
    assert [await again.open(practice, s, AAD) for s in (sealed, newer)] == ["Wrapped by KMS.", "Version two."]
    assert await again.digest(practice, "x") == await keyring.digest(practice, "x")
    # KMS checks the encryption context: the wrapped key moved to another practice is refused.
    stolen = unique("practice")
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO data_keys (practice_id, version, wrapped_key, kek) VALUES (%s, 1, %s, %s)",
            (stolen, bytes(wrapped), kek),
        )
    with pytest.raises(DecryptionError, match="KMS refused"):
        await Keyring(pool, sources).open(stolen, sealed, AAD)
    # A key wrapped locally is not unwrapped by a KMS-only service, and says why.
    local_practice = unique("practice")
    local_sealed = await Keyring(pool, local_sources()).seal(local_practice, "local", AAD)
    with pytest.raises(DecryptionError, match="does not hold"):
        await Keyring(pool, sources).open(local_practice, local_sealed, AAD)


async def test_kms_out_of_reach_is_unavailable_not_a_broken_message(pool, aws):
    # Port 9 (discard) refuses connections: nothing answers there.
    unreachable = KmsKeyEncryptionKey(kms_client(REGION, "http://127.0.0.1:9", timeout_seconds=1), "alias/x")
    keyring = Keyring(pool, KeySources(wrapping=unreachable, unwrapping=(unreachable,)))
    with pytest.raises(Unavailable, match="cannot be reached"):
        await keyring.seal(unique("practice"), "body", AAD)


def test_key_sources_from_configuration(tmp_path, keys_dir, aws):
    def config(**settings: str) -> MessagingConfig:
        return MessagingConfig.load(service_env(keys_dir, messaging_database_url="postgresql:///x", **settings))

    key_file = tmp_path / "data.key"
    # Development without KMS: the key file (created) wraps keys and opens legacy bodies.
    dev = KeySources.from_config(config(messaging_data_key_file=str(key_file)))
    assert key_file.is_file() and isinstance(dev.wrapping, LocalKeyEncryptionKey)
    assert dev.unwrapping == (dev.wrapping,) and dev.legacy_key is not None
    # With KMS and the key file: KMS wraps new keys, the file still opens what it sealed.
    key_arn = kms_key(aws)
    both = KeySources.from_config(
        config(messaging_data_key_file=str(key_file), messaging_kms_key_id=key_arn, aws_endpoint_url=aws)
    )
    assert isinstance(both.wrapping, KmsKeyEncryptionKey)
    assert [type(k) for k in both.unwrapping] == [KmsKeyEncryptionKey, LocalKeyEncryptionKey]
    assert both.legacy_key == dev.legacy_key
    # With KMS and no key file: nothing is created, there is no legacy key.
    absent = tmp_path / "absent.key"
    kms_only = KeySources.from_config(
        config(messaging_data_key_file=str(absent), messaging_kms_key_id=key_arn, aws_endpoint_url=aws)
    )
    assert not absent.exists() and kms_only.legacy_key is None and len(kms_only.unwrapping) == 1


async def test_a_kms_configured_keyring_works_end_to_end(pool, tmp_path, keys_dir, aws):
    key_arn = kms_key(aws)
    config = MessagingConfig.load(
        service_env(
            keys_dir,
            messaging_database_url="postgresql:///x",
            messaging_data_key_file=str(tmp_path / "none.key"),
            messaging_kms_key_id=key_arn,
            aws_endpoint_url=aws,
        )
    )
    keyring = Keyring(pool, KeySources.from_config(config))
    practice = unique("practice")
    sealed = await keyring.seal(practice, "configured", AAD)
    assert await keyring.open(practice, sealed, AAD) == "configured"
    [(kek,)] = await rows(pool, "SELECT kek FROM data_keys WHERE practice_id = %s", (practice,))
    assert kek == f"kms:{key_arn}"


async def test_the_migration_renumbers_legacy_rows(fresh_database):
    """Rows sealed with the key file before migration 0003 (key_version 1) become version 0."""
    url = await fresh_database("messaging")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        # Back to the schema before 0003, with one legacy message in it.
        await conn.execute("DROP TABLE data_keys")
        await conn.execute("DELETE FROM schema_migrations WHERE version = 3")
        conversation = "00000000-0000-0000-0000-000000000001"
        await conn.execute(
            "INSERT INTO conversations (conversation_id, practice_id, participant_key) VALUES (%s, 'p', 'a,b')",
            (conversation,),
        )
        legacy = DataKey(FILE_KEY, 0).seal("old", AAD)
        await conn.execute(
            "INSERT INTO messages (message_id, conversation_id, seq, sender_id, body_ciphertext, nonce,"
            " key_version, body_sha256, idempotency_key) VALUES (%s, %s, 1, 'a', %s, %s, 1, %s, 'k')",
            ("00000000-0000-0000-0000-000000000002", conversation, legacy.ciphertext, legacy.nonce, b"d"),
        )
        assert await apply_migrations(url, MIGRATIONS) == [3]
        cur = await conn.execute("SELECT key_version FROM messages")
        assert await cur.fetchall() == [(0,)]
