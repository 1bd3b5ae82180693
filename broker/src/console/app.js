// The Switchyard console: plain JavaScript, no build step, no dependency. Every page reads
// and changes the server through its management API with the caller's bearer token (kept
// for the browser tab in sessionStorage), so the console can do exactly what the token may.
// The namespace is `?ns=` (default `default`); a page's filters are its query string.
"use strict";

const params = new URLSearchParams(location.search);
const ns = params.get("ns") || "default";
const main = document.getElementById("main");

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function dash(v) { return v === undefined || v === null || v === "" ? "–" : esc(v); }
function age(ms) {
  if (ms === undefined || ms === null) return "–";
  const s = Math.floor(ms / 1000);
  if (s < 120) return s + "s";
  if (s < 7200) return Math.floor(s / 60) + "m";
  if (s < 172800) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}
function link(path, query) {
  const q = new URLSearchParams(query || {});
  if (ns !== "default") q.set("ns", ns);
  const s = q.toString();
  return "/ui" + path + (s ? "?" + s : "");
}
function api(path) { return "/api/v1/namespaces/" + encodeURIComponent(ns) + path; }

class Unauthorized extends Error {}

async function call(path, options) {
  const headers = Object.assign({}, (options || {}).headers);
  const token = sessionStorage.getItem("switchyard-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  const init = Object.assign({}, options, { headers });
  if (init.json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.json);
    delete init.json;
  }
  const r = await fetch(path, init);
  if (r.status === 401) throw new Unauthorized();
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { detail: text }; }
  if (!r.ok) throw new Error((body && (body.detail || body.title)) || r.status + " " + r.statusText);
  return body;
}

function ready(item) {
  const c = ((item.status || {}).conditions || []).find((c) => c.type === "Ready") || {};
  return c;
}
function readyCell(item) {
  const c = ready(item);
  const ok = c.status === "True";
  return `<td class="${ok ? "true" : "false"}">${ok ? "Ready" : esc(c.reason || "Not ready")}</td>`;
}

// Shows why an action failed under `where`, or asks for a token.
function failed(err, where) {
  if (err instanceof Unauthorized) {
    tokenForm("This server needs a bearer token for that.");
    return;
  }
  const note = document.createElement("div");
  note.className = "notice error";
  note.textContent = err.message;
  where.appendChild(note);
}

function tokenForm(message) {
  main.innerHTML = `<h1>Sign in</h1><div class="card">
    <p>${esc(message)}</p>
    <form id="token-form"><label>Bearer token <input id="token" type="password" size="40" autocomplete="off"></label>
    <button class="primary" type="submit">Use token</button></form>
    <p class="muted">The token stays in this browser tab; every page calls the management API with it.</p></div>`;
  document.getElementById("token-form").onsubmit = (e) => {
    e.preventDefault();
    sessionStorage.setItem("switchyard-token", document.getElementById("token").value);
    location.reload();
  };
}

// ---- Overview -------------------------------------------------------------------------

