"""The rules of profile fields auth stores: email addresses, dates of birth, practices' time
zones and contact phone numbers.

Each function takes what a person typed and returns the stored form, or raises InvalidArgument
with a sentence that person can act on. The messages never repeat the value: error details
can reach logs, and a date of birth or an address is PHI.

- Emails are checked by ``email-validator`` without DNS (a typo is refused, an unreachable
  domain is not looked up) and stored in its normalized form, lower-cased whole, as the
  ``users.email`` CHECK and its unique index expect (so case never makes a second account).
  The special-use ``.test`` domain of the demo practice and the tests is accepted in
  development only.
- A date of birth is ``YYYY-MM-DD``, a real date, not before 1900-01-01 and not after today in
  the practice's time zone.
- A time zone is an IANA name known to ``zoneinfo`` (with ``tzdata``), stored in its canonical
  spelling.
- A contact phone number is parsed by ``phonenumbers`` (national US numbers without +1 are
  accepted) and stored as E.164.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, date, datetime
from functools import cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from services.common.errors import InvalidArgument

INVALID_EMAIL = "Enter a valid email address, like name@example.com."
MAX_EMAIL_LENGTH = 254

EARLIEST_DATE_OF_BIRTH = date(1900, 1, 1)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits only
DATE_OF_BIRTH_FORMAT = "Enter the date of birth as YYYY-MM-DD, for example 1984-07-23."
DATE_OF_BIRTH_NOT_A_DATE = "This date of birth does not exist: check the month and the day (YYYY-MM-DD)."
DATE_OF_BIRTH_IN_FUTURE = "The date of birth cannot be in the future."
DATE_OF_BIRTH_TOO_EARLY = "The date of birth cannot be before 1900-01-01."

INVALID_TIME_ZONE = "Choose a time zone from the IANA list, like America/New_York or Europe/London."
MAX_TIME_ZONE_LENGTH = 64

# National numbers are read as US numbers: the practices are in the United States.
PHONE_REGION = "US"
INVALID_PHONE = (
    "Enter the practice's phone number with its area code, like (212) 555-0101, or with + and the country code."
)
MAX_PHONE_LENGTH = 40


def normalize_email(value: str, *, allow_test_domains: bool) -> str:
    """The stored form of an email address a person typed."""
    text = value.strip()
    if not text or len(text) > MAX_EMAIL_LENGTH:
        raise InvalidArgument(INVALID_EMAIL)
    try:
        checked = validate_email(text, check_deliverability=False, test_environment=allow_test_domains)
    except EmailNotValidError:
        raise InvalidArgument(INVALID_EMAIL) from None
    email = checked.normalized.lower()
    if len(email) > MAX_EMAIL_LENGTH:
        raise InvalidArgument(INVALID_EMAIL)
    return email


def email_lookup_key(value: str, *, allow_test_domains: bool) -> str:
    """The form to look an account up by (sign-in, password reset), without refusing anything.

    A valid address is normalized as it was when stored; anything else is only lower-cased, so
    it is looked up (and found by nobody) rather than answered differently.
    """
    try:
        return normalize_email(value, allow_test_domains=allow_test_domains)
    except InvalidArgument:
        return value.strip().lower()


def parse_date_of_birth(value: str, today: date) -> date | None:
    """None for an empty value (not known); otherwise the date, checked against ``today``."""
    text = value.strip()
    if not text:
        return None
    if not _ISO_DATE.fullmatch(text):
        raise InvalidArgument(DATE_OF_BIRTH_FORMAT)
    try:
        born = date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(DATE_OF_BIRTH_NOT_A_DATE) from None
    if born < EARLIEST_DATE_OF_BIRTH:
        raise InvalidArgument(DATE_OF_BIRTH_TOO_EARLY)
    if born > today:
        raise InvalidArgument(DATE_OF_BIRTH_IN_FUTURE)
    return born


def today_in(time_zone: str) -> date:
    """Today's date in ``time_zone`` (UTC when the name is unknown)."""
    try:
        zone = zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = UTC
    return datetime.now(zone).date()


@cache
def _time_zones() -> dict[str, str]:
    """Every IANA name zoneinfo knows, by its lower-cased spelling."""
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def normalize_time_zone(value: str) -> str:
    """The canonical spelling of an IANA time zone name ("america/new_york" → "America/New_York")."""
    text = value.strip()
    name = _time_zones().get(text.lower()) if len(text) <= MAX_TIME_ZONE_LENGTH else None
    if name is None:
        raise InvalidArgument(INVALID_TIME_ZONE)
    return name


def normalize_phone(value: str) -> str:
    """A contact phone number as E.164; empty stays empty (no number)."""
    text = value.strip()
    if not text:
        return ""
    if len(text) > MAX_PHONE_LENGTH:
        raise InvalidArgument(INVALID_PHONE)
    try:
        number = phonenumbers.parse(text, PHONE_REGION)
    except phonenumbers.NumberParseException:
        raise InvalidArgument(INVALID_PHONE) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidArgument(INVALID_PHONE)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
