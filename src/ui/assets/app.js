// The Activation / Licenses page (docs/ui.md): a client of licagent's
// local API through ./api/v1/ (the daemon's /ui/api/ or `licagent ui`).
// Plain JavaScript, no framework, nothing from the network but this box.
"use strict";

const $ = (id) => document.getElementById(id);
let me = null;        // GET whoami: who the page acts as
let status = null;    // the last Status
let events = null;    // the EventSource
let refetchTimer = 0;

// ---- The PBX key check, as src/license/key.rs does it ---------------------
// Keys are 25 symbols of Crockford's base32; the last is a check symbol
// (weighted sum mod 37, which may be one of * ~ $ = U). A typo is caught
// here and nothing is sent.
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CHECK_EXTRA = "*~$=U";
const SEPARATOR = /[\s\-\u2010-\u2015\u2212\uFE58\uFE63\uFF0D\u200B-\u200D\u2060\uFEFF\u00AD]/u;

function shownChar(ch) {
  const cp = ch.codePointAt(0);
  const hex = "U+" + cp.toString(16).toUpperCase().padStart(4, "0");
  if (cp >= 0x21 && cp <= 0x7e) return `'${ch}'`;
  if (/[\p{L}\p{N}]/u.test(ch)) return `'${ch}' (${hex})`;
  return `the invisible or look-alike character ${hex}`;
}

function symbolValue(ch) {
  let up = ch >= "a" && ch <= "z" ? ch.toUpperCase() : ch;
  if (up === "O") up = "0";
  if (up === "I" || up === "L") up = "1";
  const i = ALPHABET.indexOf(up);
  if (i >= 0 && up.length === 1) return i;
  const j = CHECK_EXTRA.indexOf(up);
  return j >= 0 && up.length === 1 ? 32 + j : null;
}

function symbolOf(v) { return v < 32 ? ALPHABET[v] : CHECK_EXTRA[v - 32]; }

// {key: canonical} or {error: message}: the same messages as the CLI.
function checkKey(input) {
  const symbols = [];
  let pos = 0;
  for (const ch of input) {
    pos += 1;
    if (SEPARATOR.test(ch)) continue;
    const v = symbolValue(ch);
    if (v === null) {
      return { error: `the PBX key contains ${shownChar(ch)} at position ${pos}, which no PBX key has (keys use digits and letters, and one of * ~ $ = only as the last character); copy it again from the portal` };
    }
    symbols.push([v, pos, ch]);
  }
  if (symbols.length === 0) return { error: "the PBX key is empty" };
  if (symbols.length !== 25) {
    return { error: `the PBX key has ${symbols.length} characters but needs 25 (5 groups of 5); check that it was copied whole` };
  }
  const bad = symbols.slice(0, 24).find(([v]) => v >= 32);
  if (bad) {
    return { error: `the PBX key contains ${shownChar(bad[2])} at position ${bad[1]}, which no PBX key has (keys use digits and letters, and one of * ~ $ = only as the last character); copy it again from the portal` };
  }
  let sum = 0;
  symbols.slice(0, 24).forEach(([v], i) => { sum += (i + 1) * v; });
  if (sum % 37 !== symbols[24][0]) {
    return { error: "the PBX key has a typo: its check character does not match (compare it with the portal; no request was sent)" };
  }
  return { key: symbols.slice(0, 24).map(([v]) => symbolOf(v)).join("") + symbolOf(sum % 37) };
}

function redacted(key) { return "#####-#####-#####-#####-" + key.slice(20); }
window.licagentKey = { check: checkKey, redacted };

// ---- Talking to the API -----------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body, contentType) {
  // X-Licagent-UI marks the page's own calls: a form on another site
  // cannot send it (docs/ui.md, CSRF).
  const opts = { method, headers: { "X-Licagent-UI": "1" }, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    opts.body = body;
    opts.headers["Content-Type"] = contentType || "application/json";
  }
  let r;
  try {
    r = await fetch("api/v1/" + path, opts);
  } catch (e) {
    throw new ApiError(0, "unreachable", "the page's server cannot be reached (is licagent ui or the PBX's web server running?)");
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const err = data && data.error ? data.error : {};
    throw new ApiError(r.status, err.code || "http_" + r.status, err.message || `the server answered ${r.status}`);
  }
  return data;
}

