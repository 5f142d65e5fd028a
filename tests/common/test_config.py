"""Configuration: environment variables, secret files, failing fast with a sentence."""

from __future__ import annotations

import pytest

from services.common.config import CommonConfig, ConfigError, Env


def test_secret_files_are_read_and_environment_wins(tmp_path):
    secret = tmp_path / "db-url"
    secret.write_text("postgresql://from-file/db\n")
    env = Env({"CONFIDANT_AUTH_DATABASE_URL_FILE": str(secret)})
    assert env.str("AUTH_DATABASE_URL") == "postgresql://from-file/db"
    env = Env({"CONFIDANT_AUTH_DATABASE_URL": "postgresql://env/db", "CONFIDANT_AUTH_DATABASE_URL_FILE": str(secret)})
    assert env.str("AUTH_DATABASE_URL") == "postgresql://env/db"


def test_missing_required_setting_names_it():
    with pytest.raises(ConfigError, match="CONFIDANT_AUTH_DATABASE_URL is required"):
        CommonConfig.load("auth", Env({}), 50051)


def test_unreadable_secret_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        Env({"CONFIDANT_X_FILE": str(tmp_path / "missing")}).str("X")


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("YES", True), ("1", True), ("off", False), ("0", False)]
)
def test_booleans(raw, expected):
    assert Env({"CONFIDANT_FLAG": raw}).bool("FLAG", not expected) is expected


def test_malformed_numbers_and_modes_are_refused():
    with pytest.raises(ConfigError, match="whole number"):
        Env({"CONFIDANT_N": "ten"}).int("N", 1)
    with pytest.raises(ConfigError, match="true or false"):
        Env({"CONFIDANT_FLAG": "maybe"}).bool("FLAG", False)
    with pytest.raises(ConfigError, match="development or production"):
        CommonConfig.load("auth", Env({"CONFIDANT_MODE": "staging", "CONFIDANT_AUTH_DATABASE_URL": "x"}), 1)


def test_defaults():
    config = CommonConfig.load("notify", Env({"CONFIDANT_NOTIFY_DATABASE_URL": "postgresql://x/y"}), 50054)
    assert config.listen == "127.0.0.1:50054"
    assert config.development
