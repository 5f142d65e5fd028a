/* Confidant web edge: the Secure Messages panel, the portal thread, live updates.
 * Vanilla JavaScript, no build step. Text from the server is always set with
 * textContent, never as HTML. */
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

  function formatTime(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    return d.toLocaleString([], { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });
  }

  function localiseTimes(root) {
    $$("time[datetime]", root).forEach(function (t) {
      var text = formatTime(t.getAttribute("datetime"));
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
  function api(method, url, data, background) {
    var options = { method: method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (background) options.headers["X-Confidant-Background"] = "1";
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

  // ---------------------------------------------------------------- a thread and its composer

  function Thread(root, options) {
    this.list = $("[data-role=messages]", root);
    this.form = $("[data-role=composer]", root);
    this.textarea = $("textarea", this.form);
    this.counter = $("[data-role=counter]", this.form);
    this.error = $("[data-role=composer-error]", this.form);
    this.sendButton = $("button[type=submit]", this.form);
    this.maxLength = parseInt(this.textarea.dataset.maxLength, 10) || 5000;
    this.onChange = options.onChange || function () {};
    this.conversationId = null;
    this.lastSeq = 0;
    this.readSeq = 0;
    this.ids = {};
    this.pendingKey = null;
    this.chain = Promise.resolve();
    var self = this;
    this.textarea.addEventListener("input", function () { self.updateCounter(); });
    this.textarea.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); self.send(); }
    });
    this.form.addEventListener("submit", function (e) { e.preventDefault(); self.send(); });
    this.updateCounter();
  }

  Thread.prototype.updateCounter = function () {
    var n = textLength(this.textarea.value);
    this.counter.textContent = n + " / " + this.maxLength;
    this.counter.classList.toggle("over", n > this.maxLength);
  };

  // Adopt messages already on the page (the portal renders them server-side).
  Thread.prototype.adopt = function (conversationId) {
    var self = this;
    this.conversationId = conversationId;
    $$("li[data-seq]", this.list).forEach(function (li) {
      var seq = parseInt(li.dataset.seq, 10) || 0;
      self.ids[li.dataset.messageId] = true;
      if (seq > self.lastSeq) self.lastSeq = seq;
    });
    localiseTimes(this.list);
    this.scrollToEnd();
  };

  Thread.prototype.open = function (conversationId) {
    this.conversationId = conversationId;
    this.lastSeq = 0;
    this.readSeq = 0;
    this.ids = {};
    this.pendingKey = null;
    this.list.textContent = "";
    this.textarea.value = "";
    showError(this.error, "");
    this.updateCounter();
    return this.loadNew();
  };

  Thread.prototype.close = function () { this.conversationId = null; };

  Thread.prototype.render = function (m) {
    var li = el("li", "message " + (m.mine ? "mine" : "theirs"));
    li.dataset.seq = m.seq;
    li.dataset.messageId = m.message_id;
    var meta = el("div", "meta");
    meta.appendChild(el("span", "sender", m.mine ? "You" : m.sender_name));
    meta.appendChild(document.createTextNode(" "));
    var time = el("time", null, formatTime(m.created_at));
    if (m.created_at) time.setAttribute("datetime", m.created_at);
    meta.appendChild(time);
    li.appendChild(meta);
    li.appendChild(el("p", "body", m.body));
    return li;
  };

  Thread.prototype.append = function (messages) {
    var self = this;
    var added = 0;
    messages.sort(function (a, b) { return a.seq - b.seq; }).forEach(function (m) {
      if (self.ids[m.message_id]) return;
      self.ids[m.message_id] = true;
      self.list.appendChild(self.render(m));
      if (m.seq > self.lastSeq) self.lastSeq = m.seq;
      added += 1;
    });
    if (added) this.scrollToEnd();
    return added;
  };

  Thread.prototype.scrollToEnd = function () {
    var last = this.list.lastElementChild;
    if (!last) return;
    if (this.list.scrollHeight > this.list.clientHeight && getComputedStyle(this.list).overflowY !== "visible") {
      this.list.scrollTop = this.list.scrollHeight;
    } else if (last.scrollIntoView) {
      last.scrollIntoView({ block: "nearest" });
    }
  };

  // New messages after the last one shown; calls are queued so nothing is shown twice.
  Thread.prototype.loadNew = function () {
    var self = this;
    this.chain = this.chain.then(function () {
      var cid = self.conversationId;
      if (!cid) return;
      var url = "/api/conversations/" + encodeURIComponent(cid) + "/messages?after_seq=" + self.lastSeq;
      return api("GET", url).then(function (r) {
        if (cid === self.conversationId) self.append(r.messages || []);
      });
    }).catch(function (e) { showError(self.error, e.message); });
    return this.chain;
  };

  Thread.prototype.markRead = function () {
    var self = this;
    var cid = this.conversationId;
    if (!cid || this.lastSeq <= this.readSeq || document.visibilityState === "hidden") {
      return Promise.resolve();
    }
    var seq = this.lastSeq;
    return api("POST", "/api/conversations/" + encodeURIComponent(cid) + "/read", { seq: seq }).then(function () {
      if (cid === self.conversationId && seq > self.readSeq) self.readSeq = seq;
      self.onChange();
    }, function () {});
  };

  Thread.prototype.send = function () {
    var self = this;
    var cid = this.conversationId;
    var text = this.textarea.value;
    if (!cid || this.sending) return;
    if (!text.trim()) {
      showError(this.error, "Write a message first.");
      return;
    }
    // One key per composed message, reused if the send is retried.
    if (!this.pendingKey) this.pendingKey = uuid();
    this.sending = true;
    this.sendButton.disabled = true;
    showError(this.error, "");
    api("POST", "/api/conversations/" + encodeURIComponent(cid) + "/messages", {
      body: text,
      idempotency_key: this.pendingKey,
    }).then(function (r) {
      self.pendingKey = null;
      if (self.textarea.value === text) self.textarea.value = "";
      self.updateCounter();
      return self.loadNew().then(function () {
        if (r && r.message && cid === self.conversationId) self.append([r.message]);
        return self.markRead();
      });
    }, function (e) {
      // A refused message was not stored: the next attempt is a new message.
      if (e.status >= 400 && e.status < 500) self.pendingKey = null;
      showError(self.error, e.message);
    }).then(function () {
      self.sending = false;
      self.sendButton.disabled = false;
    });
  };

  // ---------------------------------------------------------------- live updates

  function liveUpdates(handlers) {
    var source = null;
    var retryTimer = null;

    function connect() {
      source = new EventSource("/api/events");
      source.addEventListener("open", function () { if (handlers.open) handlers.open(); });
      ["message_created", "read_updated", "conversation_created"].forEach(function (kind) {
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

  // ---------------------------------------------------------------- staff: the Secure Messages panel

  function staffPanel() {
    var panel = document.getElementById("sm-panel");
    var toggle = document.getElementById("sm-toggle");
    if (!panel || !toggle) return;
    var views = {};
    $$("section[data-view]", panel).forEach(function (s) { views[s.dataset.view] = s; });
    var backButton = $("[data-action=back]", panel);
    var panelError = $("[data-role=panel-error]", panel);
    var conversationsList = $("[data-role=conversations]", panel);
    var emptyText = $("[data-role=empty]", panel);
    var search = $("[data-role=search]", panel);
    var recentBlock = $("[data-role=recent-block]", panel);
    var recentList = $("[data-role=recent]", panel);
    var recentEmpty = $("[data-role=recent-empty]", panel);
    var resultsBlock = $("[data-role=results-block]", panel);
    var resultsList = $("[data-role=results]", panel);
    var resultsEmpty = $("[data-role=results-empty]", panel);
    var enableText = $("[data-role=enable-text]", panel);
    var threadTitle = $("[data-role=thread-title]", panel);
    var current = null;
    var enabling = null;
    var listSeq = 0;
    var searchSeq = 0;
    var searchTimer = null;

    var thread = new Thread(views.thread, { onChange: refreshUnread });

    function isOpen() { return !panel.hidden; }

    function show(view) {
      current = view;
      Object.keys(views).forEach(function (name) { views[name].hidden = name !== view; });
      backButton.hidden = view === "list";
      showError(panelError, "");
      if (view !== "thread") thread.close();
    }

    function openPanel() {
      panel.hidden = false;
      toggle.setAttribute("aria-expanded", "true");
      $("#sm-title", panel).focus({ preventScroll: true });
      showList();
    }

    function closePanel() {
      panel.hidden = true;
      toggle.setAttribute("aria-expanded", "false");
      current = null;
      thread.close();
      refreshUnread();
    }

    function personButton(user, onChoose) {
      var li = el("li");
      var button = el("button", "person");
      button.type = "button";
      button.setAttribute("aria-label", user.display_name);
      button.appendChild(el("span", "name", user.display_name));
      if (user.role_label) {
        var secondary = el("span", "secondary", user.role_label);
        secondary.setAttribute("aria-hidden", "true");
        button.appendChild(secondary);
        button.setAttribute("aria-description", user.role_label);
      }
      button.addEventListener("click", function () { onChoose(user); });
      li.appendChild(button);
      return li;
    }

    function conversationButton(c) {
      var li = el("li");
      var button = el("button", "person");
      button.type = "button";
      button.dataset.conversationId = c.conversation_id;
      button.appendChild(el("span", "name", c.title));
      if (c.last_activity_at) button.appendChild(el("span", "secondary", formatTime(c.last_activity_at)));
      if (c.unread_count > 0) {
        var badge = el("span", "badge", String(c.unread_count));
        badge.appendChild(el("span", "visually-hidden", " unread"));
        button.appendChild(badge);
      }
      button.addEventListener("click", function () { openThread(c); });
      li.appendChild(button);
      return li;
    }

    function loadConversations() {
      var mine = ++listSeq;
      return api("GET", "/api/conversations").then(function (r) {
        if (mine !== listSeq) return;
        var items = (r && r.conversations) || [];
        conversationsList.textContent = "";
        items.forEach(function (c) { conversationsList.appendChild(conversationButton(c)); });
        emptyText.hidden = items.length > 0;
      }, function (e) { showError(panelError, e.message); });
    }

    function showList() {
      show("list");
      // Whatever was listed before stays until the fresh list arrives; an old empty state does not.
      emptyText.hidden = true;
      return loadConversations();
    }

    function showNew() {
      show("new");
      search.value = "";
      resultsBlock.hidden = true;
      recentBlock.hidden = false;
      search.focus();
      api("GET", "/api/recent-contacts").then(function (r) {
        var users = (r && r.users) || [];
        recentList.textContent = "";
        users.forEach(function (u) { recentList.appendChild(personButton(u, choosePerson)); });
        recentEmpty.hidden = users.length > 0;
      }, function (e) { showError(panelError, e.message); });
    }

    function runSearch() {
      var q = search.value.trim();
      var mine = ++searchSeq;
      if (!q) {
        resultsBlock.hidden = true;
        recentBlock.hidden = false;
        return;
      }
      api("GET", "/api/directory?q=" + encodeURIComponent(q)).then(function (r) {
        if (mine !== searchSeq) return;
        var users = (r && r.users) || [];
        resultsList.textContent = "";
        users.forEach(function (u) { resultsList.appendChild(personButton(u, choosePerson)); });
        resultsEmpty.hidden = users.length > 0;
        recentBlock.hidden = true;
        resultsBlock.hidden = false;
      }, function (e) { if (mine === searchSeq) showError(panelError, e.message); });
    }

    function choosePerson(user) {
      showError(panelError, "");
      var check = user.role === "client"
        ? api("GET", "/api/clients/" + encodeURIComponent(user.user_id) + "/secure-messaging")
        : Promise.resolve({ enabled: true });
      return check.then(function (s) {
        if (!s.enabled) {
          enabling = user;
          enableText.textContent = "Secure messaging is not enabled for " + user.display_name + ".";
          show("enable");
          return;
        }
        return startConversation(user);
      }).catch(function (e) { showError(panelError, e.message); });
    }

    function startConversation(user) {
      return api("POST", "/api/conversations", { participant_ids: [user.user_id] }).then(function (r) {
        return openThread(r.conversation);
      });
    }

    function openThread(c) {
      show("thread");
      threadTitle.textContent = c.title;
      return thread.open(c.conversation_id).then(function () {
        thread.textarea.focus();
        return thread.markRead();
      }).then(refreshUnread);
    }

    function threadOnScreen(conversationId) {
      return isOpen() && current === "thread" && thread.conversationId === conversationId;
    }

    toggle.addEventListener("click", function () { if (isOpen()) closePanel(); else openPanel(); });
    $("[data-action=close]", panel).addEventListener("click", function () { closePanel(); toggle.focus(); });
    $("[data-action=new-message]", panel).addEventListener("click", showNew);
    backButton.addEventListener("click", function () {
      if (current === "enable") showNew(); else showList();
    });
    $("[data-action=enable]", panel).addEventListener("click", function (e) {
      var user = enabling;
      if (!user) return;
      var button = e.currentTarget;
      button.disabled = true;
      api("POST", "/api/clients/" + encodeURIComponent(user.user_id) + "/secure-messaging").then(function (s) {
        if (!s.enabled) throw new ApiError(409, "Secure messaging could not be enabled. Please try again.");
        return startConversation(user);
      }).catch(function (err) { showError(panelError, err.message); }).then(function () { button.disabled = false; });
    });
    search.addEventListener("input", function () {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(runSearch, 150);
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && isOpen()) { closePanel(); toggle.focus(); }
    });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && isOpen() && current === "thread") {
        thread.loadNew().then(function () { return thread.markRead(); });
      }
    });

    function somethingChanged(data) {
      if (data && threadOnScreen(data.conversation_id)) {
        return thread.loadNew().then(function () { return thread.markRead(); }).then(refreshUnread);
      }
      if (isOpen() && current === "list") loadConversations();
      return refreshUnread();
    }

    liveUpdates({
      open: function () { somethingChanged(null); if (isOpen() && current === "thread") thread.loadNew(); },
      message_created: somethingChanged,
      read_updated: function () {
        if (isOpen() && current === "list") loadConversations();
        refreshUnread();
      },
      conversation_created: function () { if (isOpen() && current === "list") loadConversations(); },
    });
  }

  // ---------------------------------------------------------------- client portal

  function portal() {
    var conversationId = body.dataset.conversationId;
    var main = $("main.thread");
    localiseTimes(document);
    if (!conversationId || !main) {
      liveUpdates({ open: refreshUnread, message_created: refreshUnread, read_updated: refreshUnread });
      return;
    }
    var thread = new Thread(main, { onChange: refreshUnread });
    thread.adopt(conversationId);
    thread.markRead().then(refreshUnread);
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") thread.loadNew().then(function () { return thread.markRead(); });
    });
    function changed(data) {
      if (data && data.conversation_id === conversationId) {
        return thread.loadNew().then(function () { return thread.markRead(); }).then(refreshUnread);
      }
      return refreshUnread();
    }
    liveUpdates({
      open: function () { changed({ conversation_id: conversationId }); },
      message_created: changed,
      read_updated: refreshUnread,
    });
  }

  // ---------------------------------------------------------------- start

  if (pageKind === "staff") staffPanel();
  else if (pageKind === "portal") portal();
  else localiseTimes(document);
})();
