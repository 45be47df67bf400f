// The fleet page: polls /api/v1 and renders with textContent only (node data is never HTML).
"use strict";
const $ = (s) => document.querySelector(s);
const RANK = { bad: 0, warn: 1, off: 2, ok: 3 };
let csrf = "", role = "", nodes = [], timer = null, logTimer = null, log = null;

function stateClass(state) {
  if (["RUNNING", "READY", "up"].includes(state)) return "ok";
  if (["STARTING", "STOPPING", "BOOTING", "DRAINING", "RETIRING", "BACKOFF"].includes(state)) return "warn";
  if (state === "STOPPED") return "off";
  return "bad";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function duration(s) {
  if (s === null || s === undefined) return "";
  s = Math.max(0, Math.floor(s));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}
const mem = (b) => (b ? (b / 1048576).toFixed(1) + " MiB" : "");
const cpu = (c) => (c || c === 0 ? c.toFixed(1) + "s" : "");
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });

function say(text, bad) {
  const m = $("#msg");
  m.textContent = text;
  m.className = "msg show" + (bad ? " bad" : "");
  clearTimeout(say.t);
  say.t = setTimeout(() => { m.className = "msg"; }, bad ? 8000 : 4000);
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") {
    opts.headers["X-CSRF-Token"] = csrf;
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (r.status === 401 && path !== "/api/v1/login") { showLogin(); throw new Error("log in first"); }
  if (!r.ok) throw new Error(data.error ? data.error.code + ": " + data.error.message : "HTTP " + r.status);
  return data;
}

function showLogin() {
  clearTimeout(timer);
  $("#login").hidden = false;
  $("#username").focus();
}

async function login(event) {
  event.preventDefault();
  $("#login-error").textContent = "";
  try {
    const s = await api("POST", "/api/v1/login", { username: $("#username").value, password: $("#password").value });
    $("#password").value = "";
    started(s);
  } catch (e) { $("#login-error").textContent = e.message.replace(/^[A-Z_]+: /, ""); }
}

function started(s) {
  csrf = s.csrf; role = s.role;
  $("#who").textContent = s.user + " (" + s.role + ")";
  $("#login").hidden = true;
  document.body.dataset.role = s.role;
  refresh();
}

async function act(label, method, path, body) {
  try {
    const r = await api(method, path, body);
    // Per-process results, one list per node for an environment; reload and scale answer an object.
    const results = (Array.isArray(r.result) ? r.result : []).flatMap((x) =>
      x.node === undefined ? [x] : x.error ? [{ status: x.error.code, description: x.node + ": " + x.error.message }] : x.result || []);
    const bad = results.filter((x) => x.status && x.status !== "OK");
    if (bad.length) say(label + ": " + bad.map((x) => x.description || x.status).join("; "), true);
    else say(label + (r.id ? ": started as deploy " + r.id + " (progress on the right)" : ": done"));
  } catch (e) { say(label + ": " + e.message, true); }
  refresh();
}

function button(action, label, handler, title) {
  return el("button", { "data-action": action, title: title || label, onclick: handler, text: label });
}

const canAct = () => role === "operator" || role === "admin";
const enc = encodeURIComponent;

function processActions(node, p, full) {
  if (p.kind !== "program") return el("td", { class: "actions" });
  if (!canAct()) return el("td", { class: "actions" }, button("log", "log", () => openLog(node.name, full)));
  const path = "/api/v1/nodes/" + enc(node.name) + "/processes/" + enc(full) + "/";
  return el("td", { class: "actions" },
    ...["start", "stop", "restart"].map((a) => button(a, a, () => act(a + " " + node.name + "/" + full, "POST", path + a))),
    button("log", "log", () => openLog(node.name, full)));
}

function nodeActions(node) {
  const td = el("td", { class: "actions" });
  if (!canAct() || node.state !== "up") return td;  // nothing to ask a node that does not answer
  const base = "/api/v1/nodes/" + enc(node.name) + "/";
  for (const a of ["start", "stop", "restart"])
    td.append(button(a, a, () => act(a + " all on " + node.name, "POST", base + a), a + " every program of " + node.name));
  if (node.kind === "arbiter") {
    td.append(button("reload", "reload", () => act("reload " + node.name, "POST", base + "reload", { wait: true }), "rolling reload of the web workers"));
    td.append(button("scale-down", "−", () => act("scale " + node.name, "POST", base + "scale", { spec: "-1" }), "one web worker less"));
    td.append(button("scale-up", "+", () => act("scale " + node.name, "POST", base + "scale", { spec: "+1" }), "one web worker more"));
  }
  return td;
}

function matches(node, p, words) {
  const hay = [node.environment, node.name, node.kind, node.state, p ? p.group + ":" + p.name : "", p ? p.state : ""].join(" ").toLowerCase();
  return words.every((w) => hay.includes(w));
}

