"""Phone numbers: any common format in, E.164 out."""

from __future__ import annotations

import phonenumbers

from services.common.errors import InvalidArgument

INVALID_NUMBER = "That is not a valid phone number."


def normalise(raw: str, region: str = "US") -> str:
    """``raw`` as E.164 (``+12125550101``), or InvalidArgument when it is not a real number."""
    text = raw.strip()
    if not text or len(text) > 40:
        raise InvalidArgument(INVALID_NUMBER)
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidArgument(INVALID_NUMBER) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidArgument(INVALID_NUMBER)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def for_people(e164: str, region: str = "US") -> str:
    """A number as people read it: national format for the default region ("(212) 555-0100"),
    international otherwise; as given when it does not parse (it is only shown, never dialled)."""
    try:
        number = phonenumbers.parse(e164, region)
    except phonenumbers.NumberParseException:
        return e164.strip()
    national = phonenumbers.region_code_for_number(number) == region
    return phonenumbers.format_number(
        number, phonenumbers.PhoneNumberFormat.NATIONAL if national else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
