"""X-Twilio-Signature: Twilio's published example vector, and every one-character change fails."""

from __future__ import annotations

import pytest

from services.web import twilio_signature

# https://www.twilio.com/docs/usage/security#validating-requests
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def one_character_changes(text: str, alphabet: str) -> list[str]:
    """Every string that differs from ``text`` in exactly one position (a different character there)."""
    out = []
    for i, ch in enumerate(text):
        other = next(c for c in alphabet if c != ch)
        out.append(text[:i] + other + text[i + 1:])
    return out


def test_the_published_example_vector_passes():
    assert twilio_signature.signature(TOKEN, URL, PARAMS.items()) == SIGNATURE
    assert twilio_signature.valid(TOKEN, URL, list(PARAMS.items()), SIGNATURE)
    # The order the parameters arrive in does not matter: they are sorted by name.
    assert twilio_signature.valid(TOKEN, URL, list(reversed(PARAMS.items())), SIGNATURE)


def test_every_one_character_change_of_the_signature_fails():
    # Signatures are compared as strings: even a change that decodes to the same bytes is refused.
    changed = one_character_changes(SIGNATURE, BASE64 + "=")
    assert len(changed) == len(SIGNATURE)
    for signature in changed:
        assert not twilio_signature.valid(TOKEN, URL, PARAMS.items(), signature), signature
    assert not twilio_signature.valid(TOKEN, URL, PARAMS.items(), SIGNATURE[:-1])
    assert not twilio_signature.valid(TOKEN, URL, PARAMS.items(), SIGNATURE + "=")
    assert not twilio_signature.valid(TOKEN, URL, PARAMS.items(), "")


def test_every_one_character_change_of_the_url_fails():
    for url in one_character_changes(URL, "xyz/?=&:.-_"):
        assert not twilio_signature.valid(TOKEN, url, PARAMS.items(), SIGNATURE), url
    assert not twilio_signature.valid(TOKEN, URL + "3", PARAMS.items(), SIGNATURE)
    assert not twilio_signature.valid(TOKEN, URL[:-1], PARAMS.items(), SIGNATURE)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_every_one_character_change_of_each_parameter_value_fails(name):
    for value in one_character_changes(PARAMS[name], "0123456789ABC+"):
        params = {**PARAMS, name: value}
        assert not twilio_signature.valid(TOKEN, URL, params.items(), SIGNATURE), (name, value)
    # A parameter added, removed or renamed fails too.
    assert not twilio_signature.valid(TOKEN, URL, {**PARAMS, name: PARAMS[name] + "0"}.items(), SIGNATURE)
    without = {k: v for k, v in PARAMS.items() if k != name}
    assert not twilio_signature.valid(TOKEN, URL, without.items(), SIGNATURE)
    renamed = {**without, name.lower(): PARAMS[name]}
    assert not twilio_signature.valid(TOKEN, URL, renamed.items(), SIGNATURE)


def test_another_token_or_no_token_fails():
    assert not twilio_signature.valid("12346", URL, PARAMS.items(), SIGNATURE)
    assert not twilio_signature.valid("", URL, PARAMS.items(), SIGNATURE)
