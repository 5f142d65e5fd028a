"""HTML pages as plain string templates.

Every interpolated value goes through ``html.escape`` unless it is ``Safe`` —
and only this module makes ``Safe`` values (by rendering a template), so
user-controlled text can never reach a page unescaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from string import Template


class Safe(str):
    """HTML that is already escaped (the output of ``render``)."""

    __slots__ = ()


def escape(value: object) -> Safe:
    if isinstance(value, Safe):
        return value
    return Safe(html.escape("" if value is None else str(value), quote=True))


def render(template: str, **values: object) -> Safe:
    return Safe(Template(template).substitute({name: escape(value) for name, value in values.items()}))


def join(parts: Iterable[Safe]) -> Safe:
    return Safe("".join(escape(part) for part in parts))


def attributes(attrs: Mapping[str, object]) -> Safe:
    """name="value" pairs; True gives a bare attribute, False/None leaves it out."""
    out = []
    for name, value in attrs.items():
        if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
            raise ValueError(f"Not an attribute name: {name!r}")
        if value is True:
            out.append(Safe(name))
        elif value is not None and value is not False:
            out.append(render(f'{name}="$v"', v=value))
    return Safe(" ".join(out))


def message_box(error: str = "", notice: str = "") -> Safe:
    """The result of a form: an error (role=alert) or a notice (role=status), or nothing."""
    if error:
        return render('<p class="error" role="alert">$e</p>', e=error)
    if notice:
        return render('<p class="notice" role="status">$n</p>', n=notice)
    return Safe("")


def hidden_unless(flag: bool) -> Safe:
    return Safe("") if flag else Safe("hidden")


def when(value: datetime | None) -> Safe:
    """A <time> element; the browser's script shows it in local time."""
    if value is None:
        return Safe("")
    return render('<time datetime="$iso">$text</time>', iso=value.isoformat(), text=value.strftime("%b %d, %H:%M UTC"))


_URL = re.compile(r"https?://[^\s<>\"']+")


def linkify(text: str) -> Safe:
    """Escape plain text and turn its http(s) URLs into links."""
    out: list[Safe] = []
    last = 0
    for match in _URL.finditer(text):
        out.append(escape(text[last : match.start()]))
        url = match.group(0).rstrip(".,;:!?)")
        out.append(render('<a href="$url">$url</a>', url=url))
        last = match.start() + len(url)
    out.append(escape(text[last:]))
    return join(out)


# ---------------------------------------------------------------- layout