// "pid 123, uptime 0:01:02" repeats the columns: only say what they do not.
function describe(p) {
  if (p.spawnerr) return p.spawnerr;
  const d = p.description || "";
  return /^pid \d+, uptime /.test(d) ? "" : d;
}

const plural = (n, one, many) => n + " " + (n === 1 ? one : many || one + "s");

function procRank(p) { return RANK[stateClass(p.state)]; }
function nodeRank(n) { return n.state !== "up" ? -1 : Math.min(3, ...n.processes.map(procRank)); }

function render() {
  const words = $("#filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const envWanted = $("#env-filter").value, failingOnly = $("#failing-only").checked;
  const envs = [...new Set(nodes.map((n) => n.environment))];
  const sel = $("#env-filter");
  if (sel.options.length !== envs.length + 1) {
    const keep = sel.value;
    sel.replaceChildren(el("option", { value: "", text: "All environments" }), ...envs.map((e) => el("option", { value: e, text: e })));
    sel.value = keep;
  }
  const down = nodes.filter((n) => n.state !== "up"), procs = nodes.flatMap((n) => n.processes);
  const badProcs = procs.filter((p) => stateClass(p.state) === "bad" || stateClass(p.state) === "warn");
  $("#summary").replaceChildren(
    el("span", { class: "chip " + (down.length ? "bad" : "ok"), text: (nodes.length - down.length) + "/" + nodes.length + " nodes up" }),
    el("span", { class: "chip " + (badProcs.length ? "bad" : "ok"), text: (procs.length - badProcs.length) + "/" + procs.length + " processes fine" }));
  const sections = [];
  const envOrder = envs.map((e) => [e, nodes.filter((n) => n.environment === e)])
    .sort((a, b) => Math.min(3, ...a[1].map(nodeRank)) - Math.min(3, ...b[1].map(nodeRank)));
  for (const [env, envNodes] of envOrder) {
    if (envWanted && env !== envWanted) continue;
    const tbody = el("tbody");
    for (const node of [...envNodes].sort((a, b) => nodeRank(a) - nodeRank(b) || a.name.localeCompare(b.name))) {
      const nodeHit = matches(node, null, words);
      let shown = node.processes.filter((p) => matches(node, p, words) || nodeHit);
      if (failingOnly) shown = shown.filter((p) => stateClass(p.state) !== "ok");
      if (!nodeHit && !shown.length) continue;
      if (failingOnly && node.state === "up" && !shown.length) continue;
      const stateText = node.state === "up" ? "up" : node.state.replace("_", " ");
      const since = node.since ? " since " + clock(node.since) + " (" + duration(Date.now() / 1000 - node.since) + ")" : "";
      tbody.append(el("tr", { class: "node" + (node.state !== "up" ? " down" : ""), "data-node": node.name },
        el("td", { class: "name" }, node.name, el("span", { class: "kind", text: node.kind + " · " + node.address })),
        el("td", {}, el("span", { class: "state s-" + stateClass(node.state), text: stateText })),
        el("td", { colspan: 5, class: node.error ? "err" : "muted", text: node.error ? node.error + since : plural(node.processes.length, "process", "processes") }),
        nodeActions(node)));
      shown.sort((a, b) => procRank(a) - procRank(b) || (a.group + a.name).localeCompare(b.group + b.name));
      const groups = {};
      for (const p of node.processes) if (p.kind === "program") groups[p.group] = (groups[p.group] || 0) + 1;
      const doneGroups = new Set();
      for (const p of shown) {
        const full = p.group && p.group !== p.name ? p.group + ":" + p.name : p.name;
        const grouped = groups[p.group] > 1;
        if (grouped && !doneGroups.has(p.group) && canAct()) {
          doneGroups.add(p.group);
          const gpath = "/api/v1/nodes/" + enc(node.name) + "/processes/" + enc(p.group + ":*") + "/";
          tbody.append(el("tr", { class: "group", "data-group": node.name + "/" + p.group },
            el("td", { class: "name", text: "group " + p.group }), el("td", { colspan: 6, class: "muted", text: plural(groups[p.group], "process", "processes") }),
            el("td", { class: "actions" }, ...["start", "stop", "restart"].map((a) =>
              button(a, a, () => act(a + " " + node.name + "/" + p.group + ":*", "POST", gpath + a))))));
        }
        const cls = stateClass(p.state);
        tbody.append(el("tr", { class: "proc" + (grouped ? " grouped" : "") + (cls === "bad" ? " bad" : ""), "data-process": node.name + "/" + full },
          el("td", { class: "name", text: p.kind === "worker" ? p.name + " (web)" : full }),
          el("td", { class: "state-cell" }, el("span", { class: "state s-" + cls, text: p.state })),
          el("td", { class: "num pid", text: p.pid || "" }),
          el("td", { class: "num", text: duration(p.uptime) }),
          el("td", { class: "num", text: mem(p.rss) }),
          el("td", { class: "num", text: cpu(p.cpu) }),
          el("td", { class: "desc", text: describe(p) }),
          processActions(node, p, full)));
      }
    }
    if (!tbody.children.length) continue;
    const attention = envNodes.some((n) => nodeRank(n) <= 0);
    const head = el("header", {}, el("h2", { text: env }), el("span", { class: "muted", text: plural(envNodes.length, "node") }), el("span", { class: "spacer" }));
    if (canAct()) {
      const base = "/api/v1/environments/" + enc(env) + "/";
      head.append(button("env-start", "start all", () => act("start " + env, "POST", base + "start"), "start every program in " + env));
      for (const a of ["stop", "restart"])
        head.append(button("env-" + a, a + " all", () => { if (confirm(a[0].toUpperCase() + a.slice(1) + " every program in " + env + "?")) act(a + " " + env, "POST", base + a); }, a + " every program in " + env));
      if (envNodes.some((n) => n.kind === "arbiter"))
        head.append(button("deploy", "rolling deploy", () => { if (confirm("Reload every Arbiter node of " + env + ", one at a time?")) act("deploy " + env, "POST", base + "reload", { batch: 1 }); }));
    }
    const table = el("table", {}, el("thead", {}, el("tr", {}, ...["Node / process", "State", "PID", "Uptime", "Memory", "CPU", "Description", ""].map((h) => el("th", { text: h, class: ["PID", "Uptime", "Memory", "CPU"].includes(h) ? "num" : null })))), tbody);
    sections.push(el("section", { class: "env" + (attention ? " attention" : ""), "data-env": env }, head, table));
  }
  $("#fleet").replaceChildren(...(sections.length ? sections : [el("p", { class: "muted", text: "Nothing matches the filter." })]));
}

function renderFeeds(activity, deploys) {
  $("#activity").replaceChildren(...activity.map((a) => el("li", { "data-id": a.id },
    el("span", { class: "when", text: clock(a.at) }), a.account + " " + a.action + " " + (a.node !== "-" ? a.node + " " : "") + (a.target !== "-" ? a.target + " " : ""),
    el("span", { class: a.result === "OK" || a.result === "started" ? "res-ok" : "res-bad", text: a.result }))));
  if (!deploys.length) { $("#deploys").replaceChildren(el("li", { class: "muted", text: "none yet" })); return; }
  $("#deploys").replaceChildren(...deploys.slice(0, 5).map((d) => el("li", { "data-deploy": d.id },
    el("span", { class: "when", text: clock(d.created) }), d.environment + " ",
    el("span", { class: d.state === "failed" || d.state === "interrupted" ? "res-bad" : "res-ok", text: d.state }),
    " " + d.nodes.map((n) => n.node + ":" + n.state).join(" "), d.error ? el("div", { class: "err", text: d.error }) : null)));
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [n, a, d] = await Promise.all([api("GET", "/api/v1/nodes"), api("GET", "/api/v1/activity?limit=40"), api("GET", "/api/v1/deploys")]);
    nodes = n.nodes;
    render();
    renderFeeds(a.activity, d.deploys);
    $("#updated").textContent = "updated " + clock(Date.now() / 1000);
  } catch (e) {
    if ($("#login").hidden) say("refresh failed: " + e.message, true);
  }
  if ($("#login").hidden) timer = setTimeout(refresh, 2000);
}