async function overview() {
  const [brokers, triggers] = await Promise.all([call(api("/brokers")), call(api("/triggers"))]);
  const b = brokers.items.map((x) => {
    const s = x.status || {};
    const st = s.stored || {};
    return `<tr><td>${esc(x.metadata.name)}</td>${readyCell(x)}<td class="num">${dash(st.events)}</td>
      <td class="num">${dash(st.bytes)}</td><td class="num">${dash(s.triggers)}</td>
      <td class="num"><a href="${link("/deadletters/" + encodeURIComponent(x.metadata.name))}">${dash(s.deadLetters)}</a></td>
      <td class="muted">${dash((s.address || {}).url)}</td></tr>`;
  }).join("");
  const t = triggers.items.map((x) => {
    const s = x.status || {};
    const d = s.deliveries || {};
    const name = x.metadata.name;
    return `<tr data-trigger="${esc(name)}"><td><a href="${link("/triggers/" + encodeURIComponent(name))}">${esc(name)}</a></td>
      <td>${esc(x.spec.broker)}</td>${readyCell(x)}<td class="num">${dash(s.lag)}</td>
      <td class="num">${age(s.oldestUndeliveredAgeMs)}</td>
      <td class="num">${d.deliveredPerSecond === undefined ? "–" : esc(d.deliveredPerSecond) + "/s"}</td>
      <td class="num">${d.successRatio === undefined ? "–" : (d.successRatio * 100).toFixed(1) + "%"}</td>
      <td class="num"><a href="${link("/deadletters/" + encodeURIComponent(x.spec.broker), { trigger: name })}">${dash(s.deadLetters)}</a></td>
      <td class="muted" title="${esc((d.lastError || {}).error)}">${d.failing && d.lastError ? esc(d.lastError.error.slice(0, 60)) : ""}</td></tr>`;
  }).join("");
  main.innerHTML = `<h1>Overview <span class="muted">namespace ${esc(ns)}</span></h1>
    <h2>Brokers</h2><table id="brokers"><tr><th>Name</th><th>Ready</th><th class="num">Events</th><th class="num">Bytes</th>
      <th class="num">Triggers</th><th class="num">Dead letters</th><th>Address</th></tr>${b || '<tr><td colspan="7" class="muted">none</td></tr>'}</table>
    <h2>Triggers</h2><table id="triggers"><tr><th>Name</th><th>Broker</th><th>Ready</th><th class="num">Lag</th><th class="num">Oldest</th>
      <th class="num">Rate (5 min)</th><th class="num">Success</th><th class="num">Dead letters</th><th>Last error</th></tr>${t || '<tr><td colspan="9" class="muted">none</td></tr>'}</table>
    <p class="muted">Figures of the last five minutes, counted by this server. <a href="">Refresh</a></p>`;
}

// ---- A trigger ------------------------------------------------------------------------

async function trigger(name) {
  const t = await call(api("/triggers/" + encodeURIComponent(name)));
  const s = t.status || {};
  const d = s.deliveries || {};
  const conditions = (s.conditions || []).map((c) =>
    `<tr><td>${esc(c.type)}</td><td class="${c.status === "True" ? "true" : "false"}">${esc(c.status)}</td><td>${dash(c.reason)}</td><td>${dash(c.message)}</td></tr>`).join("");
  main.innerHTML = `<h1>Trigger ${esc(name)} <span class="muted">broker ${esc(t.spec.broker)}</span></h1>
    <div class="card" id="state"><dl class="facts">
      <dt>Paused</dt><dd id="paused">${s.paused ? "yes, since " + esc(s.pausedSince) + " by " + esc(s.pausedBy) : "no"}</dd>
      <dt>Subscriber</dt><dd>${dash(s.subscriberUri)}</dd>
      <dt>Lag</dt><dd>${dash(s.lag)} ${s.oldestUndeliveredAgeMs === undefined ? "" : "(oldest " + age(s.oldestUndeliveredAgeMs) + " ago)"}</dd>
      <dt>Last 5 minutes</dt><dd>${dash(d.attempts)} attempts, ${dash(d.delivered)} delivered, ${dash(d.failed)} failed</dd>
      <dt>Last error</dt><dd>${d.lastError ? esc(d.lastError.time) + " " + esc(d.lastError.error) : "–"}</dd>
      <dt>Dead letters</dt><dd><a href="${link("/deadletters/" + encodeURIComponent(t.spec.broker), { trigger: name })}">${dash(s.deadLetters)}</a></dd>
    </dl>
    <p>${s.paused
      ? '<button class="primary" id="resume">Resume</button> <span class="muted">It delivers what waited, in order.</span>'
      : '<button id="pause">Pause</button> <span class="muted">Routed events wait; nothing is attempted or dead-lettered until it is resumed.</span>'}</p></div>
    <h2>Conditions</h2><table><tr><th>Type</th><th>Status</th><th>Reason</th><th>Message</th></tr>${conditions}</table>
    <h2>Replay</h2><div class="card">
      <p class="muted">Deliver the broker's stored events in a range again, to this trigger only (its filter applies). Replayed events carry the extension <code>switchyardreplay</code>.</p>
      <form class="grid" id="replay-form">
        <label>From time (RFC 3339) <input name="fromTime" placeholder="2026-12-04T10:00:00Z"></label>
        <label>To time <input name="toTime"></label>
        <label>Rate (events/s) <input name="ratePerSecond" value="100"></label>
        <label>From offset <input name="fromOffset" placeholder="0"></label>
        <label>To offset <input name="toOffset"></label>
        <label>CESQL filter <input name="filter"></label>
        <div><button type="submit" id="preview">Preview</button></div>
      </form><div id="replay-out"></div></div>
    <h2>Spec</h2><pre>${esc(JSON.stringify(t.spec, null, 2))}</pre>`;
  const act = (what) => async () => {
    try {
      await call(api("/triggers/" + encodeURIComponent(name) + "/" + what), { method: "POST", json: {} });
      await trigger(name);
    } catch (err) {
      failed(err, document.getElementById("state"));
    }
  };
  const p = document.getElementById("pause");
  if (p) p.onclick = act("pause");
  const r = document.getElementById("resume");
  if (r) r.onclick = act("resume");
  document.getElementById("replay-form").onsubmit = (e) => { e.preventDefault(); replayPreview(name, e.target); };
}