LAYOUT = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head>
<body $body_attrs>
$content
</body>
</html>
"""


def page(title: str, content: Safe, **data: object) -> Safe:
    """A whole page; ``data`` become data-* attributes of <body> for the script."""
    attrs = {f"data-{name.replace('_', '-')}": value for name, value in data.items()}
    return render(LAYOUT, title=title, content=content, body_attrs=attributes(attrs))


# ---------------------------------------------------------------- sign-in

SIGN_IN = """<main class="narrow">
<p class="brand-line">$brand</p>
<h1>Sign in</h1>
$error
<form method="post" action="/sign-in" class="stack">
<input type="hidden" name="next" value="$next">
<input type="hidden" name="portal" value="$portal">
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="username" required value="$email">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" class="primary">Sign in</button>
</form>
<p><a href="/forgot-password?portal=$portal">Forgot password?</a></p>
</main>"""


def sign_in_page(*, portal: bool, next_path: str = "", error: str = "", email: str = "", notice: str = "") -> Safe:
    error_html = render('<p class="error" role="alert">$e</p>', e=error) if error else Safe("")
    if notice and not error:
        error_html = render('<p class="notice" role="status">$n</p>', n=notice)
    content = render(
        SIGN_IN,
        brand="Client Portal" if portal else "Confidant",
        error=error_html,
        next=next_path,
        portal="1" if portal else "",
        email=email,
    )
    return page("Client Portal — Sign in" if portal else "Sign in", content, page="sign-in")


# ---------------------------------------------------------------- staff

STAFF_TOPBAR = """<header class="topbar">
<a class="brand" href="/">$practice</a>
<div class="topbar-actions">
<span class="who">$name</span>
<span class="sm-wrap">
<button type="button" id="sm-toggle" class="sm-button" aria-expanded="false" aria-controls="sm-panel">Secure Messages</button>
<span id="unread-dot" class="dot" role="status" aria-label="New unread messages" $dot_hidden></span>
</span>
$account_links
<form method="post" action="/sign-out" class="inline"><button type="submit" class="quiet">Sign out</button></form>
</div>
</header>"""

# The top bar's links: inline on wide screens, in a menu on phones (no script needed).
# Every staff member has Clients and Security; the practice owner also Team, Settings and the Audit trail.
NAV_LINK = """<a class="quiet wide-only" href="$href">$label</a>"""
MENU = """<details class="menu narrow-only"><summary>Menu</summary>
<ul class="menu-items">
$items
</ul>
</details>"""


def staff_links(owner: bool) -> Safe:
    inline = [("/clients", "Clients")]
    menu = [("/clients", "Clients")]
    if owner:
        inline += [("/account/team", "Team"), ("/settings", "Settings")]
        menu += [("/account/team", "Team"), ("/account/audit", "Audit trail"), ("/settings", "Settings")]
    inline.append(("/account/security", "Security"))
    menu.append(("/account/security", "Security"))
    items = join(render('<li><a href="$href">$label</a></li>', href=href, label=label) for href, label in menu)
    return join([*(render(NAV_LINK, href=href, label=label) for href, label in inline), render(MENU, items=items)])


SECURE_MESSAGES_PANEL = """<aside id="sm-panel" class="panel" aria-labelledby="sm-title" hidden>
<div class="panel-head">
<button type="button" class="quiet" data-action="back" hidden>Back</button>
<h2 id="sm-title" tabindex="-1">Secure Messages</h2>
<button type="button" class="primary" data-action="new-message">New Message</button>
<button type="button" class="quiet" data-action="close">Close</button>
</div>
<p class="error" role="alert" data-role="panel-error" hidden></p>
<section data-view="list">
<div class="list-actions"><button type="button" class="link" data-action="archived">Archived</button></div>
<p class="empty" data-role="empty" hidden>No conversations yet. Start one with New Message.</p>
<ul class="people conversations" data-role="conversations" aria-label="Conversations"></ul>
<button type="button" class="more" data-action="more" hidden>Load more</button>
</section>
<section data-view="archived" hidden>
<h3 id="sm-archived-title">Archived</h3>
<p class="empty" data-role="archived-empty" hidden>No archived conversations.</p>
<ul class="people conversations" data-role="archived" aria-labelledby="sm-archived-title"></ul>
<button type="button" class="more" data-action="more-archived" hidden>Load more</button>
</section>
<section data-view="new" hidden>
<input type="search" data-role="search" aria-label="Search" placeholder="Search clients and team members" autocomplete="off">
<div data-role="recent-block">
<h3>Recent</h3>
<p class="muted" data-role="recent-empty" hidden>No one messaged recently.</p>
<ul class="people" data-role="recent"></ul>
</div>
<div data-role="results-block" hidden>
<h3>Results</h3>
<p class="muted" data-role="results-empty" hidden>No one found.</p>
<ul class="people" data-role="results"></ul>
</div>
</section>
<section data-view="enable" hidden>
<p data-role="enable-text"></p>
<button type="button" class="primary" data-action="enable">Enable Secure Messaging</button>
</section>
<section data-view="thread" class="thread" hidden>
<h3 data-role="thread-title"></h3>
<div class="thread-tools" data-role="thread-tools" hidden>
<a data-role="client-info" href="#">Client Info</a>
<button type="button" class="link" data-action="disable-here" hidden>Disable Secure Messaging</button>
</div>
<ol class="messages" data-role="messages" aria-label="Messages" aria-live="polite"></ol>
<div class="cannot-send" data-role="cannot-send" hidden>
<p data-role="cannot-send-text"></p>
<button type="button" class="primary" data-action="enable-here" hidden>Enable Secure Messaging</button>
</div>
$composer
</section>
</aside>"""

COMPOSER = """<form class="composer" data-role="composer" method="post" action="$action">
<input type="hidden" name="idempotency_key" value="$idempotency_key">
<label for="$field_id">Message</label>
<textarea id="$field_id" name="body" rows="3" data-max-length="$max_length"
 aria-describedby="$field_id-counter $field_id-limit"></textarea>
