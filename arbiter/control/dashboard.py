"""The dashboard: one static page (inline script and style, no external asset) over the JSON API.

It polls /v1/status every second, posts state changes with the CSRF token this module writes
into the page, and follows a program's stdout through the chunked follow stream. The page is
sent with a nonce-based Content-Security-Policy, so no script but its own ever runs in it.
Over TCP with a token, `/login?token=...` sets a session cookie derived from the token.
"""

from __future__ import annotations

import hmac
import secrets

from arbiter.control.backend import ControlError
from arbiter.control.connection import HttpConnection, Request
from arbiter.control.security import SESSION_COOKIE, Guard, session_value

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="csrf-token" content="@CSRF@">
<title>arbiter</title>
<style nonce="@NONCE@">
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.05em;margin:1.4em 0 .4em}
table{border-collapse:collapse;min-width:60%;background:#fff}
th,td{border-bottom:1px solid #ddd;padding:.3em .7em;text-align:left;font-variant-numeric:tabular-nums}
th{background:#eee} .RUNNING,.READY{color:#070} .STARTING,.BOOTING,.STOPPING,.BACKOFF,.DRAINING{color:#a60}
.FATAL,.EXITED,.UNKNOWN{color:#b00} .STOPPED,.RETIRING{color:#777}
button{margin-right:.3em} #msg{min-height:1.3em;color:#b00} #msg.ok{color:#070}
pre#log{background:#111;color:#ddd;padding:.7em;height:18em;overflow:auto;white-space:pre-wrap}
.bar>*{margin-right:.6em} input{width:4em}
</style></head><body>
<h1>arbiter</h1>
<div id="master" class="bar"></div>
<div class="bar">
 <button id="reload">Reload workers</button>
 <label>Scale <input id="spec" value="+1" aria-label="scale spec"></label><button id="scale">Apply</button>
</div>
<div id="msg" role="status"></div>
<h2>Workers</h2>
<table id="workers"><thead><tr><th>pid</th><th>state</th><th>generation</th><th>age</th>
<th>heartbeat</th><th>requests</th><th>connections</th><th>memory</th><th>cpu</th></tr></thead><tbody></tbody></table>
<h2>Programs</h2>
<table id="programs"><thead><tr><th>name</th><th>state</th><th>pid</th><th>uptime</th><th>memory</th>
<th>description</th><th></th></tr></thead><tbody></tbody></table>
<h2>Log <span id="logname"></span></h2>
<pre id="log"></pre>
<script nonce="@NONCE@">
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
let rssByPid = {}, following = null;
function dur(s){ s = Math.max(0, Math.floor(s||0)); const h = Math.floor(s/3600), m = Math.floor(s/60)%60;
  return h + ":" + String(m).padStart(2,"0") + ":" + String(s%60).padStart(2,"0"); }
function mem(b){ return b ? (b/1048576).toFixed(1) + " MiB" : ""; }
function spec(p){ return (p.group && p.group !== p.name) ? p.group + ":" + p.name : p.name; }
function cell(tr, text, cls){ const td = document.createElement("td"); td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls; tr.appendChild(td); return td; }
function say(text, ok){ $("msg").textContent = text; $("msg").className = ok ? "ok" : ""; }
async function post(path, body){
  try {
    const r = await fetch(path, {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body || {})});
    const j = await r.json().catch(() => ({}));
    if (!r.ok) say((j.error && (j.error.code + ": " + j.error.message)) || ("HTTP " + r.status), false);
    else say(path + ": done", true);
  } catch (e) { say(String(e), false); }
  refresh();
}
function button(td, label, action){ const b = document.createElement("button"); b.textContent = label;
  b.dataset.action = label; b.addEventListener("click", action); td.appendChild(b); }
function render(st){
  const m = st.master || {}, ws = st.workers || [], ready = ws.filter(w => w.state === "READY").length;
  $("master").textContent = "master pid " + m.pid + " · " + m.state + " · version " + m.version + " · up " + dur(m.uptime)
    + " · generation " + m.generation + " · workers " + ready + "/" + m.workers_target + " ready · reload: "
    + ((m.reload || {}).state || "none");
  const wb = $("workers").tBodies[0]; wb.replaceChildren();
  for (const w of ws) { const tr = document.createElement("tr"); tr.dataset.pid = w.pid;
    cell(tr, w.pid); cell(tr, w.state, w.state); cell(tr, w.generation); cell(tr, dur(w.age));
    cell(tr, (w.heartbeat_age || 0).toFixed(1) + " s"); cell(tr, w.requests); cell(tr, w.connections);
    cell(tr, mem(w.rss)); cell(tr, (w.cpu || 0).toFixed(2) + " s"); wb.appendChild(tr); }
  const pb = $("programs").tBodies[0]; pb.replaceChildren();
  for (const p of st.programs || []) { const name = spec(p), tr = document.createElement("tr");
    tr.dataset.program = name; cell(tr, name); cell(tr, p.state, "state " + p.state); cell(tr, p.pid || "");
    cell(tr, p.state === "RUNNING" ? dur(p.uptime) : ""); cell(tr, mem(p.rss)); cell(tr, p.description);
    const td = cell(tr, "");
    const u = "/v1/processes/" + encodeURIComponent(name) + "/";
    button(td, "start", () => post(u + "start", {wait: false}));
    button(td, "stop", () => post(u + "stop", {wait: false}));
    button(td, "restart", () => post(u + "restart", {wait: false}));
    button(td, "log", () => follow(name));
    pb.appendChild(tr); }
}
async function refresh(){
  try { const r = await fetch("/v1/status", {credentials: "same-origin"});
    if (r.ok) render(await r.json()); else say("status: HTTP " + r.status, false);
  } catch (e) { say("status: " + e, false); }
}
async function follow(name){
  if (following) following.abort();
  following = new AbortController(); const log = $("log"); log.textContent = ""; $("logname").textContent = name;
  try {
    const r = await fetch("/v1/logs/" + encodeURIComponent(name) + "/stdout?follow=1",
                          {signal: following.signal, credentials: "same-origin"});
    if (!r.ok) { const j = await r.json().catch(() => ({})); log.textContent = (j.error && j.error.message) || ("HTTP " + r.status); return; }
    const reader = r.body.getReader(), dec = new TextDecoder();
    for (;;) { const {value, done} = await reader.read(); if (done) break;
      log.textContent += dec.decode(value, {stream: true});
      if (log.textContent.length > 200000) log.textContent = log.textContent.slice(-100000);
      log.scrollTop = log.scrollHeight; }
  } catch (e) { if (e.name !== "AbortError") log.textContent += "\\n[" + e + "]"; }
}
$("reload").addEventListener("click", () => post("/v1/reload", {wait: false}));
$("scale").addEventListener("click", () => post("/v1/scale", {spec: $("spec").value}));
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""


class Dashboard:
    def __init__(self, csrf_token: str, guard: Guard) -> None:
        self._csrf, self._guard = csrf_token, guard

    def page(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        nonce = secrets.token_urlsafe(16)
        body = PAGE.replace("@CSRF@", self._csrf).replace("@NONCE@", nonce).encode()
        policy = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                  "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        conn.respond(200, body, "text/html; charset=utf-8", [("Content-Security-Policy", policy)])

    def login(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        """`/login?token=T`: trade the token for a session cookie, then go to the dashboard."""
        token = self._guard.token
        given = request.query.get("token", "")
        if token and not hmac.compare_digest(given.encode(), token.encode()):
            raise ControlError("UNAUTHORIZED", "wrong or missing token")
        headers = [("Location", "/")]
        secret = self._guard.credentials.session_secret
        if secret and (token or request.context.get("bearer")):
            headers.append(("Set-Cookie", f"{SESSION_COOKIE}={session_value(secret)}; HttpOnly; "
                                          "SameSite=Strict; Path=/"))
        conn.respond(303, b"", "text/plain", headers)
