"""Pages from template files (``services/web/templates/``) through Jinja2 and aiohttp-jinja2.

The rule: user-controlled text (a client's name, a message, what a person typed) reaches a
page only escaped. Autoescape is on for every template, and every ``{{ value }}`` is escaped
on output by ``escape_text``; the only markup made in Python is what the filters below
return (a ``<time>`` element, the development mailbox's links, the unread badge), each
built from escaped parts. ``StrictUndefined``: a name a template uses but a view did not
pass is an error in the tests, never a silently empty page.

The layouts (``layouts/staff.html``, ``layouts/portal.html``, ``layouts/plain.html``) need
the signed-in person's top bar: ``staff_chrome`` and ``portal_chrome`` fetch it, and
``render_staff`` / ``render_portal`` render a page inside it. Error pages use the same
functions, so a signed-in person keeps their top bar on a 403 or 404.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb
from markupsafe import Markup

from services.web import timefmt
from services.web.resources import BACKENDS, CONFIG, PRACTICES, PracticeProfile
from services.web.session import Person

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def escape_text(value: object) -> Markup:
    """Every ``{{ value }}`` on its way out: markup made here passes, anything else is escaped.

    html.escape rather than markupsafe's escape only for the entities: pages have always
    written an apostrophe as ``&#x27;``. None prints as nothing (an unset optional value).
    """
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def _time_zone(context: jinja2.runtime.Context) -> str:
    """The practice's time zone for this page: its chrome's, or a ``time_zone`` the view passed."""
    chrome = context.get("chrome")
    if chrome is not None and getattr(chrome, "time_zone", ""):
        return chrome.time_zone
    return context.get("time_zone") or ""


@jinja2.pass_context
def time_element(context: jinja2.runtime.Context, value: datetime | None, style: str = "short") -> Markup:
    """A <time> element in the practice's time zone (services/web/timefmt.py): ``short`` for lists,
    ``table`` for tables; the full form with the zone's name in its title."""
    if value is None:
        return Markup("")
    tz = _time_zone(context)
    if style == "table":
        return Markup('<time datetime="{}" title="{}" data-style="table">{}</time>').format(
            value.isoformat(), timefmt.full(value, tz), timefmt.table(value, tz))
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        value.isoformat(), timefmt.full(value, tz), timefmt.short(value, tz))


@jinja2.pass_context
def zone_name(context: jinja2.runtime.Context) -> str:
    """The abbreviation of the page's time zone now ("EST"), for a column header."""
    return timefmt.abbreviation(_time_zone(context))


_URL = re.compile(r"https?://[^\s<>\"']+")


def linkify(text: str) -> Markup:
    """Plain text, escaped, with its http(s) URLs as links (never any other scheme)."""
    out = Markup("")
    last = 0
    for match in _URL.finditer(text):
        url = match.group(0).rstrip(".,;:!?)")
        out += escape_text(text[last : match.start()])
        out += Markup('<a href="{0}">{0}</a>').format(url)
        last = match.start() + len(url)
    return out + escape_text(text[last:])


def unread_badge(count: int) -> Markup:
    """An unread count for a list row, read as "3 unread" by screen readers; nothing for 0."""
    if count <= 0:
        return Markup("")
    return Markup('<span class="badge">{}<span class="visually-hidden"> unread</span></span>').format(count)


ICONS_FILE = TEMPLATES_DIR / "icons.json"


def load_icons() -> dict[str, str]:
    """The icon set (templates/icons.json): name -> SVG path data."""
    return {k: v for k, v in json.loads(ICONS_FILE.read_text()).items() if not k.startswith("_")}


def icon_function(icons: dict[str, str]):
    def icon(name: str, label: str = "") -> Markup:
        """An icon from the page's sprite (base.html). Decorative (aria-hidden) unless ``label``
        is given; a button with an icon carries its own accessible name."""
        if name not in icons:
            raise KeyError(f"No icon named {name!r} in templates/icons.json.")
        if label:
            return Markup('<svg class="icon" role="img" aria-label="{}"><use href="#i-{}"></use></svg>').format(
                label, name)
        return Markup('<svg class="icon" aria-hidden="true" focusable="false"><use href="#i-{}"></use></svg>').format(
            name)

    return icon


def setup_templates(app: web.Application) -> jinja2.Environment:
    """Once, in the app factory: the environment every page is rendered with."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=escape_text,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        default_helpers=False,
    )
    env.filters.update(time_element=time_element, linkify=linkify, unread_badge=unread_badge)
    icons = load_icons()
    env.globals.update(zone_name=zone_name, icon=icon_function(icons), icon_paths=icons)
    return env


def render(request: web.Request, template: str, context: Mapping[str, Any], status: int = 200) -> web.Response:
    """A whole page (text/html; charset=utf-8)."""
    return aiohttp_jinja2.render_template(template, request, dict(context), status=status)


# ---------------------------------------------------------------- the layouts' top bars


async def has_unread(request: web.Request, person: Person) -> bool:
    summary = await request.app[BACKENDS].messaging.GetUnreadSummary(
        msg_pb.GetUnreadSummaryRequest(), metadata=person.metadata
    )
    return summary.unread_messages > 0


@dataclass(frozen=True)
class StaffChrome:
    """What ``layouts/staff.html`` shows around every staff page."""

    # The practice's name (``profile`` has the rest).
    practice: str
    profile: PracticeProfile
    person_name: str
    user_id: str
    unread: bool
    owner: bool
    # The Secure Messages drawer's composer limit.
    max_length: int

    @property
    def time_zone(self) -> str:
        return self.profile.time_zone


@dataclass(frozen=True)
class PortalChrome:
    """What ``layouts/portal.html`` shows around every Client Portal page."""

    user_id: str
    unread: bool
    profile: PracticeProfile

    @property
    def practice(self) -> str:
        return self.profile.name

    @property
    def time_zone(self) -> str:
        return self.profile.time_zone


async def practice_profile(request: web.Request, person: Person) -> PracticeProfile:
    return await request.app[PRACTICES].get(request.app[BACKENDS].auth, person.user.practice_id, person.metadata)


async def staff_chrome(request: web.Request, person: Person) -> StaffChrome:
    """The staff top bar: the practice's name, the person, the unread dot as it is now."""
    profile, unread = await asyncio.gather(practice_profile(request, person), has_unread(request, person))
    return StaffChrome(practice=profile.name, profile=profile, person_name=person.user.display_name,
                       user_id=person.user_id, unread=unread, owner=person.role == "owner",
                       max_length=request.app[CONFIG].staff_message_max_length)


async def portal_chrome(request: web.Request, person: Person, unread: bool | None = None) -> PortalChrome:
    """The Client Portal's top bar; ``unread`` when the caller already asked."""
    if unread is None:
        profile, unread = await asyncio.gather(practice_profile(request, person), has_unread(request, person))
    else:
        profile = await practice_profile(request, person)
    return PortalChrome(user_id=person.user_id, unread=unread, profile=profile)


async def render_staff(request: web.Request, person: Person, template: str, context: Mapping[str, Any],
                       status: int = 200) -> web.Response:
    """A staff page: ``template`` extends ``layouts/staff.html`` and gets ``chrome`` with ``context``."""
    return render(request, template, {**context, "chrome": await staff_chrome(request, person)}, status)


async def render_portal(request: web.Request, person: Person, template: str, context: Mapping[str, Any],
                        status: int = 200, unread: bool | None = None) -> web.Response:
    """A Client Portal page: ``template`` extends ``layouts/portal.html``."""
    chrome = await portal_chrome(request, person, unread)
    return render(request, template, {**context, "chrome": chrome}, status)
