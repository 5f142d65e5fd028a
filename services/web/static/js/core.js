/* Confidant web edge, shared by every page: helpers, the JSON API, the end of a session, live
 * updates, the unread dot, focus kept inside an open drawer or dialog. It makes the one shared
 * namespace, window.Confidant, that messages.js and pages.js (loaded after it, with defer) use.
 * Vanilla JavaScript, no build step. Text from the server is always set with textContent,
 * never as HTML. */
(function () {
  "use strict";

  var body = document.body;
  var pageKind = body.dataset.page || "";

  // ---------------------------------------------------------------- helpers

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $$(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    var b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  // Code points, as the server counts them.
  function textLength(text) { return Array.from(text).length; }

  // ---------------------------------------------------------------- times, in the practice's zone
  // The same rules as services/web/timefmt.py (tests/web/test_timefmt.py pins both): a practice's
  // times read alike for everyone, whatever zone each browser is in.
  var timeZone = body.dataset.timeZone || "UTC";
  var partsCache = {};

  function formatter(options) {
    var key = JSON.stringify(options);
    if (!partsCache[key]) {
      try {
        partsCache[key] = new Intl.DateTimeFormat("en-US", Object.assign({ timeZone: timeZone }, options));
      } catch (e) {
        partsCache[key] = new Intl.DateTimeFormat("en-US", Object.assign({ timeZone: "UTC" }, options));
      }
    }
    return partsCache[key];
  }

  // The wall-clock fields of a moment in the practice's zone.
  function local(d) {
    var out = {};
    formatter({ year: "numeric", month: "short", day: "numeric", weekday: "short", hour: "numeric",
                minute: "2-digit", hour12: true, timeZoneName: "short" })
      .formatToParts(d).forEach(function (p) { out[p.type] = p.value; });
    out.longWeekday = formatter({ weekday: "long" }).format(d);
    out.longMonth = formatter({ month: "long" }).format(d);
    out.dayKey = out.year + "-" + out.month + "-" + out.day;
    return out;
  }

  function clock(l) { return l.hour + ":" + l.minute + " " + l.dayPeriod; }

  function dayKeyBefore(now, days) { return local(new Date(now.getTime() - days * 86400000)).dayKey; }

  function withinDays(d, now, days) {
    var key = local(d).dayKey;
    for (var i = 1; i < days; i++) if (dayKeyBefore(now, i) === key) return true;
    return false;
  }

  // style: "short" (lists, message groups), "full" (titles), "table" (tables), "day" (separators).
  function formatTime(iso, style, nowIso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    var now = nowIso ? new Date(nowIso) : new Date();
    var l = local(d), today = local(now);
    if (style === "full") {
      return l.longWeekday + ", " + l.longMonth + " " + l.day + ", " + l.year + ", " + clock(l) + " " + l.timeZoneName;
    }
    if (style === "table") return l.month + " " + l.day + ", " + l.year + ", " + clock(l);
    if (style === "day") {
      if (l.dayKey === today.dayKey) return "Today";
      if (l.dayKey === dayKeyBefore(now, 1)) return "Yesterday";
      var label = l.longWeekday + ", " + l.longMonth + " " + l.day;
      return l.year === today.year ? label : label + ", " + l.year;
    }
    if (l.dayKey === today.dayKey) return clock(l);
    if (withinDays(d, now, 7)) return l.weekday + " " + clock(l);
    if (l.year === today.year) return l.month + " " + l.day;
    return l.month + " " + l.day + ", " + l.year;
  }

  // A <time> element for a moment: the short form, the full one as its title.
  function timeElement(iso, style) {
    var t = document.createElement("time");
    t.setAttribute("datetime", iso);
    t.textContent = formatTime(iso, style || "short");
    t.title = formatTime(iso, "full");
    return t;
  }

  // Server-rendered <time> elements are already in the practice's zone; only their relative
  // words ("Today", weekdays) can go stale in a page left open, so they are redrawn.
  function localiseTimes(root) {
    $$("time[datetime]", root).forEach(function (t) {
      var style = t.dataset.style || "short";
      var text = formatTime(t.getAttribute("datetime"), style);
      if (text) t.textContent = text;
    });
  }

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  var ending = false;
  function sessionEnded() {
    // To sign-in, which says the session ended, and back here afterwards. (The 401 that told us
    // cleared the cookie already, so a plain reload could no longer tell why.)
    if (ending) return;
    ending = true;
    var here = window.location.pathname + window.location.search;
    var base = window.location.pathname.indexOf("/portal") === 0 ? "/portal/sign-in" : "/sign-in";
    window.location.assign(base + "?next=" + encodeURIComponent(here) + "&ended=1");
  }

  // background: the person did not ask for this (it must not keep an idle session alive).
  // signal: an AbortSignal, so that a newer search cancels the request of an older one.
  function api(method, url, data, background, signal) {
    var options = { method: method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (background) options.headers["X-Confidant-Background"] = "1";
    if (signal) options.signal = signal;
    if (data !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(data);
    }
    return fetch(url, options).then(
      function (resp) {
        return resp.json().catch(function () { return null; }).then(function (payload) {
          if (resp.status === 401) sessionEnded();
          if (!resp.ok) {
            throw new ApiError(resp.status, (payload && payload.error) || "Something went wrong. Please try again.");
          }
          return payload;
        });
      },
      function () { throw new ApiError(0, "The connection failed. Please check your network and try again."); }
    );
  }

  function formatCount(n) { return Number(n).toLocaleString("en-US"); }

  // One request at a time for a search box: a newer one aborts the older (whose answer is stale).
  function Latest() { this.seq = 0; this.controller = null; }
  Latest.prototype.next = function () {
    if (this.controller) this.controller.abort();
    this.controller = typeof AbortController === "function" ? new AbortController() : null;
    this.seq += 1;
    return { seq: this.seq, signal: this.controller ? this.controller.signal : undefined };
  };
  Latest.prototype.current = function (ticket) { return ticket.seq === this.seq; };

  function unreadBadge(count) {
    var badge = el("span", "badge", String(count));
    badge.appendChild(el("span", "visually-hidden", " unread"));
    return badge;
  }

  // The last message's start; who wrote it is said when it was you or in a group (else the title says it).
  function previewText(c) {
    if (!c.preview) return "";
    var say = c.last_sender_name && (c.last_sender_id === body.dataset.userId || (c.participants || []).length > 2);
    return say ? c.last_sender_name + ": " + c.preview : c.preview;
  }

  function showError(node, message) {
    if (!node) return;
    node.textContent = message || "";
    node.hidden = !message;
  }

  // ---------------------------------------------------------------- unread dot

  var dot = document.getElementById("unread-dot");
  var unreadSeq = 0;
  function refreshUnread() {
    if (!dot) return Promise.resolve();
    var mine = ++unreadSeq;
    return api("GET", "/api/unread", undefined, true).then(function (u) {
      if (mine === unreadSeq) dot.hidden = !(u && u.unread_messages > 0);
    }, function () {});
  }

  // ---------------------------------------------------------------- live updates

  function liveUpdates(handlers) {
    var source = null;
    var retryTimer = null;

    function connect() {
      source = new EventSource("/api/events");
      source.addEventListener("open", function () { if (handlers.open) handlers.open(); });
      ["message_created", "read_updated", "conversation_created", "conversation_archived"].forEach(function (kind) {
        source.addEventListener(kind, function (ev) {
          var data = {};
          try { data = JSON.parse(ev.data); } catch (e) { return; }
          if (handlers[kind]) handlers[kind](data);
        });
      });
      source.addEventListener("session_ended", function () {
        source.close();
        sessionEnded();
      });
      source.onerror = function () {
        if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
        // Closed for good (e.g. 401 or 503): find out whether the session is over, else retry later.
        api("GET", "/api/me").then(function () {
          clearTimeout(retryTimer);
          retryTimer = setTimeout(connect, 5000);
        }, function () {
          if (!ending) { clearTimeout(retryTimer); retryTimer = setTimeout(connect, 5000); }
        });
      };
    }
    connect();
  }

  // ---------------------------------------------------------------- focus inside a drawer or dialog

  var FOCUSABLE = "a[href], button, input, select, textarea, summary, [tabindex]";

  // The controls Tab reaches now: enabled, not hidden (nor inside something hidden), in page order.
  function focusables(container) {
    return $$(FOCUSABLE, container).filter(function (node) {
      if (node.disabled || node.tabIndex < 0 || node.type === "hidden") return false;
      return node.getClientRects().length > 0;
    });
  }

  // While ``container`` is shown, Tab and Shift+Tab cycle through its controls and never leave it;
  // Escape calls onEscape (which closes it and gives focus back to what opened it).
  function trapFocus(container, onEscape) {
    document.addEventListener("keydown", function (e) {
      if (container.hidden) return;
      if (e.key === "Escape") {
        e.preventDefault();
        onEscape();
        return;
      }
      if (e.key !== "Tab" || e.altKey || e.ctrlKey || e.metaKey) return;
      e.preventDefault();
      var items = focusables(container);
      if (!items.length) return;
      var active = document.activeElement;
      var inside = active && active !== body && container.contains(active);
      var next;
      if (e.shiftKey) {
        var before = inside ? items.filter(function (n) {
          return n !== active && (active.compareDocumentPosition(n) & Node.DOCUMENT_POSITION_PRECEDING);
        }) : [];
        next = before.length ? before[before.length - 1] : items[items.length - 1];
      } else {
        var after = inside ? items.filter(function (n) {
          return n !== active && (active.compareDocumentPosition(n) & Node.DOCUMENT_POSITION_FOLLOWING);
        }) : [];
        next = after.length ? after[0] : items[0];
      }
      next.focus();
    });
  }

  // ---------------------------------------------------------------- the shared namespace

  // An icon from the page's sprite (base.html, templates/icons.json), as icon() draws it in a
  // template: decorative unless a label is given.
  var SVG = "http://www.w3.org/2000/svg";
  function icon(name, label) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "icon");
    if (label) { svg.setAttribute("role", "img"); svg.setAttribute("aria-label", label); }
    else { svg.setAttribute("aria-hidden", "true"); svg.setAttribute("focusable", "false"); }
    var use = document.createElementNS(SVG, "use");
    use.setAttribute("href", "#i-" + name);
    svg.appendChild(use);
    return svg;
  }

  window.Confidant = {
    icon: icon,
    pageKind: pageKind,
    $: $,
    $$: $$,
    el: el,
    uuid: uuid,
    textLength: textLength,
    formatTime: formatTime,
    timeElement: timeElement,
    timeZone: timeZone,
    localiseTimes: localiseTimes,
    ApiError: ApiError,
    sessionEnded: sessionEnded,
    api: api,
    formatCount: formatCount,
    Latest: Latest,
    unreadBadge: unreadBadge,
    previewText: previewText,
    showError: showError,
    refreshUnread: refreshUnread,
    liveUpdates: liveUpdates,
    trapFocus: trapFocus,
  };

  // The portal localises its times in messages.js; staff pages keep the server's (UTC) as they are.
  if (pageKind !== "staff" && pageKind !== "portal") localiseTimes(document);
})();