function openLog(node, name) {
  log = { node, name, offset: -16384 };
  $("#log").textContent = "";
  $("#log-title").textContent = node + " / " + name;
  $("#logview").hidden = false;
  pollLog();
}

async function pollLog() {
  clearTimeout(logTimer);
  if (!log) return;
  const current = log;
  try {
    const r = await api("GET", "/api/v1/nodes/" + enc(current.node) + "/logs/" + enc(current.name) + "?stream=" + $("#log-stream").value + "&offset=" + current.offset);
    if (current !== log) return;
    if (r.data) {
      const pre = $("#log"), atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(r.data);
      if (pre.textContent.length > 400000) pre.textContent = pre.textContent.slice(-200000);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
    current.offset = r.next_offset;
  } catch (e) { $("#log").append("\n[" + e.message + "]\n"); }
  logTimer = setTimeout(pollLog, 1000);
}

function closeLog() { log = null; clearTimeout(logTimer); $("#logview").hidden = true; }

document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", login);
  $("#filter").addEventListener("input", render);
  $("#env-filter").addEventListener("change", render);
  $("#failing-only").addEventListener("change", render);
  $("#log-close").addEventListener("click", closeLog);
  $("#log-stream").addEventListener("change", () => { if (log) openLog(log.node, log.name); });
  $("#logout").addEventListener("click", async () => { try { await api("POST", "/api/v1/logout"); } catch (e) { /* gone anyway */ } csrf = ""; showLogin(); });
  try { started(await api("GET", "/api/v1/session")); } catch (e) { showLogin(); }
});