// Codes drive what the page does; messages are shown as they are.
function handleCommon(e) {
  if (e.code === "login_required") { showLogin(); return true; }
  if (e.code === "access_denied") { setReadOnly(e.message); return false; }
  if (["not_running", "agent_unreachable", "unreachable", "socket_denied"].includes(e.code)) {
    banner(e.message);
    return true;
  }
  return false;
}

function say(id, text, ok) {
  const el = $(id);
  el.textContent = text || "";
  el.className = "msg" + (text ? (ok ? " ok" : " err") : "");
}

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

// ---- Times ------------------------------------------------------------------

function relative(iso) {
  if (!iso) return "";
  const secs = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const a = Math.abs(secs);
  const [n, unit] = a < 90 ? [a, "second"] : a < 5400 ? [Math.round(a / 60), "minute"]
    : a < 129600 ? [Math.round(a / 3600), "hour"] : [Math.round(a / 86400), "day"];
  const words = `${n} ${unit}${n === 1 ? "" : "s"}`;
  return secs >= 0 ? `in ${words}` : `${words} ago`;
}

function when(el, iso, none) {
  if (!iso) { el.textContent = none || "—"; el.removeAttribute("title"); return; }
  el.textContent = `${relative(iso)} (${new Date(iso).toLocaleString()})`;
  el.title = iso;
}

// ---- Rendering ----------------------------------------------------------------

const STATE_WORDS = {
  unlicensed: "Unlicensed", active: "Active", grace: "Grace", expired: "Expired",
  revoked: "Revoked", trial: "Trial", test: "Test mode",
};
const KIND_WORDS = { full: "Full", trial: "Trial", base: "Profile", add_on: "Add-on", system: "System" };
const TERM_WORDS = { yearly: "yearly term", monthly: "monthly term", lifetime: "lifetime", perpetual: "perpetual" };
const REASON_WORDS = {
  no_profile: "no profile assigned", no_seat: "every seat is taken", not_in_license: "not in the license",
  missing_prerequisite: "a prerequisite is missing", missing_addon: "an add-on has no seat",
  box_unlicensed: "the box is unlicensed", expired: "the license expired", revoked: "the license was revoked",
};

// The next step an admin takes, and when.
function nextStep(s) {
  if (s.next && s.next.state) {
    // The ladder's next rung ({state, at, in_secs}), as the CLI says it.
    const to = STATE_WORDS[s.next.state] || s.next.state;
    return [`Next: ${to.toLowerCase()}`, s.next.at];
  }
  const l = s.license || {};
  const r = s.refresh || {};
  switch (s.state) {
    case "unlicensed": return ["Activate with the PBX key from the portal, or import a license file", null];
    case "grace": return ["The portal must be reached before the grace ends, or the license stops", l.grace_ends];
    case "expired": return ["Renew the license at the portal, then activate or refresh", null];
    case "revoked": return ["The portal revoked this license: contact the vendor", null];
    case "test": return ["Test mode ends", s.test_mode && s.test_mode.ends_at];
    case "trial": return ["The trial ends: activate a full license before", l.expires_at];
    default: return r.next_refresh ? ["Next portal contact", r.next_refresh] : ["Nothing to do", null];
  }
}

