"""Symmetric key files (base64, one key per file) shared by services that encrypt at rest."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

# Written beside keys that development generated; production mode refuses a directory holding it.
DEVELOPMENT_KEYS_MARKER = "DEVELOPMENT-KEYS"


def mark_development_keys(directory: Path) -> None:
    """Say that ``directory`` holds generated development keys (services/common/config.py checks)."""
    marker = directory / DEVELOPMENT_KEYS_MARKER
    if not marker.exists():
        marker.write_text("Keys in this directory were generated for development; production mode refuses them.\n")


def load_key_file(path: Path, size: int, what: str, create_if_missing: bool, error: type[Exception]) -> bytes:
    """Read a base64 key of ``size`` bytes; in development, create it (mode 0600) when absent.

    ``what`` names the key in error messages ("The <what> <path> ..."); ``error`` is raised.
    """
    if create_if_missing and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes starting at once must not write two different keys.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.b64encode(secrets.token_bytes(size)).decode() + "\n")
            mark_development_keys(path.parent)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise error(f"The {what} {path} does not exist.") from None
    except OSError as exc:
        raise error(f"The {what} {path} cannot be read: {exc.strerror}.") from None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise error(f"The {what} {path} is not base64.") from None
    if len(key) != size:
        raise error(f"The {what} {path} must hold {size} bytes, not {len(key)}.")
    return key