function replayBody(form) {
  const body = {};
  for (const [k, v] of new FormData(form)) {
    if (v === "") continue;
    body[k] = ["fromOffset", "toOffset"].includes(k) ? Number(v) : k === "ratePerSecond" ? Number(v) : v;
  }
  return body;
}

async function replayPreview(name, form) {
  const out = document.getElementById("replay-out");
  const body = replayBody(form);
  const path = api("/triggers/" + encodeURIComponent(name) + "/replays");
  try {
    const p = await call(path, { method: "POST", json: Object.assign({ dryRun: true }, body) });
    out.innerHTML = `<div class="card confirm"><p id="replay-preview"><b>${esc(p.matched)}</b> events to replay (offsets ${esc(p.fromOffset)} to ${esc(p.toOffset)}, ${esc(p.scanned)} read).</p>
      ${p.matched > 0 ? '<button class="primary" id="replay-start">Start replay</button> <button id="replay-cancel-preview">Cancel</button>' : ""}</div>`;
    const go = document.getElementById("replay-start");
    if (go) go.onclick = async () => {
      try {
        const job = await call(path, { method: "POST", json: body });
        await follow(job.id, p.matched);
      } catch (err) {
        failed(err, out);
      }
    };
    const no = document.getElementById("replay-cancel-preview");
    if (no) no.onclick = () => { out.innerHTML = ""; };
  } catch (err) {
    if (err instanceof Unauthorized) throw err;
    out.innerHTML = `<div class="notice error">${esc(err.message)}</div>`;
  }
}

async function follow(id, total) {
  const out = document.getElementById("replay-out");
  for (;;) {
    const j = await call(api("/replays/" + encodeURIComponent(id)));
    out.innerHTML = `<div class="card" id="replay-job"><p>Replay ${esc(id)}: <b id="replay-state">${esc(j.state)}</b>, ${esc(j.sent)} of ${esc(total)} sent
      ${j.state === "running" ? '<button id="replay-stop">Cancel</button>' : ""}</p><progress max="${esc(total)}" value="${esc(j.sent)}"></progress></div>`;
    const stop = document.getElementById("replay-stop");
    if (stop) stop.onclick = () => call(api("/replays/" + encodeURIComponent(id)), { method: "DELETE" }).catch((err) => failed(err, out));
    if (!["running", "cancelling"].includes(j.state)) return;
    await new Promise((r) => setTimeout(r, 500));
  }
}

// ---- Dead letters ---------------------------------------------------------------------