function renderStatus(s) {
  status = s;
  const l = s.license;
  const r = s.refresh || {};
  const st = $("state");
  st.textContent = STATE_WORDS[s.state] || s.state;
  st.className = "badge " + s.state;
  $("state-reason").textContent = s.reason || "";
  const [what, at] = nextStep(s);
  // "Next: grace in 3 days (date)", like `licagent status`; other steps read
  // "Test mode ends: in 2 hours (date)".
  const sep = what.startsWith("Next: ") ? " " : ": ";
  $("next").textContent = at ? `${what}${sep}${relative(at)} (${new Date(at).toLocaleString()})` : what;
  $("pbx-name").textContent = l ? l.pbx_name : "—";
  $("system-id").textContent = l ? l.system_id : "—";
  $("license-kind").textContent = l ? `${KIND_WORDS[l.kind] || l.kind}, ${TERM_WORDS[l.term] || l.term} (${l.license_id})` : "none installed";
  if (l) when($("expires"), l.expires_at, "never"); else when($("expires"), null);
  $("enforcement").textContent = l ? (l.enforcement === "hard" ? "hard (no seat, no user)" : "soft (users beyond the seats keep working, counted as over)") : "—";
  when($("last-refresh"), r.last_refresh, "never");
  when($("next-refresh"), r.next_refresh, "not planned");
  $("last-error").textContent = r.last_error ? `${r.last_error}${r.failures ? ` (${r.failures} failed in a row)` : ""}` : "none";
  $("last-error").className = r.last_error ? "err" : "";
  $("hwid").textContent = s.hardware_id;
  $("hw-match").textContent = l ? ({ match: "matches", partial: "partly (still valid; the next refresh re-binds)", mismatch: "does not match" }[l.hardware_match] || l.hardware_match)
    + (l.hardware_changed && l.hardware_changed.length ? `; changed: ${l.hardware_changed.join(", ")}` : "") : "—";
  const warnings = (s.hardware_warnings || []).slice();
  const ul = $("hw-warnings");
  ul.replaceChildren(...warnings.map((w) => { const li = document.createElement("li"); li.textContent = w; return li; }));
  const tm = s.test_mode;
  $("test-state").textContent = tm ? `On: ends ${relative(tm.ends_at)} (${new Date(tm.ends_at).toLocaleString()}).` : "Off.";
  $("test-start").hidden = !!tm;
  $("test-stop").hidden = !tm;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function renderSeats(rows) {
  const body = $("seats").tBodies[0];
  // The catalog lists every code; what was neither bought nor used is noise.
  const shown = rows.filter((r) => r.kind !== "system" && ((r.purchased || 0) > 0 || r.used > 0));
  const hidden = rows.filter((r) => r.kind !== "system").length - shown.length;
  body.replaceChildren(...shown.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.code = r.code;
    if (r.over > 0) tr.className = "over";
    cell(tr, `${r.name} (${r.code})`);
    cell(tr, r.free ? "Free" : KIND_WORDS[r.kind] || r.kind);
    cell(tr, r.free ? "free" : r.purchased, "n purchased");
    cell(tr, r.used, "n used");
    cell(tr, r.free ? "—" : r.available, "n available");
    cell(tr, r.over, "n over");
    return tr;
  }));
  $("seats-empty").hidden = shown.length > 0;
  $("seats-rest").hidden = hidden === 0 || shown.length === 0;
  $("seats-rest").textContent = `${hidden} more profiles and add-ons of the catalog are neither bought nor used.`;
  $("seats").hidden = shown.length === 0;
  return shown;
}

const LIST_LIMIT = 200;

function renderMissing(users, more) {
  const body = $("missing").tBodies[0];
  body.replaceChildren(...users.map((u) => {
    const tr = document.createElement("tr");
    tr.dataset.user = u.id;
    cell(tr, u.extension);
    cell(tr, u.name);
    cell(tr, u.profile ? u.profile.name : "none");
    cell(tr, u.missing.length ? u.missing.join(", ") : "—");
    const notes = [u.profile, ...u.addons].filter((g) => g && g.note).map((g) => g.note);
    cell(tr, (REASON_WORDS[u.reason] || u.reason || "") + (notes.length ? `: ${notes.join("; ")}` : ""));
    return tr;
  }));
  $("missing").hidden = users.length === 0;
  $("missing-none").hidden = users.length > 0;
  $("missing-more").hidden = !more;
  $("missing-more").textContent = more ? `More than ${LIST_LIMIT} users lack a license; \`licagent users list --unlicensed\` lists them all.` : "";
}

// Re-reads what the page shows: status, seats, users without a license.
async function refetch() {
  try {
    const [s, seats, unlicensed] = await Promise.all([
      api("GET", "status"), api("GET", "seats"), api("GET", `users?licensed=false&limit=${LIST_LIMIT + 1}`),
    ]);
    renderStatus(s);
    const shown = renderSeats(seats);
    // Users who work but miss an add-on: per add-on code that someone holds.
    let users = unlicensed.slice(0, LIST_LIMIT);
    let more = unlicensed.length > LIST_LIMIT;
    const addons = shown.filter((r) => r.kind === "add_on" && r.used > r.licensed);
    for (const a of addons) {
      const holders = await api("GET", `users?addon=${encodeURIComponent(a.code)}&licensed=true&limit=${LIST_LIMIT + 1}`);
      users = users.concat(holders.filter((u) => u.missing.includes(a.code)));
      more = more || holders.length > LIST_LIMIT;
    }
    const seen = new Set();
    users = users.filter((u) => !seen.has(u.id) && seen.add(u.id));
    renderMissing(users.slice(0, LIST_LIMIT), more || users.length > LIST_LIMIT);
    banner("");
  } catch (e) {
    if (!handleCommon(e)) banner(e.message);
  }
}

