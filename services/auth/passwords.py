"""Password hashing (argon2id) and the password rules.

Hashing is deliberately slow and memory-hard, so it runs in a worker thread:
the event loop keeps answering other calls while a password is checked.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.common.errors import InvalidArgument

# OWASP's recommended argon2id setting (19 MiB, 2 passes, 1 lane).
ARGON2_TIME_COST = 2
ARGON2_MEMORY_COST_KIB = 19456
ARGON2_PARALLELISM = 1

# The 10,000 most common passwords (data/README.md says where they come from),
# plus long ones that meet the length rule yet are among the first tried by anyone
# guessing. Compared after folding case, accents and separators.
_COMMON_PASSWORDS_FILE = Path(__file__).parent / "data" / "common-passwords.txt"
_LONG_GUESSES = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "123456789123",
        "1q2w3e4r5t6y",
        "abcdefghijkl",
        "abcd1234abcd1234",
        "administrator",
        "changeme1234",
        "iloveyou1234",
        "letmein12345",
        "password1234",
        "password12345",
        "password123456",
        "passwordpassword",
        "passw0rd1234",
        "qwerty123456",
        "qwertyuiop12",
        "qwertyuiopasdf",
        "qwertyuiopasdfgh",
        "welcome12345",
        "welcome123456",
        "thisismypassword",
        "mypassword123",
        "confidant1234",
        "securemessaging",
    }
)


def _load_common_passwords() -> frozenset[str]:
    words = _COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").split()
    return frozenset(_SEPARATORS.sub("", _fold(word)) for word in words) | _LONG_GUESSES
_SEPARATORS = re.compile(r"[\s\-_.]+")
# Context words shorter than this are too common to refuse ("Li", "Ann").
_MIN_CONTEXT_WORD = 4


def _fold(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


_COMMON_PASSWORDS = _load_common_passwords()


def check_password_rules(
    password: str, *, email: str, display_name: str, min_length: int, max_length: int
) -> None:
    """Refuse passwords that are too short or long, common, or built from the person's name or email."""
    if len(password) < min_length:
        raise InvalidArgument(f"The password must be at least {min_length} characters long.")
    if len(password) > max_length:
        raise InvalidArgument(f"The password must be at most {max_length} characters long.")
    folded = _fold(password)
    compact = _SEPARATORS.sub("", folded)
    if len(set(compact)) <= 2 or compact in _COMMON_PASSWORDS or folded in _COMMON_PASSWORDS:
        raise InvalidArgument("This password is too common or too easy to guess. Choose another.")
    local_part = email.split("@", 1)[0]
    context = {_fold(local_part), _fold(display_name.strip())}
    context.update(_fold(word) for word in re.split(r"[\s\-_.,@]+", display_name) if word)
    context.update(_fold(word) for word in re.split(r"[\-_.+]+", local_part) if word)
    for word in context:
        if len(word) >= _MIN_CONTEXT_WORD and (word in folded or word in compact):
            raise InvalidArgument("The password must not contain your name or email address.")


class Passwords:
    """argon2id hashing off the event loop, with a dummy hash for unknown accounts."""

    def __init__(self, hasher: PasswordHasher, dummy_hash: str) -> None:
        self._hasher = hasher
        self._dummy_hash = dummy_hash

    @classmethod
    async def create(cls) -> Passwords:
        hasher = PasswordHasher(
            time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_COST_KIB, parallelism=ARGON2_PARALLELISM
        )
        # Verifying against this when there is no account costs what a real check costs.
        dummy = await asyncio.to_thread(hasher.hash, "no account has this password")
        return cls(hasher, dummy)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; a missing hash is checked against the dummy and fails."""
        candidate = password_hash or self._dummy_hash
        try:
            matched = await asyncio.to_thread(self._hasher.verify, candidate, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return bool(matched) and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