<div class="composer-foot">
<span class="counter" id="$field_id-counter" data-role="counter">0 / $max_length</span>
<button type="submit" class="primary">Send</button>
</div>
<p class="limit" id="$field_id-limit" role="status" data-role="limit" hidden></p>
<p class="error" role="alert" data-role="composer-error" hidden></p>
</form>"""


def composer(*, max_length: int, action: str = "", idempotency_key: str = "", field_id: str = "message-body") -> Safe:
    return render(COMPOSER, action=action, idempotency_key=idempotency_key, max_length=max_length, field_id=field_id)


STAFF_HOME = """<main class="content">
<h1>Welcome, $name</h1>
<p>$practice</p>
<p class="muted">Open Secure Messages at the top right to read and write secure messages to your clients and team.</p>
</main>"""


def staff_page(*, title: str, practice: str, person_name: str, user_id: str, unread: bool, max_length: int,
               content: Safe, owner: bool = False) -> Safe:
    body = join([
        render(STAFF_TOPBAR, practice=practice, name=person_name, dot_hidden=hidden_unless(unread),
               account_links=staff_links(owner)),
        render(SECURE_MESSAGES_PANEL, composer=composer(max_length=max_length)),
        content,
    ])
    return page(title, body, page="staff", user_id=user_id)


def staff_home(*, practice: str, person_name: str, user_id: str, unread: bool, max_length: int,
               owner: bool = False) -> Safe:
    content = render(STAFF_HOME, name=person_name, practice=practice)
    return staff_page(title=f"{practice} — Confidant", practice=practice, person_name=person_name,
                      user_id=user_id, unread=unread, max_length=max_length, content=content, owner=owner)


# ---------------------------------------------------------------- magic link landing

MAGIC_LINK = """<main class="narrow">
<p class="brand-line">Client Portal</p>
<h1>$practice</h1>
<p>You have a secure message.</p>
<form method="post" action="/m/$token">
<button type="submit" class="primary">View message</button>
</form>
</main>"""


def magic_link_page(*, token: str, practice: str = "") -> Safe:
    return page("You have a secure message", render(MAGIC_LINK, token=token, practice=practice or "Secure message"),
                page="magic-link")


# ---------------------------------------------------------------- client portal

PORTAL_TOPBAR = """<header class="topbar">
<a class="brand" href="/portal">Client Portal</a>
<div class="topbar-actions">
<span class="sm-wrap">
<a id="sm-link" class="sm-button" href="/portal">Secure Messages</a>
<span id="unread-dot" class="dot" role="status" aria-label="New unread messages" $dot_hidden></span>
</span>
<form method="post" action="/sign-out" class="inline"><button type="submit" class="quiet">Sign out</button></form>
</div>
</header>"""

PORTAL_HOME = """<main class="content">
<h1>Secure Messages</h1>
$body
</main>"""

PORTAL_ITEM = """<li><a class="person" href="/portal/conversations/$cid"><span class="summary"><span class="name">$names</span>
<span class="preview">$preview</span></span>$badge
<span class="secondary">$when</span></a></li>"""

PORTAL_LIST = """<p class="empty" data-role="empty" $empty_hidden>No messages yet. Your practice will message you here.</p>
<ul class="people" data-role="conversations" aria-label="Conversations">$items</ul>"""

CANNOT_SEND = """<p class="notice" role="status" data-role="cannot-send">$text</p>"""
CLIENT_CANNOT_SEND = "Secure messaging is turned off for this conversation, so replies cannot be sent here."

PORTAL_THREAD = """<main class="content thread">
<p><a href="/portal">All conversations</a></p>
<h1>$title</h1>
<ol class="messages" data-role="messages" aria-label="Messages" aria-live="polite">$messages</ol>
$composer
</main>"""

MESSAGE = """<li class="message $side" data-seq="$seq" data-message-id="$message_id">
<div class="meta"><span class="sender">$sender</span> $when</div>
<p class="body">$body</p>
</li>"""


def unread_badge(count: int) -> Safe:
    if count <= 0:
        return Safe("")
    return render('<span class="badge">$n<span class="visually-hidden"> unread</span></span>', n=count)


def message_item(*, message_id: str, seq: int, sender: str, body: str, created_at: datetime | None, mine: bool) -> Safe:
    return render(MESSAGE, side="mine" if mine else "theirs", seq=seq, message_id=message_id, sender=sender,
                  when=when(created_at), body=body)


def portal_page(*, title: str, unread: bool, user_id: str, content: Safe, conversation_id: str = "") -> Safe:
    body = join([render(PORTAL_TOPBAR, dot_hidden=hidden_unless(unread)), content])
    return page(title, body, page="portal", user_id=user_id, conversation_id=conversation_id or None)


def preview_text(sender: str, preview: str) -> str:
    return f"{sender}: {preview}" if sender and preview else preview


def portal_home(*, conversations: list[dict], unread: bool, user_id: str) -> Safe:
    """The client's conversations; the page's script keeps the list (and its unread counts) live."""
    items = join(
        render(PORTAL_ITEM, cid=c["conversation_id"], names=c["title"], badge=unread_badge(c["unread_count"]),
               when=when(c["last_activity"]), preview=preview_text(c.get("sender", ""), c.get("preview", "")))
        for c in conversations
    )
    body = render(PORTAL_LIST, items=items, empty_hidden=Safe("hidden") if conversations else Safe(""))
    return portal_page(title="Client Portal — Secure Messages", unread=unread, user_id=user_id,
                       content=render(PORTAL_HOME, body=body))


def portal_thread(*, conversation_id: str, title: str, messages: list[Safe], unread: bool, user_id: str,
                  max_length: int, idempotency_key: str, can_send: bool = True) -> Safe:
    if can_send:
        writer = composer(max_length=max_length, action=f"/portal/conversations/{conversation_id}/messages",
                          idempotency_key=idempotency_key)
    else:
        writer = render(CANNOT_SEND, text=CLIENT_CANNOT_SEND)
    content = render(PORTAL_THREAD, title=title, messages=join(messages), composer=writer)
    return portal_page(title="Client Portal — Secure Messages", unread=unread, user_id=user_id,
                       content=content, conversation_id=conversation_id)


# ---------------------------------------------------------------- errors

ERROR = """<main class="narrow">
<h1>$heading</h1>
<p>$message</p>
<p><a href="$home">Go to the start page</a></p>
</main>"""

ERROR_HEADINGS = {
    400: "Something in the request is not right",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "That cannot be done right now",
    429: "Too many attempts",
    503: "Temporarily unavailable",
}


def error_page(status: int, message: str, home: str = "/") -> Safe:
    heading = ERROR_HEADINGS.get(status, "Something went wrong")
    return page(heading, render(ERROR, heading=heading, message=message, home=home), page="error")


# ---------------------------------------------------------------- development mailbox

MAILBOX = """<main class="content">
<h1>Development mailbox</h1>
<p class="muted">Emails and text messages the services sent in development mode. Nothing here left this machine.</p>
<h2>Emails</h2>
$emails
<h2>Text messages</h2>
<form method="post" action="/dev/mailbox/sms-reply" class="stack card" aria-labelledby="reply-as-phone">
<h3 id="reply-as-phone">Reply as a client's phone</h3>
<label for="from-any">From</label>
<input id="from-any" name="from_number" type="tel" required placeholder="+12125550101">
<label for="reply-any">Reply</label>
<input id="reply-any" name="body" required placeholder="STOP, START, HELP or anything">
<button type="submit">Send reply</button>
</form>
$texts
</main>"""

MAILBOX_EMAIL = """<article class="mail">
<dl class="meta"><dt>To</dt><dd>$to</dd><dt>Subject</dt><dd>$subject</dd><dt>Time</dt><dd>$when</dd></dl>
<div class="mail-body">$body</div>
</article>"""

MAILBOX_SMS = """<article class="mail">
<dl class="meta"><dt>To</dt><dd>$to</dd><dt>Time</dt><dd>$when</dd></dl>
<p class="mail-body">$text</p>
<form method="post" action="/dev/mailbox/sms-reply" class="stack">
<label for="from-$item_id">From</label>
<input id="from-$item_id" name="from_number" value="$to" required>
<label for="reply-$item_id">Reply</label>
<input id="reply-$item_id" name="body" required placeholder="STOP, START, HELP or anything">
<button type="submit">Send reply</button>
</form>
</article>"""


def mailbox_page(*, emails: list[dict], texts: list[dict], notice: str = "") -> Safe:
    email_html = join(
        render(MAILBOX_EMAIL, to=e["to"], subject=e["subject"], when=when(e["created"]), body=linkify(e["text"]))
        for e in emails
    ) or Safe('<p class="muted">No emails yet.</p>')
    text_html = join(
        render(MAILBOX_SMS, to=t["to"], when=when(t["created"]), text=t["text"], item_id=t["item_id"]) for t in texts
    ) or Safe('<p class="muted">No text messages yet.</p>')
    content = render(MAILBOX, emails=email_html, texts=text_html)
    if notice:
        content = join([render('<p class="notice" role="status">$n</p>', n=notice), content])
    return page("Development mailbox", content, page="mailbox")