function scheduleRefetch() {
  clearTimeout(refetchTimer);
  // Events of one change come together: one re-read for all of them.
  refetchTimer = setTimeout(refetch, 100);
}

// ---- Live updates: GET events (Server-Sent Events) ----------------------------

const EVENT_KINDS = ["state", "license", "seats", "user", "user_removed", "over_use", "test_mode", "clock"];

function connectEvents() {
  if (events) events.close();
  events = new EventSource("api/v1/events");
  const live = $("live");
  events.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  events.addEventListener("snapshot", (ev) => {
    try {
      const d = JSON.parse(ev.data);
      if (d.status) renderStatus(d.status);
    } catch (e) { /* a bad frame: the re-read below shows the truth */ }
    scheduleRefetch();
  });
  for (const kind of EVENT_KINDS) events.addEventListener(kind, scheduleRefetch);
  events.onerror = () => {
    live.textContent = "reconnecting…";
    live.className = "live off";
    if (events.readyState === EventSource.CLOSED) {
      // Refused (logged out, daemon gone): find out why, then try again.
      setTimeout(start, 3000);
    }
  };
}

// ---- Rights -------------------------------------------------------------------

function setReadOnly(why) {
  for (const el of document.querySelectorAll(".change")) el.disabled = true;
  const who = me ? (me.user ? `${me.user} (uid ${me.uid})` : `uid ${me.uid}`) : "this page's server";
  const group = me && me.admin_group;
  const how = group
    ? `To change licenses here, add that user to the admin group ${group} (usermod -aG ${group} ${me && me.user ? me.user : "USER"}) and restart it, or use \`licagent ui\` or the CLI as an admin.`
    : "No admin group is configured (api.admin_group), so only root and the daemon's own user may change licenses.";
  $("readonly").textContent = `Read-only: this page acts as ${who}, which may read the licenses but not change them. ${how}` + (why ? ` (${why})` : "");
  $("readonly").hidden = false;
}

// ---- Actions ------------------------------------------------------------------

async function act(msgId, fn, okText) {
  say(msgId, "Working…", true);
  try {
    const s = await fn();
    if (s && s.state) renderStatus(s);
    say(msgId, typeof okText === "function" ? okText(s) : okText, true);
    scheduleRefetch();
    return s;
  } catch (e) {
    handleCommon(e);
    say(msgId, e.message, false);
    if (e.code === "bound_elsewhere") {
      say(msgId, `${e.message} — if this box replaces that one, use "Rehost onto this box" below.`, false);
    }
    scheduleRefetch();
    return null;
  }
}

// The key from the input, checked; the input is cleared once it is sent.
function takeKey(msgId) {
  const input = $("key");
  const checked = checkKey(input.value);
  if (checked.error) { say(msgId, checked.error, false); input.focus(); return null; }
  input.value = "";
  return checked.key;
}

function onActivate(ev) {
  ev.preventDefault();
  const key = takeKey("key-msg");
  if (!key) return;
  act("key-msg", () => api("POST", "activate", JSON.stringify({ key, rehost: false })),
    `Activated with key ${redacted(key)}.`).then((s) => {
    if (!s) say("key-msg", `Key ${redacted(key)}: ${$("key-msg").textContent}`, false);
  });
}

async function onRequestCode() {
  const key = takeKey("key-msg");
  if (!key) return;
  const ans = await act("key-msg", () => api("POST", "request-code", JSON.stringify({ key })),
    `Request code for key ${redacted(key)} below.`);
  if (ans && ans.request_code) {
    $("request-text").value = ans.request_code;
    $("request-box").hidden = false;
  }
}

