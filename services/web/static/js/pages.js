/* Confidant web edge, the staff pages other than messaging: the Clients list's search as you
 * type and "Load more". Uses window.Confidant from core.js. Text from the server is always set
 * with textContent, never as HTML. */
(function () {
  "use strict";

  var C = window.Confidant;
  var $ = C.$, el = C.el, api = C.api, Latest = C.Latest;

  // ---------------------------------------------------------------- staff: the Clients list

  // Search as you type and "Load more", over /api/clients; without the script the forms still work.
  function clientsPage() {
    var form = $("[data-role=client-search]");
    if (!form) return;
    var input = $("input[name=q]", form);
    var list = $("[data-role=clients]");
    var status = $("[data-role=client-status]");
    var moreForm = $("[data-role=client-more]");
    var token = $("input[name=page_token]", moreForm);
    var moreQuery = $("input[name=q]", moreForm);
    var latest = new Latest();
    var timer = null;
    $("[data-role=search-submit]", form).hidden = true;

    function row(c) {
      var li = el("li");
      var a = el("a", "person");
      a.href = "/clients/" + encodeURIComponent(c.user_id);
      var summary = el("span", "summary");
      summary.appendChild(el("span", "name", c.display_name));
      summary.appendChild(el("span", "secondary", c.email));
      a.appendChild(summary);
      li.appendChild(a);
      return li;
    }

    function load(reset) {
      var q = reset ? input.value.trim() : moreQuery.value;
      var url = "/api/clients?q=" + encodeURIComponent(q);
      if (!reset) url += "&page_token=" + encodeURIComponent(token.value);
      var ticket = latest.next();
      return api("GET", url, undefined, false, ticket.signal).then(function (r) {
        if (!latest.current(ticket)) return;
        if (reset) list.textContent = "";
        (r.clients || []).forEach(function (c) { list.appendChild(row(c)); });
        token.value = r.next_page_token || "";
        moreQuery.value = q;
        moreForm.hidden = !r.next_page_token;
        if (list.children.length) status.textContent = "";
        else status.textContent = q ? "No clients match \u201c" + q + "\u201d." : "No clients yet. Add one above.";
        if (reset && window.history && history.replaceState) {
          history.replaceState(null, "", q ? "/clients?q=" + encodeURIComponent(q) : "/clients");
        }
      }, function (e) { if (latest.current(ticket)) status.textContent = e.message; });
    }

    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { load(true); }, 150);
    });
    form.addEventListener("submit", function (e) { e.preventDefault(); clearTimeout(timer); load(true); });
    moreForm.addEventListener("submit", function (e) { e.preventDefault(); load(false); });
  }

  // ---------------------------------------------------------------- start

  if (C.pageKind === "staff") clientsPage();
})();