async function deadLetters(broker) {
  // The list of brokers needs `resources:read`; without it, only this one is offered.
  let brokers = [broker];
  try {
    brokers = (await call(api("/brokers"))).items.map((b) => b.metadata.name);
  } catch (_) { /* keep this broker alone */ }
  const filters = ["trigger", "type", "source", "status"];
  const q = new URLSearchParams({ limit: "1000" });
  for (const f of filters) if (params.get(f)) q.set(f, params.get(f));
  const page = await call(api("/brokers/" + encodeURIComponent(broker) + "/deadletters?" + q));
  const reason = params.get("reason");
  const items = page.items.filter((d) => !reason || d.reason === reason);
  const groups = new Map();
  for (const d of page.items) {
    const k = d.trigger + "\u0000" + d.reason;
    groups.set(k, (groups.get(k) || 0) + 1);
  }
  const keep = (extra) => {
    const o = {};
    for (const f of filters.concat(["reason"])) if (params.get(f)) o[f] = params.get(f);
    return Object.assign(o, extra);
  };
  const g = [...groups].map(([k, n]) => {
    const [t, r] = k.split("\u0000");
    return `<tr><td>${esc(t)}</td><td>${esc(r)}</td><td class="num"><a href="${link("/deadletters/" + encodeURIComponent(broker), keep({ trigger: t, reason: r }))}">${n}</a></td></tr>`;
  }).join("");
  const rows = items.map((d) => `<tr data-id="${esc(d.id)}"><td><a href="${link("/deadletters/" + encodeURIComponent(broker) + "/" + encodeURIComponent(d.id))}">${esc(d.id)}</a></td>
    <td>${esc(d.time)}</td><td>${esc(d.trigger)}</td><td>${esc(d.type)}</td><td>${esc(d.source)}</td>
    <td class="num">${dash(d.status)}</td><td>${esc(d.reason)}</td><td class="num">${esc(d.attempts)}</td></tr>`).join("");
  const opt = (values, current) => values.map((v) => `<option ${v === current ? "selected" : ""}>${esc(v)}</option>`).join("");
  main.innerHTML = `<h1>Dead letters <span class="muted">broker ${esc(broker)}</span></h1>
    <form class="filters" method="get" id="filters">
      ${ns !== "default" ? `<input type="hidden" name="ns" value="${esc(ns)}">` : ""}
      <label>Broker <select id="broker">${opt(brokers, broker)}</select></label>
      <label>Trigger <input name="trigger" value="${esc(params.get("trigger") || "")}"></label>
      <label>Reason <select name="reason"><option value="">any</option>${opt(["retries exhausted", "not retryable", "trigger removed"], reason)}</select></label>
      <label>Type <input name="type" value="${esc(params.get("type") || "")}"></label>
      <label>Source <input name="source" value="${esc(params.get("source") || "")}"></label>
      <label>Status <input name="status" size="4" value="${esc(params.get("status") || "")}"></label>
      <button type="submit">Filter</button> <a href="${link("/deadletters/" + encodeURIComponent(broker))}">clear</a>
    </form>
    <h2>By trigger and reason</h2><table id="groups"><tr><th>Trigger</th><th>Reason</th><th class="num">Dead letters</th></tr>${g || '<tr><td colspan="3" class="muted">none</td></tr>'}</table>
    <h2>${items.length} dead letters${page.next ? " (the first 1000)" : ""}</h2>
    <table id="deadletters"><tr><th>Id</th><th>Time</th><th>Trigger</th><th>Type</th><th>Source</th><th class="num">Status</th><th>Reason</th><th class="num">Attempts</th></tr>${rows || '<tr><td colspan="8" class="muted">none</td></tr>'}</table>`;
  // The form's action follows the broker chosen: the filters stay in the URL.
  const form = document.getElementById("filters");
  const choose = () => { form.action = "/ui/deadletters/" + encodeURIComponent(document.getElementById("broker").value); };
  choose();
  document.getElementById("broker").onchange = choose;
}

