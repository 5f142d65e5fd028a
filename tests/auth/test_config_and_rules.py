"""Configuration, the password rules and housekeeping, below the gRPC layer."""

from __future__ import annotations

import pytest

from services.auth.config import AuthConfig
from services.auth.passwords import Passwords, check_password_rules
from services.auth.storage import AuthStorage
from services.common.config import ConfigError
from services.common.db import open_pool
from services.common.errors import InvalidArgument
from tests.support import service_env


def test_defaults_follow_the_product_rules(keys_dir):
    config = AuthConfig.load(service_env(keys_dir, auth_database_url="postgresql://x/auth"))
    assert config.magic_link_ttl_seconds == 900
    assert (config.session_idle_seconds, config.session_absolute_seconds) == (1800, 43200)
    assert config.access_token_ttl_seconds == 300
    assert (config.password_min_length, config.password_max_length) == (12, 1024)
    assert config.common.listen == "127.0.0.1:50051"


def test_settings_come_from_the_environment_and_bad_ones_stop_start_up(keys_dir):
    env = service_env(
        keys_dir,
        auth_database_url="postgresql://x/auth",
        magic_link_ttl_seconds="60",
        session_idle_seconds="5",
        password_max_length="128",
    )
    config = AuthConfig.load(env)
    assert (config.magic_link_ttl_seconds, config.session_idle_seconds, config.password_max_length) == (
        60,
        5,
        128,
    )
    for name, value in (
        ("session_idle_seconds", "0"),
        ("password_max_length", "64"),
        ("password_max_length", "4096"),
        ("magic_link_ttl_seconds", "soon"),
    ):
        with pytest.raises(ConfigError) as err:
            AuthConfig.load(service_env(keys_dir, auth_database_url="postgresql://x/auth", **{name: value}))
        assert f"CONFIDANT_{name.upper()}" in str(err.value)
    with pytest.raises(ConfigError):
        AuthConfig.load(service_env(keys_dir))  # no database URL


@pytest.mark.parametrize(
    "password, refused",
    [
        ("quiet-harbor-2026", False),
        ("correct horse battery", False),
        ("short", True),
        ("qwerty123456", True),
        ("Pass-Word-1234", True),
        ("121212121212", True),
        ("dana-rivera-rules", True),  # the name's words
        ("i-am-d.rivera-here", True),  # the email's local part
        ("riveras garden!", True),
    ],
)
def test_password_rules(password, refused):
    def check():
        check_password_rules(
            password,
            email="d.rivera@lakeside.test",
            display_name="Dana Rivera",
            min_length=12,
            max_length=128,
        )

    if refused:
        with pytest.raises(InvalidArgument):
            check()
    else:
        check()


async def test_verification_checks_a_dummy_when_there_is_no_hash():
    passwords = await Passwords.create()
    stored = await passwords.hash("quiet-harbor-2026")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await passwords.verify(stored, "quiet-harbor-2026")
    assert not await passwords.verify(stored, "quiet-harbor-2027")
    assert not await passwords.verify(None, "no account has this password")  # even the dummy's own password
    assert not await passwords.verify("not-a-hash", "anything")


async def test_purge_deletes_only_long_ended_sessions_and_links(fresh_database):
    url = await fresh_database("auth")
    pool = await open_pool(url)
    try:
        async with pool.connection() as conn:
            await conn.execute(
                "WITH p AS (INSERT INTO practices (name) VALUES ('P') RETURNING practice_id)"
                " INSERT INTO users (practice_id, role, email, display_name)"
                " SELECT practice_id, 'client', 'c@x.test', 'C' FROM p"
            )
            await conn.execute(
                "INSERT INTO sessions (session_hash, user_id, kind, expires_at, revoked_at)"
                " SELECT h::bytea, user_id, 'full', e, r FROM users, (VALUES"
                "  ('old', now() - interval '8 days', NULL::timestamptz),"
                "  ('revoked', now() + interval '1 hour', now() - interval '8 days'),"
                "  ('recent', now() - interval '1 day', NULL),"
                "  ('live', now() + interval '1 hour', NULL)) AS v(h, e, r)"
            )
            await conn.execute(
                "INSERT INTO magic_links (token_hash, user_id, conversation_id, expires_at)"
                " SELECT h::bytea, user_id, 'c', e FROM users, (VALUES"
                "  ('old', now() - interval '31 days'), ('recent', now() - interval '1 day')) AS v(h, e)"
            )
        storage = AuthStorage(pool)
        assert await storage.purge_expired(7 * 86400, 30 * 86400) == (2, 1)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT convert_from(session_hash, 'UTF8') FROM sessions ORDER BY 1")
            assert [r[0] for r in await cur.fetchall()] == ["live", "recent"]
    finally:
        await pool.close()
