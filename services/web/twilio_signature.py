"""Twilio's request signature (X-Twilio-Signature).

Twilio signs each webhook with the account's auth token: base64(HMAC-SHA1(token,
the full URL it posted to + every POST parameter, sorted by name, as name+value)).
The URL is the one Twilio was configured with, so the edge rebuilds it from its
configured public address, never from the Host header a client chose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def signed_text(url: str, params: Iterable[tuple[str, str]]) -> str:
    """The string Twilio signs: the URL, then each parameter's name and value, sorted by name
    (a repeated name's values sorted too, as Twilio's own validators do)."""
    return url + "".join(name + value for name, value in sorted(params))


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    digest = hmac.new(auth_token.encode(), signed_text(url, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def valid(auth_token: str, url: str, params: Iterable[tuple[str, str]], given: str) -> bool:
    """Whether ``given`` is Twilio's signature of this request (compared in constant time)."""
    if not auth_token or not given:
        return False
    expected = signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "surrogateescape"))