async function deadLetter(broker, id) {
  const path = api("/brokers/" + encodeURIComponent(broker) + "/deadletters/" + encodeURIComponent(id));
  const d = await call(path);
  const attempts = d.attempts || [];
  const t0 = attempts.length ? Date.parse(attempts[0].time) : NaN;
  const items = attempts.map((a, i) => {
    const ok = a.status >= 200 && a.status < 300;
    const since = isNaN(t0) || !a.time ? "" : ` <span class="muted">+${((Date.parse(a.time) - t0) / 1000).toFixed(1)}s</span>`;
    return `<li class="${ok ? "ok" : ""}"><b>#${i + 1}</b> ${dash(a.time)}${since} — <b>${a.status ? esc(a.status) : esc(a.error || "no answer")}</b>
      <span class="muted">${esc(a.latencyMs)} ms</span>${a.body ? `<pre>${esc(a.body)}</pre>` : ""}</li>`;
  }).join("");
  main.innerHTML = `<h1>Dead letter ${esc(id)}</h1>
    <div class="card"><dl class="facts">
      <dt>Trigger</dt><dd><a href="${link("/triggers/" + encodeURIComponent(d.trigger))}">${esc(d.trigger)}</a></dd>
      <dt>Reason</dt><dd>${esc(d.reason)}</dd><dt>Last status</dt><dd>${dash(d.status)}</dd>
      <dt>Destination</dt><dd>${esc(d.destination)}</dd><dt>Dead-lettered</dt><dd>${esc(d.time)}</dd>
      <dt>Event</dt><dd>${esc(d.type)} from ${esc(d.source)}, id ${esc(d.eventId)}, offset ${esc(d.offset)}</dd>
    </dl><p><button class="primary" id="redrive">Redrive…</button></p><div id="redrive-out"></div></div>
    <h2>Attempts</h2><ol class="timeline" id="attempts">${items}</ol>
    <h2>Event</h2><pre id="event">${esc(JSON.stringify(d.event, null, 2))}</pre>`;
  document.getElementById("redrive").onclick = () => {
    const out = document.getElementById("redrive-out");
    out.innerHTML = `<div class="card confirm" id="redrive-preview"><p>This sends the event below <b>once more</b> to trigger
      <b>${esc(d.trigger)}</b>, which delivers it to <b>${esc(d.destination)}</b> with its retries; the dead letter is removed.</p>
      <pre>${esc(JSON.stringify(d.event, null, 2))}</pre>
      <button class="danger" id="redrive-confirm">Redrive</button> <button id="redrive-cancel">Cancel</button></div>`;
    document.getElementById("redrive-cancel").onclick = () => { out.innerHTML = ""; };
    document.getElementById("redrive-confirm").onclick = async () => {
      try {
        const r = await call(api("/brokers/" + encodeURIComponent(broker) + "/deadletters/redrive"), { method: "POST", json: { ids: [id] } });
        out.innerHTML = `<div class="notice ok" id="redriven">Redriven: ${esc(r.redriven)}. Trigger
          <a href="${link("/triggers/" + encodeURIComponent(d.trigger))}">${esc(d.trigger)}</a> delivers it now.</div>`;
        document.getElementById("redrive").disabled = true;
      } catch (err) {
        if (err instanceof Unauthorized) throw err;
        out.innerHTML = `<div class="notice error">${esc(err.message)}</div>`;
      }
    };
  };
}

// ---- Routing --------------------------------------------------------------------------

async function route() {
  document.getElementById("ns").value = ns;
  const parts = location.pathname.replace(/^\/ui\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts.length === 0) await overview();
    else if (parts[0] === "triggers" && parts.length === 2) await trigger(parts[1]);
    else if (parts[0] === "deadletters" && parts.length === 2) await deadLetters(parts[1]);
    else if (parts[0] === "deadletters" && parts.length === 3) await deadLetter(parts[1], parts[2]);
    else main.innerHTML = `<h1>Not found</h1><p><a href="${link("")}">Overview</a></p>`;
  } catch (err) {
    if (err instanceof Unauthorized) {
      tokenForm(sessionStorage.getItem("switchyard-token")
        ? "The token was refused. Another one?"
        : "This server needs a bearer token (an Identity's token or a JWT) for its management API.");
    } else {
      main.innerHTML = `<div class="notice error">${esc(err.message)}</div>`;
    }
  }
}

document.getElementById("who").textContent = sessionStorage.getItem("switchyard-token") ? "signed in with a token" : "";
route();