async function onImport(ev) {
  ev.preventDefault();
  const f = $("file").files[0];
  if (!f) { say("file-msg", "Choose a license file first.", false); return; }
  const text = await f.text();
  await act("file-msg", () => api("POST", "license", text, "text/plain"), `Imported ${f.name}.`);
  $("file").value = "";
}

// Asks twice: the consequences first, then a typed word.
function confirmTwice(title, text, word) {
  const d = $("confirm");
  const step = (ask, typed) => new Promise((resolve) => {
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ask").textContent = ask;
    $("confirm-typed").hidden = !typed;
    $("confirm-typed").value = "";
    d.returnValue = "";
    d.onclose = () => resolve(d.returnValue === "ok" && (!typed || $("confirm-typed").value.trim().toUpperCase() === word));
    d.showModal();
    if (typed) $("confirm-typed").focus();
  });
  return step("Continue?", false).then((first) => first && step(`To confirm, type ${word} and press Continue.`, true));
}

async function onRehost() {
  const checked = checkKey($("key").value);
  if (checked.error) { say("move-msg", `Paste the PBX key in "Activate" first: ${checked.error}`, false); return; }
  const ok = await confirmTwice("Rehost onto this box",
    "The license moves from the box it is bound to onto this one. The old box loses it at its next portal contact and its users stop working there. The portal counts the move against its rehost limit.", "REHOST");
  if (!ok) { say("move-msg", "Rehost cancelled; nothing was sent.", false); return; }
  const key = takeKey("move-msg");
  if (key) act("move-msg", () => api("POST", "activate", JSON.stringify({ key, rehost: true })), `Rehosted with key ${redacted(key)}.`);
}

async function onDeactivate() {
  const name = status && status.license ? status.license.pbx_name : "this box";
  const ok = await confirmTwice("Deactivate this box",
    `${name} gives its license back to the portal and becomes unlicensed at once: every user stops working until a license is activated again. The key can then activate another box.`, "DEACTIVATE");
  if (!ok) { say("move-msg", "Deactivation cancelled; nothing was sent.", false); return; }
  act("move-msg", () => api("POST", "deactivate"), "Deactivated: the key can activate another box.");
}

// ---- Login (licagent ui only) and start ---------------------------------------------

function showLogin() {
  $("page").hidden = true;
  $("login").hidden = false;
  $("live").textContent = "not logged in";
  $("live").className = "live off";
  if (events) { events.close(); events = null; }
  $("login-code").focus();
}

async function onLogin(ev) {
  ev.preventDefault();
  const code = $("login-code").value;
  try {
    const r = await fetch("login", {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "X-Licagent-UI": "1", "Content-Type": "application/json" },
      body: JSON.stringify({ code }),
    });
    const d = await r.json().catch(() => ({}));
    if (!r.ok) { say("login-msg", d.error ? d.error.message : `the server answered ${r.status}`, false); return; }
    $("login-code").value = "";
    say("login-msg", "");
    start();
  } catch (e) {
    say("login-msg", "the page's server cannot be reached", false);
  }
}

async function start() {
  try {
    me = await api("GET", "whoami");
  } catch (e) {
    if (!handleCommon(e)) banner(e.message);
    if (e.code !== "login_required") setTimeout(start, 5000);
    return;
  }
  $("login").hidden = true;
  $("page").hidden = false;
  banner("");
  for (const el of document.querySelectorAll(".change")) el.disabled = !me.may_change;
  if (!me.may_change) setReadOnly(); else $("readonly").hidden = true;
  await refetch();
  connectEvents();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", onLogin);
  $("key-form").addEventListener("submit", onActivate);
  $("request-code").addEventListener("click", onRequestCode);
  $("request-copy").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("request-text").value));
  $("file-form").addEventListener("submit", onImport);
  $("test-start").addEventListener("click", () => act("test-msg", () => api("POST", "test-mode/start"), "Test mode is on."));
  $("test-stop").addEventListener("click", () => act("test-msg", () => api("POST", "test-mode/stop"), "Test mode is off."));
  $("rehost").addEventListener("click", onRehost);
  $("deactivate").addEventListener("click", onDeactivate);
  // Relative times ("in 3 hours") stay true without a reload.
  setInterval(() => { if (status) renderStatus(status); }, 30000);
  start();
});
