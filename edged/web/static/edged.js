// edged's web page: live events over server-sent events, the actions through the admin API.
// No framework, no network beyond this gateway. Every write sends the session's CSRF token.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf"]').content;

  function banner(text, bad) {
    const el = document.getElementById("banner");
    el.textContent = text;
    el.className = "banner " + (bad ? "bad" : "ok");
    el.hidden = false;
    clearTimeout(banner.timer);
    banner.timer = setTimeout(function () { el.hidden = true; }, 5000);
  }

  async function post(url, body) {
    const reply = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await reply.json(); } catch (e) { /* not JSON */ }
    if (!reply.ok) {
      throw new Error(data.msg || ("HTTP " + reply.status));
    }
    return data;
  }

  function act(button, run, done) {
    const ask = button.dataset.confirm;
    if (ask && !window.confirm(ask)) { return; }
    button.disabled = true;
    run().then(function (data) { banner(done(data), false); })
      .catch(function (err) { banner(err.message, true); })
      .finally(function () { button.disabled = false; });
  }

  document.addEventListener("click", function (ev) {
    const b = ev.target.closest("button");
    if (!b) { return; }
    if (b.dataset.doorAction) {
      const door = b.dataset.doorName, action = b.dataset.doorAction;
      act(b, function () {
        return post("/api/v1/doors/" + encodeURIComponent(door) + "/" + action, {});
      }, function () { return "door " + door + ": " + action; });
    } else if (b.dataset.mode) {
      const on = b.dataset.on === "true";
      act(b, function () { return post("/api/v1/modes", { mode: b.dataset.mode, on: on }); },
        function () { setTimeout(function () { location.reload(); }, 300);
          return b.dataset.mode.replace("_", " ") + (on ? " on" : " off"); });
    } else if (b.dataset.resubscribe) {
      act(b, function () {
        return post("/api/v1/terminals/resubscribe", { name: b.dataset.resubscribe });
      }, function () { return "re-registering " + b.dataset.resubscribe; });
    }
  });

  // ----- the doors' and the site's state, pushed by the stream --------------------------------
  function pill(el, cls, text) {
    if (!el) { return; }
    el.className = el.className.replace(/\b(ok|warn|bad)\b/g, "").trim() + " " + cls;
    el.textContent = text;
  }

  function showState(state) {
    pill(document.getElementById("mode-lockdown"), state.lockdown ? "bad" : "ok",
      "lockdown " + (state.lockdown ? "ON" : "off"));
    pill(document.getElementById("mode-free"), state.free_access ? "warn" : "ok",
      "free access " + (state.free_access ? "ON" : "off"));
    document.body.classList.toggle("lockdown", !!state.lockdown);
    (state.doors || []).forEach(function (d) {
      const box = document.getElementById("door-" + d.name);
      if (!box) { return; }
      pill(box.querySelector(".lock"), d.locked ? "ok" : "warn", d.locked ? "locked" : "UNLOCKED");
      pill(box.querySelector(".contact"), d.contact === "open" ? "warn" : "ok", d.contact || "");
      const last = box.querySelector(".last");
      if (last && d.last_decision) {
        last.textContent = "last: " + d.last_decision.decision + " " +
          (d.last_decision.reason || "") + " " + (d.last_decision.person || "");
      }
    });
  }

  // ----- live events ----------------------------------------------------------------------------
  function cell(text, href) {
    const td = document.createElement("td");
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function addRecord(table, e) {
    const tr = document.createElement("tr");
    tr.className = "event fresh " + (e.decision || e.kind);
    tr.dataset.id = e.id;
    let what = e.kind + (e.decision ? " " + e.decision : "") + (e.reason ? " (" + e.reason + ")" : "");
    if (e.door_outcome && e.door_outcome.indexOf("refused") === 0) { what += ", door " + e.door_outcome; }
    tr.appendChild(cell(String(e.id), "/ui/events/" + e.id));
    tr.appendChild(cell((e.received_at || "").substring(11, 19)));
    tr.appendChild(cell(e.door || e.terminal || ""));
    tr.appendChild(e.person_id ? cell(e.name || e.person_id, "/ui/people/" + encodeURIComponent(e.person_id))
      : cell(e.name || "-"));
    const w = cell(what);
    w.className = "what";
    tr.appendChild(w);
    if (e.image) {
      const img = document.createElement("img");
      img.className = "thumb";
      img.alt = "";
      img.loading = "lazy";
      img.src = "/api/v1/events/" + e.id + "/snapshot";
      img.onerror = function () { img.remove(); };
      w.appendChild(img);
    }
    const body = table.tBodies[0];
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > 200) { body.deleteRow(body.rows.length - 1); }
  }

  const table = document.getElementById("events");
  const live = document.getElementById("live-state");
  const url = table ? table.dataset.stream : (document.getElementById("site") ? "/ui/stream" : null);
  if (url && window.EventSource) {
    const source = new EventSource(url);
    source.addEventListener("open", function () { if (live) { pill(live, "ok", "live"); } });
    source.addEventListener("error", function () { if (live) { pill(live, "warn", "reconnecting…"); } });
    source.addEventListener("state", function (m) { showState(JSON.parse(m.data)); });
    source.addEventListener("gap", function (m) {
      if (live) { pill(live, "warn", m.data + " events not shown: reload"); }
    });
    source.addEventListener("record", function (m) {
      if (table) { addRecord(table, JSON.parse(m.data)); }
    });
  }

  // ----- import: a chosen file into the form ---------------------------------------------------
  const file = document.getElementById("import-file");
  if (file) {
    file.addEventListener("change", function () {
      const f = file.files[0];
      if (!f) { return; }
      document.getElementById("import-format").value = /\.csv$/i.test(f.name) ? "csv" : "json";
      const reader = new FileReader();
      reader.onload = function () { document.getElementById("document").value = reader.result; };
      reader.readAsText(f);
    });
  }
}());
