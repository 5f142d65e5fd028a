/* Confidant web edge, the messaging UI: a thread and its composer (Thread), a list of
 * conversations a page at a time (ConversationList), the staff's Secure Messages drawer
 * (staffPanel) and the Client Portal (portal). Uses window.Confidant from core.js.
 * Text from the server is always set with textContent, never as HTML. */
(function () {
  "use strict";

  var C = window.Confidant;
  var body = document.body;
  var $ = C.$, $$ = C.$$, el = C.el, api = C.api, showError = C.showError, refreshUnread = C.refreshUnread;
  var uuid = C.uuid, textLength = C.textLength, formatTime = C.formatTime, localiseTimes = C.localiseTimes;
  var formatCount = C.formatCount, ApiError = C.ApiError, Latest = C.Latest, liveUpdates = C.liveUpdates;
  var unreadBadge = C.unreadBadge, previewText = C.previewText;

  // ---------------------------------------------------------------- a thread and its composer

  // Delivery status lines: for at most this many of my latest messages, asked this long after a send.
  var DELIVERY_IDS = 50;
  var DELIVERY_DELAY_MS = 4000;
  var DELIVERY_AGAIN_MS = 15000;

  function Thread(root, options) {
    this.list = $("[data-role=messages]", root);
    this.form = $("[data-role=composer]", root);
    this.onChange = options.onChange || function () {};
    // Staff: a line under each of their messages to a client saying where its alert is.
    this.showDeliveries = !!options.deliveries;
    this.clientId = null;
    this.deliveryTimer = null;
    this.conversationId = null;
    this.lastSeq = 0;
    this.readSeq = 0;
    this.ids = {};
    this.pendingKey = null;
    this.sending = false;
    this.chain = Promise.resolve();
    if (!this.form) return; // read only: nobody can send here now
    this.textarea = $("textarea", this.form);
    this.counter = $("[data-role=counter]", this.form);
    this.limit = $("[data-role=limit]", this.form);
    this.error = $("[data-role=composer-error]", this.form);
    this.sendButton = $("button[type=submit]", this.form);
    this.maxLength = parseInt(this.textarea.dataset.maxLength, 10) || 5000;
    var self = this;
    this.textarea.addEventListener("input", function () { self.updateCounter(); });
    this.textarea.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); self.send(); }
    });
    this.form.addEventListener("submit", function (e) { e.preventDefault(); self.send(); });
    this.updateCounter();
  }

  // What the message box says about the limit: nothing, "reached", or "over" (then Send is refused).
  Thread.prototype.limitMessage = function (n) {
    var over = n - this.maxLength;
    if (over > 0) {
      return "This message is " + formatCount(over) + (over === 1 ? " character" : " characters") +
        " over the limit of " + formatCount(this.maxLength) + " characters. Shorten it to send.";
    }
    if (over === 0) return "You have reached the limit of " + formatCount(this.maxLength) + " characters.";
    return "";
  };

  Thread.prototype.updateCounter = function () {
    if (!this.textarea) return;
    var n = textLength(this.textarea.value);
    var over = n > this.maxLength;
    this.counter.textContent = n + " / " + this.maxLength;
    this.counter.classList.toggle("over", over);
    var note = this.limitMessage(n);
    if (this.limit && this.limit.textContent !== note) this.limit.textContent = note;
    if (this.limit) {
      this.limit.hidden = !note;
      this.limit.classList.toggle("over", over);
    }
    this.sendButton.disabled = this.sending || over;
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
    clearTimeout(this.deliveryTimer);
    this.conversationId = conversationId;
    this.lastSeq = 0;
    this.readSeq = 0;
    this.ids = {};
    this.pendingKey = null;
    this.list.textContent = "";
    if (this.textarea) {
      this.textarea.value = "";
      showError(this.error, "");
      this.updateCounter();
    }
    return this.loadNew();
  };

  Thread.prototype.close = function () {
    this.conversationId = null;
    clearTimeout(this.deliveryTimer);
  };

  // Where the alerts about my last messages are ("Email sent", "Bounced", ...). Each request is
  // audited by notify: asked when a thread opens and a few seconds after a send (once more later
  // if an alert was still queued), never polled. Resolves to whether some alert is still queued.
  Thread.prototype.refreshDeliveries = function (background) {
    var self = this;
    var cid = this.conversationId;
    if (!this.showDeliveries || !cid || !this.clientId) return Promise.resolve(false);
    var mine = $$("li.message.mine[data-message-id]", this.list).slice(-DELIVERY_IDS);
    if (!mine.length) return Promise.resolve(false);
    var ids = mine.map(function (li) { return li.dataset.messageId; }).join(",");
    var url = "/api/conversations/" + encodeURIComponent(cid) + "/deliveries?message_ids=" + encodeURIComponent(ids);
    return api("GET", url, undefined, background).then(function (r) {
      if (cid !== self.conversationId) return false;
      var status = (r && r.status) || {};
      var queued = false;
      mine.forEach(function (li) {
        var text = status[li.dataset.messageId] || "";
        var line = $("[data-role=delivery]", li);
        if (!text) { if (line) li.removeChild(line); return; }
        if (!line) {
          line = el("p", "delivery");
          line.dataset.role = "delivery";
          li.appendChild(line);
        }
        if (line.textContent !== text) line.textContent = text;
        if (/queued/i.test(text)) queued = true;
      });
      return queued;
    }, function () { return false; });
  };

  Thread.prototype.refreshDeliveriesSoon = function (later) {
    var self = this;
    if (!this.showDeliveries || !this.clientId) return;
    clearTimeout(this.deliveryTimer);
    this.deliveryTimer = setTimeout(function () {
      self.refreshDeliveries(true).then(function (queued) {
        if (queued && !later) self.refreshDeliveriesSoon(true);
      });
    }, later ? DELIVERY_AGAIN_MS : DELIVERY_DELAY_MS);
  };

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
    }).catch(function (e) { if (self.error) showError(self.error, e.message); });
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
    if (!this.textarea || !cid || this.sending) return;
    var text = this.textarea.value;
    if (!text.trim()) {
      showError(this.error, "Write a message first.");
      return;
    }
    if (textLength(text) > this.maxLength) {
      showError(this.error, this.limitMessage(textLength(text)));
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
        self.refreshDeliveriesSoon();
        return self.markRead();
      });
    }, function (e) {
      // A refused message was not stored: the next attempt is a new message.
      if (e.status >= 400 && e.status < 500) self.pendingKey = null;
      showError(self.error, e.message);
    }).then(function () {
      self.sending = false;
      self.updateCounter();
    });
  };

  // ---------------------------------------------------------------- a list of conversations, a page at a time

  // The conversations of one view (the inbox or the archived ones), newest activity first.
  function ConversationList(options) {
    this.list = options.list;
    this.empty = options.empty;
    this.more = options.more;
    this.archived = options.archived;
    this.onOpen = options.onOpen;
    this.onArchive = options.onArchive;
    this.onError = options.onError;
    this.token = "";
    this.seq = 0;
    var self = this;
    if (this.more) this.more.addEventListener("click", function () { self.load(false); });
  }

  ConversationList.prototype.item = function (c) {
    var li = el("li", "conversation");
    li.dataset.conversationId = c.conversation_id;
    var open = el("button", "person");
    open.type = "button";
    open.dataset.conversationId = c.conversation_id;
    var summary = el("span", "summary");
    summary.appendChild(el("span", "name", c.title));
    var preview = previewText(c);
    if (preview) summary.appendChild(el("span", "preview", preview));
    open.appendChild(summary);
    var side = el("span", "side");
    if (c.unread_count > 0) side.appendChild(unreadBadge(c.unread_count));
    if (c.last_activity_at) side.appendChild(el("span", "secondary", formatTime(c.last_activity_at)));
    open.appendChild(side);
    var self = this;
    open.addEventListener("click", function () { self.onOpen(c); });
    li.appendChild(open);
    if (this.onArchive) {
      var verb = this.archived ? "Unarchive" : "Archive";
      var action = el("button", "quiet archive", verb);
      action.type = "button";
      action.setAttribute("aria-label", verb + " conversation with " + c.title);
      action.addEventListener("click", function () { self.onArchive(c, !self.archived, li); });
      li.appendChild(action);
    }
    return li;
  };

  // reset: the first page again (after a change); otherwise the next page ("Load more").
  ConversationList.prototype.load = function (reset, background) {
    var self = this;
    var mine = ++this.seq;
    var url = "/api/conversations?archived=" + (this.archived ? "1" : "0");
    if (!reset && this.token) url += "&page_token=" + encodeURIComponent(this.token);
    if (this.more) this.more.disabled = true;
    return api("GET", url, undefined, background).then(function (r) {
      if (mine !== self.seq) return;
      var items = (r && r.conversations) || [];
      if (reset) self.list.textContent = "";
      items.forEach(function (c) {
        var old = $("li[data-conversation-id='" + c.conversation_id + "']", self.list);
        if (old) old.remove();
        self.list.appendChild(self.item(c));
      });
      self.token = (r && r.next_page_token) || "";
      self.more.hidden = !self.token;
      self.empty.hidden = self.list.children.length > 0;
    }, function (e) { if (mine === self.seq) self.onError(e.message); }).then(function () {
      if (self.more) self.more.disabled = false;
    });
  };

  ConversationList.prototype.clear = function () {
    this.seq += 1; // an answer still on its way is for a list no longer shown
    this.list.textContent = "";
    this.token = "";
    this.more.hidden = true;
  };

  ConversationList.prototype.remove = function (li) {
    if (li.parentNode) li.parentNode.removeChild(li);
    this.empty.hidden = this.list.children.length > 0;
  };

  // ---------------------------------------------------------------- staff: the Secure Messages panel

  function staffPanel() {
    var panel = document.getElementById("sm-panel");
    var toggle = document.getElementById("sm-toggle");
    if (!panel || !toggle) return;
    var views = {};
    $$("section[data-view]", panel).forEach(function (s) { views[s.dataset.view] = s; });
    var backButton = $("[data-action=back]", panel);
    var panelError = $("[data-role=panel-error]", panel);
    var search = $("[data-role=search]", panel);
    var recentBlock = $("[data-role=recent-block]", panel);
    var recentList = $("[data-role=recent]", panel);
    var recentEmpty = $("[data-role=recent-empty]", panel);
    var resultsBlock = $("[data-role=results-block]", panel);
    var resultsList = $("[data-role=results]", panel);
    var resultsEmpty = $("[data-role=results-empty]", panel);
    var enableText = $("[data-role=enable-text]", panel);
    var threadTitle = $("[data-role=thread-title]", panel);
    var cannotSend = $("[data-role=cannot-send]", panel);
    var cannotSendText = $("[data-role=cannot-send-text]", panel);
    var enableHere = $("[data-action=enable-here]", panel);
    var threadTools = $("[data-role=thread-tools]", panel);
    var clientInfo = $("[data-role=client-info]", panel);
    var disableHere = $("[data-action=disable-here]", panel);
    var current = null;
    var enabling = null;
    var openConversation = null;
    var searching = new Latest();
    var searchTimer = null;

    var thread = new Thread(views.thread, { onChange: refreshUnread, deliveries: true });

    function panelFailed(message) { showError(panelError, message); }

    var inbox = new ConversationList({
      list: $("[data-role=conversations]", panel), empty: $("[data-role=empty]", panel),
      more: $("[data-action=more]", panel), archived: false,
      onOpen: openThread, onArchive: setArchived, onError: panelFailed,
    });
    var archive = new ConversationList({
      list: $("[data-role=archived]", panel), empty: $("[data-role=archived-empty]", panel),
      more: $("[data-action=more-archived]", panel), archived: true,
      onOpen: openThread, onArchive: setArchived, onError: panelFailed,
    });

    function isOpen() { return !panel.hidden; }

    function show(view) {
      current = view;
      Object.keys(views).forEach(function (name) { views[name].hidden = name !== view; });
      backButton.hidden = view === "list";
      showError(panelError, "");
      if (view !== "thread") {
        thread.close();
        openConversation = null;
      } else {
        // Previews repeat message text: while a thread is open, no hidden copy of it stays in the page.
        inbox.clear();
        archive.clear();
      }
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
      openConversation = null;
      thread.close();
      refreshUnread();
    }

    function personButton(user, onChoose) {
      var li = el("li");
      var button = el("button", "person");
      button.type = "button";
      // Named by its visible name alone (no aria-label that would differ from what is seen); the
      // role is shown beside it and said as the button's description.
      button.appendChild(el("span", "name", user.display_name));
      var label = user.role_label || "";
      if (user.recent && label) label += " · recent";
      if (label) {
        var secondary = el("span", "secondary", label);
        secondary.setAttribute("aria-hidden", "true");
        button.appendChild(secondary);
        button.setAttribute("aria-description", label);
      }
      button.addEventListener("click", function () { onChoose(user); });
      li.appendChild(button);
      return li;
    }

    function showList() {
      show("list");
      // Whatever was listed before stays until the fresh list arrives; an old empty state does not.
      inbox.empty.hidden = true;
      return inbox.load(true);
    }

    function showArchived() {
      show("archived");
      archive.empty.hidden = true;
      return archive.load(true);
    }

    function setArchived(c, archived, li) {
      return api("POST", "/api/conversations/" + encodeURIComponent(c.conversation_id) + "/archive",
        { archived: archived }).then(function () {
        (archived ? inbox : archive).remove(li);
      }, function (e) { panelFailed(e.message); });
    }

    function showNew() {
      show("new");
      search.value = "";
      searching.next();
      resultsBlock.hidden = true;
      recentBlock.hidden = false;
      search.focus();
      api("GET", "/api/recent-contacts").then(function (r) {
        var users = (r && r.users) || [];
        recentList.textContent = "";
        users.forEach(function (u) { recentList.appendChild(personButton(u, choosePerson)); });
        recentEmpty.hidden = users.length > 0;
      }, function (e) { panelFailed(e.message); });
    }

    // Answers while the person types: each keystroke cancels the request before it.
    function runSearch() {
      var q = search.value.trim();
      var ticket = searching.next();
      if (!q) {
        resultsBlock.hidden = true;
        recentBlock.hidden = false;
        return;
      }
      api("GET", "/api/directory?q=" + encodeURIComponent(q), undefined, false, ticket.signal).then(function (r) {
        if (!searching.current(ticket)) return;
        var users = (r && r.users) || [];
        resultsList.textContent = "";
        users.forEach(function (u) { resultsList.appendChild(personButton(u, choosePerson)); });
        resultsEmpty.hidden = users.length > 0;
        recentBlock.hidden = true;
        resultsBlock.hidden = false;
      }, function (e) { if (searching.current(ticket)) panelFailed(e.message); });
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
      }).catch(function (e) { panelFailed(e.message); });
    }

    function startConversation(user) {
      return api("POST", "/api/conversations", { participant_ids: [user.user_id] }).then(function (r) {
        return openThread(r.conversation);
      });
    }

    function clientName(c) {
      var client = (c.participants || []).filter(function (p) { return p.user_id === c.client_id; })[0];
      return client ? client.display_name : "this client";
    }

    // A thread where nobody can send now: say why, and offer to enable a client right here.
    function showSendState(c) {
      var blocked = c.can_send === false;
      // A client's conversation links to their Client Info and can turn their messaging off here.
      threadTools.hidden = !c.client_id;
      if (c.client_id) clientInfo.href = "/clients/" + encodeURIComponent(c.client_id);
      disableHere.hidden = !(c.client_id && !blocked);
      thread.form.hidden = blocked;
      cannotSend.hidden = !blocked;
      enableHere.hidden = !(blocked && c.client_id);
      if (!blocked) return;
      cannotSendText.textContent = c.client_id
        ? "Secure messaging is not enabled for " + clientName(c) + ". Enable it to write to them."
        : "Team messaging is turned off for this practice.";
    }

    function openThread(c) {
      show("thread");
      openConversation = c;
      threadTitle.textContent = c.title;
      showSendState(c);
      thread.clientId = c.client_id || null;
      return thread.open(c.conversation_id).then(function () {
        if (!thread.form.hidden) thread.textarea.focus();
        thread.refreshDeliveries(false);
        return thread.markRead();
      }).then(refreshUnread);
    }

    function threadOnScreen(conversationId) {
      return isOpen() && current === "thread" && thread.conversationId === conversationId;
    }

    function refreshLists(background) {
      if (!isOpen()) return;
      if (current === "list") inbox.load(true, background);
      else if (current === "archived") archive.load(true, background);
    }

    toggle.addEventListener("click", function () { if (isOpen()) closePanel(); else openPanel(); });
    $("[data-action=close]", panel).addEventListener("click", function () { closePanel(); toggle.focus(); });
    $("[data-action=new-message]", panel).addEventListener("click", showNew);
    $("[data-action=archived]", panel).addEventListener("click", showArchived);
    backButton.addEventListener("click", function () {
      if (current === "enable") showNew(); else showList();
    });
    $("[data-action=enable]", panel).addEventListener("click", function (e) {
      var user = enabling;
      if (!user) return;
      var button = e.currentTarget;
      button.disabled = true;
      api("POST", "/api/clients/" + encodeURIComponent(user.user_id) + "/secure-messaging", { enabled: true })
        .then(function (s) {
          if (!s.enabled) throw new ApiError(409, "Secure messaging could not be enabled. Please try again.");
          return startConversation(user);
        }).catch(function (err) { panelFailed(err.message); }).then(function () { button.disabled = false; });
    });
    // Turn the open conversation's client on or off, then show what that means for sending.
    function switchClient(button, enabled) {
      var c = openConversation;
      if (!c || !c.client_id) return;
      button.disabled = true;
      showError(panelError, "");
      api("POST", "/api/clients/" + encodeURIComponent(c.client_id) + "/secure-messaging", { enabled: enabled })
        .then(function () {
          return api("GET", "/api/conversations/" + encodeURIComponent(c.conversation_id));
        }).then(function (r) {
          if (openConversation !== c) return;
          openConversation = r.conversation;
          showSendState(r.conversation);
          if (!thread.form.hidden) thread.textarea.focus();
        }).catch(function (err) { panelFailed(err.message); }).then(function () { button.disabled = false; });
    }
    enableHere.addEventListener("click", function () { switchClient(enableHere, true); });
    disableHere.addEventListener("click", function () { switchClient(disableHere, false); });
    search.addEventListener("input", function () {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(runSearch, 150);
    });
    // While open, Tab stays inside the drawer; Escape closes it and returns to the button.
    C.trapFocus(panel, function () { closePanel(); toggle.focus(); });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && isOpen() && current === "thread") {
        thread.loadNew().then(function () { return thread.markRead(); });
      }
    });

    function somethingChanged(data) {
      if (data && threadOnScreen(data.conversation_id)) {
        return thread.loadNew().then(function () { return thread.markRead(); }).then(refreshUnread);
      }
      // A new message also brings an archived conversation back (the server does that): list again.
      refreshLists(true);
      return refreshUnread();
    }

    // The staff email's link (/?conversation=<id>) opens that conversation.
    var linked = new URLSearchParams(window.location.search).get("conversation");
    if (linked) {
      openPanel();
      api("GET", "/api/conversations/" + encodeURIComponent(linked)).then(function (r) {
        return openThread(r.conversation);
      }).catch(function (e) { panelFailed(e.message); });
    }

    liveUpdates({
      open: function () { somethingChanged(null); if (isOpen() && current === "thread") thread.loadNew(); },
      message_created: somethingChanged,
      read_updated: function () { refreshLists(true); refreshUnread(); },
      conversation_created: function () { refreshLists(true); },
      // Archived or brought back in another tab or on another device.
      conversation_archived: function () { refreshLists(true); },
    });
  }

  // ---------------------------------------------------------------- client portal

  // The portal's list of conversations, kept live: new ones appear, unread counts move.
  function portalList(list, empty) {
    var seq = 0;
    function item(c) {
      var li = el("li");
      var a = el("a", "person");
      a.href = "/portal/conversations/" + encodeURIComponent(c.conversation_id);
      var summary = el("span", "summary");
      summary.appendChild(el("span", "name", c.title));
      var preview = previewText(c);
      if (preview) summary.appendChild(el("span", "preview", preview));
      a.appendChild(summary);
      if (c.unread_count > 0) a.appendChild(unreadBadge(c.unread_count));
      if (c.last_activity_at) a.appendChild(el("span", "secondary", formatTime(c.last_activity_at)));
      li.appendChild(a);
      return li;
    }
    return function reload() {
      var mine = ++seq;
      return api("GET", "/api/conversations", undefined, true).then(function (r) {
        if (mine !== seq) return;
        var items = (r && r.conversations) || [];
        list.textContent = "";
        items.forEach(function (c) { list.appendChild(item(c)); });
        empty.hidden = items.length > 0;
      }, function () {});
    };
  }

  function portal() {
    var conversationId = body.dataset.conversationId;
    var main = $("main.thread");
    localiseTimes(document);
    if (!conversationId || !main) {
      var list = $("[data-role=conversations]");
      var reload = list ? portalList(list, $("[data-role=empty]")) : function () { return Promise.resolve(); };
      var refreshAll = function () { refreshUnread(); reload(); };
      liveUpdates({
        open: refreshAll, message_created: refreshAll, read_updated: refreshAll, conversation_created: refreshAll,
        conversation_archived: refreshAll,
      });
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

  if (C.pageKind === "staff") staffPanel();
  else if (C.pageKind === "portal") portal();
})();
