// medlb's web page: plain JavaScript, no framework, nothing loaded from outside.
// Every value from the server goes into the page through textContent, never as HTML.
"use strict";

const state = { me: null, services: [], history: {}, timer: null, source: null, refreshSoon: null,
                kernelFlows: {}, rulesOpen: {} };

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, message, problems, data) {
    super(message); this.status = status; this.problems = problems || []; this.data = data || {};
  }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.me && state.me.csrf) headers["X-CSRF-Token"] = state.me.csrf;
  if (method === "GET" && state.background) headers["X-Medlb-Background"] = "1";
  const response = await fetch(path, { method, headers, credentials: "same-origin",
                                       body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    if (response.status === 401 && path !== "/api/v1/login") showLogin("Your session has ended; log in again.", true);
    throw new ApiError(response.status, (data && data.error) || ("HTTP " + response.status), data && data.problems, data);
  }
  if (data && data.settled === false) {  // 202: stored and in force, but not every worker confirmed yet
    toast(`Not yet confirmed by worker ${data.workers_not_answered.join(", ")}: it takes the change when it runs again.`, true);
  }
  return data;
}

function toast(message, bad) {
  const item = el("div", { class: bad ? "bad" : "" }, message);
  $("toast").append(item);
  setTimeout(() => item.remove(), bad ? 10000 : 5000);
}

function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}
const fmtRate = (n) => fmtBytes(n || 0) + "/s";
const fmtTime = (at) => at ? new Date(at * 1000).toLocaleString() : "–";
const may = (role) => state.me && ["viewer", "operator", "admin"].indexOf(state.me.role) >= ["viewer", "operator", "admin"].indexOf(role);

// The status of a service in words (and a class for its colour): problems first.
function serviceStatus(s) {
  if (s.servers_up === 0 || s.active_pool === "none")
    return { rank: 0, cls: "bad", words: "DOWN: no server up" };
  if (s.active_pool === "backup")
    return { rank: 1, cls: "warn", words: "FAILED OVER: on backup" };
  if (s.servers_out > 0)  // halted, down or draining; an idle backup is not a problem
    return { rank: 2, cls: "warn", words: "DEGRADED: " + s.servers_out + " out of service" };
  return { rank: 3, cls: "ok", words: "OK" };
}

function poolWords(active) {
  return { primary: "primary", backup: "backup (secondary cluster)", none: "none: no server" }[active] || active;
}

// What the scheduler does with the server now, in the API's words.
function serverStatus(v) {
  const cls = { takes_work: "ok", standby: "idle", waiting_for_failback: "warn", draining: "warn" }[v.status] || "bad";
  return { cls, words: v.status_text };
}

// Servers taking work / all, with the ready but idle ones (backup, waiting for failback) apart.
function takingWork(s) {
  return `${s.servers_taking_work}/${s.servers_total}` + (s.servers_standby ? `, ${s.servers_standby} standby` : "");
}

function badge(cls, words) { return el("span", { class: "badge " + cls }, words); }

// Layer 4 services are forwarded by the kernel: medlb sees flows start (counters), not
// connections open, so "active" means nothing there.
const isL4 = (s) => s.mode === "l4-dr" || s.mode === "l4-nat";

function inFlight(s) {
  if (s.mllp) return s.mllp.in_flight + " msg in flight";
  if (isL4(s)) return "–";
  return String(s.active_connections);
}

// ---------------------------------------------------------------- charts (inline SVG)

// The smallest of 1, 2, 5 times a power of ten at or above the peak: round labels.
function niceCeil(peak) {
  if (!(peak > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(peak)));
  return [1, 2, 5, 10].map((m) => m * power).find((top) => top >= peak * (1 - 1e-9));
}

const fmtClock = (at) => new Date(at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

// A chart of the last hour: the line in SVG (stretched to the width), its axes in HTML
// so the labels keep their size: clock times below, values on the left from 0 to a
// round top.
function chart(points, key, opts) {
  const width = opts.big ? 600 : 120, height = opts.big ? 120 : 32, span = 3600;
  const format = opts.format || String;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "aria-hidden": "true",
                              class: (opts.big ? "big" : "spark") + (opts.bad ? " bad" : "") });
  const values = points.map((p) => p[key] === null || p[key] === undefined ? 0 : p[key]);
  const top = niceCeil(Math.max(0, ...values));
  const fractions = opts.big ? [1, 0.5, 0] : [1, 0];
  for (const f of fractions) {
    const y = (height - 1 - f * (height - 2)).toFixed(1);
    svg.append(svgEl("line", { class: "grid", x1: 0, x2: width, y1: y, y2: y, "vector-effect": "non-scaling-stroke" }));
  }
  const now = Date.now() / 1000;
  const coords = points.map((p, i) => {
    const x = Math.max(0, width - ((now - p.at) / span) * width);
    const y = height - 1 - (values[i] / top) * (height - 2);
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  if (coords.length === 1) coords.unshift("0," + coords[0].split(",")[1]);
  svg.append(svgEl("polyline", { points: coords.join(" "), "vector-effect": "non-scaling-stroke" }));
  // A label that reads the same as the top's or 0's (1 B/s halved) would say something false: left out.
  const labels = fractions.map((f) => format(top * f));
  const valueTicks = labels.map((text, i) => i > 0 && i < labels.length - 1 &&
    (text === labels[0] || text === labels[labels.length - 1]) ? "" : text);
  const timeTicks = (opts.big ? [60, 45, 30, 15, 0] : [60, 0]).map((minutes) => {
    const tick = el("span", { class: "tick" }, fmtClock(now - minutes * 60));
    tick.style.left = `${100 - (minutes / 60) * 100}%`;  // through the CSSOM: the page's CSP forbids style attributes
    return tick;
  });
  return el("div", { class: "chart-plot " + (opts.big ? "big" : "spark"), role: "figure", "aria-label": opts.label,
                     title: opts.label },
    el("div", { class: "value-axis" }, valueTicks.map((text) => el("span", { class: "tick" }, text))),
    svg,
    el("div", { class: "time-axis" }, timeTicks));
}

// ---------------------------------------------------------------- views

async function loadServices() {
  const [services, history, workers, ha] = await Promise.all([
    api("GET", "/api/v1/services"), api("GET", "/api/v1/history"), api("GET", "/api/v1/workers"),
    api("GET", "/api/v1/ha").catch((e) => (e.status === 404 ? null : Promise.reject(e)))]);
  state.services = services;
  state.history = history.services;
  state.workers = workers;
  state.ha = ha;
}

// "Pair: this node ACTIVE, lb-b PASSIVE, config in sync"; null for a lone medlb.
function pairLine() {
  const h = state.ha;
  if (!h) return null;
  const words = { MASTER: "ACTIVE", BACKUP: "PASSIVE", FAULT: "FAULT", STOP: "STOPPED", UNKNOWN: "UNKNOWN" };
  const peer = h.peer || {};
  const split = splitBrainText(h.split_brain);
  if (!peer.up) return `Pair: this node (${h.node}) ${words[h.role] || h.role}, ${peer.name} peer unreachable` +
    (peer.error ? ` (${peer.error})` : "") + "." + split;
  return `Pair: this node (${h.node}) ${words[h.role] || h.role}, ${peer.name} ${words[peer.role] || peer.role}, ` +
    (peer.config_in_sync ? "config in sync" : "config NOT in sync") +
    (!peer.config_in_sync && h.config && h.config.peer_behind ? ` (${h.config.peer_behind})` : "") +
    (peer.decisions_in_sync === undefined ? "" : peer.decisions_in_sync ? ", decisions in sync" : ", decisions NOT in sync") +
    (peer.cert_fingerprint ? `; peer certificate SHA-256 ${peer.cert_fingerprint}` : "") + "." + split;
}

// Red on the overview: the peer cannot be reached, or both nodes hold the VIPs (a split brain now).
function pairTrouble() {
  const peer = state.ha.peer || {};
  return !peer.up || (state.ha.role === "MASTER" && peer.role === "MASTER");
}

// The last split brain this node saw: when, for how long, and who kept the VIPs.
function splitBrainText(episode) {
  if (!episode) return "";
  const since = episode.start_known ? fmtTime(episode.start) : `${fmtTime(episode.start)} or earlier`;
  return ` Last split brain (both nodes active): ${since}, for ${episode.duration} s; this node ` +
    (episode.kept_vips ? "kept the VIPs." : "gave the VIPs up.");
}

function workersLine() {
  const w = state.workers;
  if (!w || !w.processes.length) return "Data plane: one process.";
  const down = w.processes.filter((p) => !p.alive).length;
  const restarts = w.processes.reduce((n, p) => n + p.restarts, 0);
  return `Data plane: ${w.workers} workers, ${down ? down + " not running" : "all running"}` +
    (restarts ? `, ${restarts} restarted since start (see the log: worker_exited).` : ".");
}

function renderOverview() {
  const rows = state.services.map((s) => ({ s, st: serviceStatus(s) }))
    .sort((a, b) => a.st.rank - b.st.rank || a.s.name.localeCompare(b.s.name));
  const table = el("table", { id: "services" },
    el("caption", { class: "muted", text: "Services with a problem come first." }),
    el("thead", {}, el("tr", {}, ["Status", "Service", "Mode", "Listen", "Active pool", "Servers taking work",
                                  "Active", "Throughput", "Last hour"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map(({ s, st }) => {
      const points = state.history[s.name] || [];
      const last = points.length ? points[points.length - 1] : {};
      return el("tr", { class: st.cls === "ok" ? "" : st.cls, "data-service": s.name },
        el("td", {}, badge(st.cls, st.words)),
        el("td", {}, el("a", { href: "#/service/" + encodeURIComponent(s.name) }, s.name)),
        el("td", {}, s.mode),
        el("td", { class: "wrap" }, s.listen.join(", ")),
        el("td", { "data-col": "pool" }, badge(s.active_pool === "primary" ? "ok" : s.active_pool === "backup" ? "warn" : "bad",
                                               poolWords(s.active_pool))),
        el("td", { "data-col": "up" }, takingWork(s)),
        el("td", {}, inFlight(s)),
        el("td", {}, s.mllp ? (last.msg_rate || 0).toFixed(1) + " msg/s" : fmtRate(last.bytes_rate)),
        el("td", {}, chart(points, s.mllp ? "msg_rate" : "active",
                           { label: `${s.name}: ${s.mllp ? "messages/s" : "active connections"}, last hour`,
                             format: s.mllp ? (n) => n.toFixed(1) : String, bad: st.cls === "bad" })));
    })));
  const counts = rows.reduce((c, r) => { c[r.st.cls] = (c[r.st.cls] || 0) + 1; return c; }, {});
  return [el("h1", {}, "Services"),
          el("p", { id: "overview-summary" },
             `${rows.length} services: ${counts.ok || 0} OK, ${counts.warn || 0} need attention, ${counts.bad || 0} down.`),
          el("p", { id: "workers-summary", class: "muted" }, workersLine()),
          ...(pairLine() ? [el("p", { id: "pair-summary", class: pairTrouble() ? "bad" : "" }, pairLine())] : []),
          el("div", { class: "table-wrap" }, table)];
}

function consequence(service, servers, action) {
  const names = servers.map((v) => v.name).join(" and ");
  if (isL4(service)) return kernelConsequence(service, names, action);
  const active = servers.reduce((n, v) => n + v.active_connections, 0);
  const unit = service.mode === "mllp" ? "connections" : service.mode === "dicom" ? "associations" : "connections";
  if (action === "online") return `${names} will take new ${unit} again (when their health checks pass).`;
  if (action === "drain") return `${names} will take no new ${unit}; ${active} are active and go on until they end.`;
  const closing = service.on_halt === "close" ? `; the ${active} active will be closed now` : `; ${active} are active and go on (on_halt: keep)`;
  return `${names} will take no new ${unit} at all${closing}.`;
}

// What the kernel does with established flows: conntrack keeps NAT's, pins keep DR's.
function kernelConsequence(service, names, action) {
  const kept = service.mode === "l4-nat" ? "conntrack keeps them" : "their pins keep them";
  if (action === "online") return `${names} will take new flows again (when their health checks pass).`;
  if (action === "drain") return `${names} will take no new flows; established flows go on (${kept}).`;
  const cut = service.mode === "l4-nat" ? "their conntrack entries are deleted" : "their pins are dropped";
  return `${names} will take no new flows at all` + (service.on_halt === "close"
    ? `; established flows are cut now (on_halt: close: ${cut}).` : `; established flows go on (on_halt: keep: ${kept}).`);
}

function poolConsequence(service, pool, tier, action) {
  const servers = service.servers.filter((v) => v.pool === pool && v.backup === (tier === "backup"));
  let text = consequence(service, servers, action);
  if (action === "halt" && tier === "primary") {
    const backups = service.servers.filter((v) => v.pool === pool && v.backup);
    const ready = backups.filter((v) => v.state === "online" && v.health === "up");
    text += backups.length === 0
      ? " This pool has no backup: the service will have NO server and clients will be refused."
      : ready.length === 0
        ? ` No backup server is up (${backups.map((v) => v.name).join(", ")}): clients will be refused.`
        : ` New work goes to the backup cluster: ${ready.map((v) => v.name).join(", ")}.`;
  }
  if (action === "online" && tier === "primary" && service.failback === "manual" && service.pools[pool].failed_over)
    text += " With failback: manual, traffic stays on the backup until you press Failback.";
  return text;
}

function confirmAction(title, text, okLabel, danger) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    $("confirm-ok").className = danger ? "danger" : "";
    dialog.returnValue = "cancel";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-ok").focus();
  });
}

async function act(title, text, okLabel, danger, method, path, body) {
  if (!(await confirmAction(title, text, okLabel, danger))) return;
  try {
    await api(method, path, body);
    toast(title + ": done");
  } catch (e) {
    toast(title + ": refused: " + e.message + (e.problems.length ? " — " + e.problems.join("; ") : ""), true);
  }
  refresh();
}

function serverButtons(service, v) {
  if (!may("operator")) return null;
  const path = `/api/v1/services/${encodeURIComponent(service.name)}/servers/${encodeURIComponent(v.name)}/state`;
  const buttons = [];
  for (const [action, cls] of [["online", "okay"], ["drain", "warn"], ["halt", "danger"]]) {
    if (v.state === action) continue;
    buttons.push(el("button", { type: "button", class: cls, "data-action": action, "data-server": v.name,
      "aria-label": `${action} ${v.name}`,
      onclick: () => act(`${action[0].toUpperCase() + action.slice(1)} ${v.name}`, consequence(service, [v], action),
                         `${action[0].toUpperCase() + action.slice(1)} ${v.name}`, action === "halt",
                         "POST", path, { state: action }) }, action[0].toUpperCase() + action.slice(1)));
  }
  return el("div", { class: "row-actions" }, buttons);
}

function poolButtons(service, poolName, pool) {
  if (!may("operator")) return null;
  const base = `/api/v1/services/${encodeURIComponent(service.name)}`;
  const buttons = [];
  const label = poolName === "default" ? "" : ` (${poolName})`;
  const tiers = [["primary", pool.servers]].concat(pool.backup.length ? [["backup", pool.backup]] : []);
  for (const [tier, names] of tiers) {
    const servers = service.servers.filter((v) => names.includes(v.name) && v.pool === poolName);
    if (servers.some((v) => v.state !== "halt")) {
      const title = tier === "primary" && pool.backup.length ? `Fail over to backup${label}` : `Halt ${tier} pool${label}`;
      buttons.push(el("button", { type: "button", class: tier === "primary" ? "danger" : "warn", "data-pool-action": `halt-${tier}`,
        onclick: () => act(title, poolConsequence(service, poolName, tier, "halt"), `Halt ${names.join(", ")}`, true,
                           "POST", `${base}/pools/${encodeURIComponent(poolName)}/state`, { state: "halt", tier }) }, title));
    }
    if (servers.some((v) => v.state !== "online")) {
      const title = `Online ${tier} pool${label}`;
      buttons.push(el("button", { type: "button", class: "okay", "data-pool-action": `online-${tier}`,
        onclick: () => act(title, poolConsequence(service, poolName, tier, "online"), `Online ${names.join(", ")}`, false,
                           "POST", `${base}/pools/${encodeURIComponent(poolName)}/state`, { state: "online", tier }) }, title));
    }
  }
  if (pool.failed_over) {
    buttons.push(el("button", { type: "button", class: "warn", "data-pool-action": "failback",
      onclick: () => act(`Fail back${label}`, "New work leaves the backup cluster and goes to the primary servers that are up.",
                         "Fail back", false, "POST", `${base}/failback`, { pool: poolName }) }, `Fail back${label}`));
  }
  return el("div", { class: "pool-actions" }, buttons);
}

// ---------------------------------------------------------------- the kernel (l4-dr, l4-nat)

// The kernel's view of a layer 4 service. Flows (DR: pins; NAT: conntrack entries) are
// counted when the page is opened and on request, not on every refresh: listing many
// pins takes seconds. Refreshes show the last count and when it was made.
async function loadKernel(name) {
  const known = state.kernelFlows[name];
  const count = !state.background || !known;
  try {
    const view = await api("GET", `/api/v1/services/${encodeURIComponent(name)}/l4` + (count ? "" : "?flows=false"));
    if (count) state.kernelFlows[name] = { at: Date.now() / 1000, by: Object.fromEntries(view.servers.map((v) => [v.name, v.flows])) };
    return { view };
  } catch (e) {
    if (e.status === 401) throw e;
    return { error: e.message };
  }
}

function kernelSection(service, loaded) {
  const nodes = [el("h2", {}, "Kernel forwarding")];
  if (loaded.error) {
    nodes.push(el("p", { class: "error", role: "alert", id: "kernel-error" }, "No kernel view: " + loaded.error));
    return nodes;
  }
  const view = loaded.view;
  const dr = view.mode === "l4-dr";
  const counted = state.kernelFlows[service.name];
  if (view.error) nodes.push(el("p", { class: "error", role: "alert", id: "kernel-error" },
    "Programming the kernel failed; it forwards as last programmed: " + view.error));
  nodes.push(el("p", { class: "muted", id: "kernel-summary" },
    `Table ${view.table}, chain ${view.chain}, interface ${view.interface}. A new flow goes to the server of its ` +
    `slot: jhash ${view.hash} mod ${view.table_size} seed ${view.seed} (Maglev). Programmed ${fmtTime(view.applied_at)}.`));
  const flowsWord = dr ? "pins: flows seen within l4.pin_timeout" : "conntrack entries";
  nodes.push(el("div", { class: "table-wrap" }, el("table", { id: "kernel" },
    el("thead", {}, el("tr", {}, ["Server", "Mark", dr ? "MAC" : "Target", "Takes new flows", "Forwarding",
      "Share of table", "Packets", "Bytes", "New flows", `Flows (${view.flows_counted_by})`]
      .map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, view.servers.map((v) => {
      const flows = counted ? counted.by[v.name] : null;
      return el("tr", { "data-kernel-server": v.name, class: v.forwarding ? "" : "bad" },
        el("th", { scope: "row" }, v.name, el("div", { class: "muted" }, v.address)),
        el("td", { "data-col": "mark" }, v.mark),
        el("td", { "data-col": "target" }, dr ? (v.mac || "unknown") : v.address + (v.port ? ":" + v.port : "")),
        el("td", { "data-col": "takes" }, v.takes_new_flows ? "yes" : "no"),
        el("td", { "data-col": "forwarding" }, v.forwarding ? "yes" : "no"),
        el("td", { "data-col": "share" }, (v.share * 100).toFixed(1) + "%"),
        el("td", { "data-col": "packets" }, String(v.packets)),
        el("td", { "data-col": "bytes", title: v.bytes + " bytes" }, fmtBytes(v.bytes)),
        el("td", { "data-col": "new-flows" }, String(v.new_flows)),
        el("td", { "data-col": "flows" }, flows === null || flows === undefined ? "–" : String(flows)));
    })))));
  nodes.push(el("p", { class: "toolbar" },
    el("span", { class: "muted", id: "kernel-flows-at" },
       `Flows (${flowsWord}) counted ${counted ? fmtTime(counted.at) : "not yet"}. ` +
       `New flows with no server to take them: ${view.no_server.packets || 0} packets dropped.`),
    el("button", { type: "button", class: "secondary", id: "kernel-recount",
                   onclick: () => { delete state.kernelFlows[service.name]; route(true); } }, "Count flows again")));
  const rules = el("details", { id: "kernel-rules", open: !!state.rulesOpen[service.name],
                                ontoggle: () => { state.rulesOpen[service.name] = rules.open; } },
    el("summary", {}, `Rules as medlb renders them (compare with nft list table ${view.table})`),
    el("pre", { id: "kernel-ruleset" }, view.ruleset));
  nodes.push(rules);
  return nodes;
}

function summary(service, kernel) {
  const items = isL4(service)
    ? [["Mode", service.mode], ["Interface", kernel.view ? kernel.view.interface : "–"],
       ["VIPs", service.listen.join(", ")], ["Active pool", poolWords(service.active_pool)],
       ["Servers taking work", takingWork(service)], ["Scheduler", service.scheduler],
       ["Health check", service.health_check], ["Failback", service.failback], ["On halt", service.on_halt],
       ["New flows", service.total_connections], ["Dropped (no server)", `${service.no_server} packets`]]
    : [["Mode", service.mode], ["Listen", service.listen.join(", ")], ["Active pool", poolWords(service.active_pool)],
       ["Servers taking work", takingWork(service)], ["Scheduler", service.scheduler],
       ["Health check", service.health_check], ["Failback", service.failback],
       ["Active connections", service.active_connections], ["Total connections", service.total_connections],
       ["Refused (no server)", service.no_server]].concat(service.mllp ? [["Messages", service.mllp.messages],
       ["In flight", service.mllp.in_flight], ["Queued", service.mllp.queued], ["Retries", service.mllp.retries]] : []);
  return el("dl", { class: "summary" }, items.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, String(v)))));
}

async function renderService(name) {
  const [service, events] = await Promise.all([
    api("GET", "/api/v1/services/" + encodeURIComponent(name)),
    api("GET", "/api/v1/events?limit=50&service=" + encodeURIComponent(name))]);
  const history = (await api("GET", "/api/v1/history?service=" + encodeURIComponent(name))).services[name] || [];
  const l4 = isL4(service);
  const kernel = l4 ? await loadKernel(name) : null;
  const st = serviceStatus(service);
  const nodes = [
    el("p", {}, el("a", { href: "#/" }, "← All services")),
    el("h1", {}, service.name, " ", badge(st.cls, st.words)),
    summary(service, kernel),
  ];
  for (const [poolName, pool] of Object.entries(service.pools)) {
    const servers = service.servers.filter((v) => v.pool === poolName);
    nodes.push(el("h2", {}, poolName === "default" ? "Servers" : `Pool ${poolName}`, " ",
                  badge(pool.active === "primary" ? "ok" : pool.active === "backup" ? "warn" : "bad",
                        "active: " + poolWords(pool.active))));
    nodes.push(poolButtons(service, poolName, pool));
    nodes.push(el("div", { class: "table-wrap" }, el("table", { class: "servers", "data-pool": poolName },
      el("thead", {}, el("tr", {}, ["Server", "Status", ...(may("operator") ? ["Actions"] : []), "State", "Health",
        "Tier", "Last check", "Latency", "Reason for last change", "Weight", ...(l4 ? ["New flows"] : ["Active", "Total"]),
        "Traffic"]
        .map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, servers.map((v) => {
        const ss = serverStatus(v);
        const check = v.last_check;
        return el("tr", { class: ss.cls === "ok" || ss.cls === "idle" ? "" : ss.cls, "data-server": v.name },
          el("th", { scope: "row" }, v.name, el("div", { class: "muted" }, v.address),
             v.ae_title ? el("div", { class: "muted", "data-col": "ae-title" }, "AE " + v.ae_title) : null),
          el("td", { "data-col": "status" }, badge(ss.cls, ss.words)),
          may("operator") ? el("td", {}, serverButtons(service, v)) : null,
          el("td", { "data-col": "state" }, v.state, v.state !== "online" ? el("div", { class: "muted" }, "by " + v.state_changed_by) : null),
          el("td", { "data-col": "health" }, v.health),
          el("td", {}, v.backup ? "backup" : "primary"),
          el("td", { class: "wrap" }, check ? (check.ok ? "passed" : "failed: " + check.reason) : "not yet"),
          el("td", {}, check ? (check.latency * 1000).toFixed(1) + " ms" : "–"),
          el("td", { class: "wrap", "data-col": "last-change" }, ...lastChange(v)),
          el("td", {}, String(v.weight)),
          l4 ? null : el("td", {}, String(v.active_connections)),
          el("td", {}, String(v.total_connections)),
          el("td", {}, fmtBytes(v.bytes_to_server + v.bytes_to_client)));
      })))));
  }
  if (l4) nodes.push(...kernelSection(service, kernel));
  nodes.push(...protocolFacts(service));
  const charts = l4
    ? [["conn_rate", "New flows per second", (n) => n.toFixed(1)],
       ["bytes_rate", service.mode === "l4-dr" ? "Throughput, clients to servers (replies bypass medlb)" : "Throughput",
        fmtRate]]
    : [["active", "Active connections", String], ["conn_rate", "New connections per second", (n) => n.toFixed(1)],
       ["bytes_rate", "Throughput", fmtRate]];
  if (service.mllp) charts.push(["msg_rate", "Messages per second", (n) => n.toFixed(1)],
                                ["in_flight", "Messages in flight", String],
                                ["ack_latency", "ACK latency", (n) => (n * 1000).toFixed(1) + " ms"]);
  nodes.push(el("h2", {}, "Last hour"));
  nodes.push(el("div", { class: "charts" }, charts.map(([key, title, format]) =>
    el("div", { class: "chart" }, el("h3", {}, title, " ",
      el("span", { class: "muted" }, history.length ? `now ${format(history[history.length - 1][key] || 0)}, ` +
         `peak ${format(Math.max(...history.map((p) => p[key] || 0)))}` : "no samples yet")),
      chart(history, key, { big: true, label: title + ", last hour", format })))));
  nodes.push(el("h2", {}, "Recent events"));
  nodes.push(eventsTable(events));
  return nodes;
}

// The last change of any kind (an operator's drain, a health check), in words; the
// check's reason before the first change.
function lastChange(v) {
  const last = v.last_change;
  return last ? [last.text, el("div", { class: "muted" }, fmtTime(last.at))]
              : [v.health_reason, el("div", { class: "muted" }, fmtTime(v.health_changed_at))];
}

// ---------------------------------------------------------------- protocol facts

function factsList(id, pairs) {
  return el("dl", { class: "summary", id }, pairs.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, String(v)))));
}

// Counts by reason (or code), the non-zero ones, largest first.
function countsTable(id, title, counts, what) {
  const rows = Object.entries(counts || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  return [el("h3", {}, title), rows.length
    ? el("div", { class: "table-wrap" }, el("table", { id, class: "counts" },
        el("thead", {}, el("tr", {}, [what, "Count"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows.map(([k, n]) => el("tr", {}, el("td", {}, k), el("td", {}, String(n)))))))
    : el("p", { class: "muted", id }, "None.")];
}

// The last failures the API keeps (newest first): codes, reasons and AE titles, no data.
function recentTable(id, title, headers, rows) {
  return [el("h3", {}, title), rows.length
    ? el("div", { class: "table-wrap" }, el("table", { id },
        el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", { class: "wrap" }, c)))))))
    : el("p", { class: "muted", id }, "None since medlb started.")];
}

function protocolFacts(service) {
  const nodes = [];
  const d = service.dicom, m = service.mllp, h = service.http;
  if (d) nodes.push(el("h2", {}, "DICOM"),
    factsList("dicom-facts", [["Service AE title", d.ae_title],
      ["Allowed calling AEs", d.allowed_calling_aes && d.allowed_calling_aes.length ? d.allowed_calling_aes.join(", ") : "any"],
      ["Associations", `${d.active_associations} active, ${d.total_associations} total`]]),
    ...countsTable("dicom-rejects", "Association rejects by reason", d.rejects, "Reason"),
    ...recentTable("dicom-last-rejects", "Last rejected associations", ["When", "Calling AE", "Called AE", "Reason"],
                   d.last_rejects.map((r) => [fmtTime(r.at), r.calling_ae || "–", r.called_ae || "–", r.reason])));
  if (m) {
    const naks = {};
    for (const [code, reasons] of Object.entries(m.negative_acks_by_code || {}))
      for (const [reason, n] of Object.entries(reasons)) naks[`${code}: ${reason}`] = n;
    nodes.push(el("h2", {}, "HL7"),
      ...countsTable("mllp-naks", "Negative ACKs medlb sent, by code and reason", naks, "Code: reason"),
      ...recentTable("mllp-last-failures", "Last negative ACKs", ["When", "Code", "Reason", "Server"],
                     m.last_failures.map((f) => [fmtTime(f.at), f.code, f.reason, f.server || "medlb"])));
  }
  if (h) nodes.push(el("h2", {}, "HTTP"),
    ...countsTable("http-classes", "Responses by status class", h.requests, "Status"),
    ...countsTable("http-errors", "medlb's own answers by reason", h.errors, "Reason"),
    ...recentTable("http-last-errors", "Last 502, 503 and 504 answers", ["When", "Status", "Reason", "Server"],
                   h.last_errors.map((e) => [fmtTime(e.at), String(e.status), e.reason, e.server || "–"])));
  return nodes;
}

function eventsTable(events) {
  if (!events.length) return el("p", { class: "muted" }, "No events yet.");
  return el("div", { class: "table-wrap" }, el("table", { id: "events" },
    el("thead", {}, el("tr", {}, ["When", "Service", "What happened", "Change", "Who"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, events.map((e) => el("tr", {},
      el("td", {}, fmtTime(e.at)), el("td", {}, e.service), el("td", { class: "wrap" }, e.text),
      el("td", { class: "muted" }, `${e.kind} of ${e.subject}: ${e.old} → ${e.new}`), el("td", {}, e.who))))));
}

function searchPage(title, kind, query) {
  const input = el("input", { type: "search", id: "search", "aria-label": "Search " + kind, value: query,
                              placeholder: "search: user, server, action…" });
  const csv = el("a", { class: "button", id: "export", href: `/api/v1/${kind}?format=csv&limit=10000&q=${encodeURIComponent(query)}`,
                        download: `medlb-${kind}.csv` }, "Export CSV");
  const form = el("form", { class: "toolbar", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = `#/${kind}?q=${encodeURIComponent(input.value)}`;
  } }, input, el("button", { type: "submit" }, "Search"), csv);
  return [el("h1", {}, title), form];
}

async function renderAudit(query) {
  const entries = await api("GET", "/api/v1/audit?limit=500&q=" + encodeURIComponent(query));
  const table = entries.length ? el("div", { class: "table-wrap" }, el("table", { id: "audit" },
    el("thead", {}, el("tr", {}, ["When", "Who", "Action", "Target", "Detail", "From"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, entries.map((e) => el("tr", {},
      el("td", {}, fmtTime(e.at)), el("td", {}, e.who), el("td", {}, e.action), el("td", {}, e.target),
      el("td", { class: "wrap", "data-col": "detail" }, e.text), el("td", {}, e.source))))))
    : el("p", { class: "muted" }, "No entries.");
  return [...searchPage("Audit log: who did what", "audit", query), table];
}

async function renderEvents(query) {
  const events = await api("GET", "/api/v1/events?limit=500&q=" + encodeURIComponent(query));
  return [...searchPage("Events: health and state changes", "events", query), eventsTable(events)];
}

// What `medlb check` advises about a file medlb accepts: shown, never a refusal.
function advisories(list) {
  return list && list.length ? el("div", { class: "advisories" },
    el("p", {}, badge("warn", "advisories"), " medlb runs with these:"),
    el("ul", { class: "advisories" }, list.map((a) => el("li", {}, a)))) : null;
}

// The config editor: the file on disk as written (secrets masked by the server, which
// never sends them), line numbers in a gutter, and the check's problems at their lines:
// the line's number marked and the message written after the line itself, on a layer
// under the transparent textarea that holds the same text in the same font.
function configEditor(initial) {
  const gutter = el("pre", { class: "gutter", id: "config-gutter", "aria-hidden": "true" });
  const marks = el("pre", { class: "marks", id: "config-marks", "aria-hidden": "true" });
  const text = el("textarea", { id: "config-text", spellcheck: "false", wrap: "off", autocomplete: "off",
                                "aria-describedby": "config-help config-result" });
  text.value = initial;
  let problems = [];
  function draw() {
    const lines = text.value.split("\n");
    const at = {};
    for (const p of problems) if (p.line) (at[p.line] = at[p.line] || []).push(p.message);
    gutter.replaceChildren(...lines.map((_, i) => el("div", at[i + 1]
      ? { class: "problem", "data-line": i + 1, title: at[i + 1].join("; ") } : { "data-line": i + 1 }, String(i + 1))));
    marks.replaceChildren(...lines.map((line, i) => el("div", at[i + 1] ? { class: "problem", "data-line": i + 1 } : {},
      line || " ", at[i + 1] ? el("span", { class: "inline-problem" }, "   ◀ " + at[i + 1].join("; ")) : null)));
    follow();
  }
  function follow() {
    gutter.scrollTop = marks.scrollTop = text.scrollTop;
    marks.scrollLeft = text.scrollLeft;
  }
  text.addEventListener("input", draw);
  text.addEventListener("scroll", follow);
  const editor = el("div", { class: "editor" }, gutter, el("div", { class: "area" }, marks, text));
  draw();
  return {
    node: editor, text,
    set(value) { text.value = value; draw(); },
    place(found) { problems = found || []; draw(); },
    // Put the cursor on a line and bring it into view.
    go(line) {
      const lines = text.value.split("\n");
      const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
      text.focus();
      text.setSelectionRange(start, start + (lines[line - 1] || "").length);
      const height = text.scrollHeight / Math.max(lines.length, 1);
      text.scrollTop = Math.max(0, (line - 3) * height);
      follow();
    },
  };
}

// A unified diff, each line coloured by what it does.
function diffView(diff) {
  if (!diff) return el("p", { class: "muted", id: "config-diff" }, "No change: Apply would write the file as it is on disk.");
  return el("pre", { id: "config-diff", class: "diff" }, diff.split("\n").map((line, i) =>
    el("span", { class: i < 2 || line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "" },
       line)));
}

function problemList(problems, editor) {
  return el("ul", { class: "problems", id: "config-problems" }, problems.map((p) => el("li", { "data-line": p.line || "" },
    p.line ? el("button", { type: "button", class: "secondary line", onclick: () => editor.go(p.line) }, `Line ${p.line}`)
           : "The file as a whole",
    ` ${p.path ? p.path + ": " : ""}${p.message}`)));
}

async function renderConfig() {
  const running = await api("GET", "/api/v1/config");
  const editor = configEditor(running.text);
  const text = editor.text;
  const result = el("div", { id: "config-result", role: "status" });
  const untold = () => el("p", { class: "muted" }, "Check shows what Apply would change.");
  const changes = el("div", { id: "config-changes" }, untold());
  const file = el("input", { type: "file", id: "config-file", accept: ".yaml,.yml,text/yaml,text/plain",
    "aria-label": "Upload a config file",
    onchange: async () => {
      if (file.files[0]) { editor.set(await file.files[0].text()); editor.place([]); result.replaceChildren(); changes.replaceChildren(untold()); }
    } });
  function show(answer) {
    editor.place(answer.problems_at);
    result.replaceChildren(answer.valid
      ? el("div", {}, el("p", {}, badge("ok", "valid"), ` ${answer.services.length} service(s): ${answer.services.join(", ")}`),
           advisories(answer.advisories))
      : el("div", {}, el("p", {}, badge("bad", "invalid"), ` ${answer.problems_at.length} problem(s), marked at their lines:`),
           problemList(answer.problems_at, editor)));
    if (answer.diff !== undefined) changes.replaceChildren(diffView(answer.diff));
  }
  const check = () => api("POST", "/api/v1/config/validate", { text: text.value });
  const refused = (e) => ({ valid: false, problems_at: [e.message, ...e.problems].map((m) => ({ line: null, path: "", message: m })) });
  const validate = el("button", { type: "button", id: "config-validate", onclick: async () => {
    try { show(await check()); }
    catch (e) { toast(e.message, true); }
  } }, "Check");
  const apply = el("button", { type: "button", id: "config-apply", class: "danger", onclick: async () => {
    const answer = await check().catch(refused);
    show(answer);
    if (!answer.valid) return;
    const changed = (answer.diff || "").split("\n").filter((l) => /^[+-](?![+-]{2} )/.test(l)).length;
    if (!(await confirmAction("Apply this config", `The config file ${running.path} is replaced and reloaded ` +
        `(${changed ? changed + " line(s) changed: see the changes below" : "no line changed"}); ` +
        `services: ${answer.services.join(", ")}. Established connections stay.`, "Apply and reload", true))) return;
    try {
      const applied = await api("POST", "/api/v1/config/apply", { text: text.value });
      toast("Config applied and reloaded" + (applied.advisories.length ? `, with ${applied.advisories.length} advisory(ies): see below` : "") +
            (applied.peer ? `; ${applied.peer}` : ""));  // the pair's other node: took it too, or is away
      route();
    }
    catch (e) { show(e.data.problems_at ? { valid: false, problems_at: e.data.problems_at } : refused(e)); }
  } }, "Apply (reload)");
  const reset = el("button", { type: "button", id: "config-reset", class: "secondary", onclick: () => {
    editor.set(running.text); editor.place(running.problems_at); result.replaceChildren(); changes.replaceChildren(untold());
  } }, "Back to the file on disk");
  const reload = el("button", { type: "button", id: "reload", class: "secondary", onclick: () =>
    act("Reload the config", `medlb re-reads ${running.path}; an invalid file is refused and nothing changes.`,
        "Reload", false, "POST", "/api/v1/reload") }, "Reload the file on disk");
  const onDisk = running.disk_is_running
    ? [badge("ok", "running"), " medlb runs this file as it is."]
    : [badge("warn", "not running"), " The file on disk has changed since medlb last loaded it: what runs is the " +
       "file as it was then. Check it, then reload or apply."];
  if (running.problems_at.length) show({ valid: false, problems_at: running.problems_at });
  return [el("h1", {}, "Configuration"),
          el("p", { id: "config-on-disk" }, "The config file ", el("code", {}, running.path), ", as written on disk. ", ...onDisk),
          advisories(running.advisories),
          el("h2", {}, "Edit, check and apply"),
          el("p", { class: "muted", id: "config-help" }, "Tokens and password hashes show as \"********\": medlb never sends " +
             "them to the browser. Leave a mask where it stands and Apply keeps that secret as it is on disk; write over it " +
             "to change the secret. Check shows each problem at its line and what Apply would change."),
          el("div", { class: "toolbar" }, file, validate, apply, reset, reload),
          el("label", { for: "config-text", class: "editor-label" }, "Config file (YAML), with line numbers"),
          editor.node, result,
          el("h2", {}, "Changes Apply would make to the file on disk"), changes];
}

// ---------------------------------------------------------------- routing, login, live updates

function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?");
  const query = new URLSearchParams(search || "").get("q") || "";
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "overview", arg: parts[1], query };
}

let rendering = false;
// A navigation that arrives while a page is rendering (a click during a live refresh)
// is run once the render ends, never dropped; it keeps focus only if every caller did.
let routeAgain = null;
async function route(keepFocus) {
  if (!state.me) return;
  if (rendering) {
    routeAgain = { keepFocus: (routeAgain ? routeAgain.keepFocus : true) && !!keepFocus };
    return;
  }
  rendering = true;
  state.background = !!keepFocus;  // automatic refreshes do not keep the session alive
  const { page, arg, query } = parseRoute();
  for (const link of document.querySelectorAll("[data-nav]"))
    link.toggleAttribute("aria-current", link.dataset.nav === (page === "service" ? "overview" : page)) &&
      link.setAttribute("aria-current", "page");
  const view = $("view");
  const active = document.activeElement;
  const activeKey = active && (active.id || active.dataset.action && `${active.dataset.action}:${active.dataset.server}` ||
                               active.dataset.poolAction);
  try {
    // A live refresh leaves the config page alone: it would wipe a file being edited,
    // and has nothing to learn (the file on disk is read when the page opens).
    if (page === "config" && keepFocus) return;
    let nodes;
    if (page === "service") nodes = await renderService(arg);
    else if (page === "audit") nodes = await renderAudit(query);
    else if (page === "events") nodes = await renderEvents(query);
    else if (page === "config") nodes = await renderConfig();
    else { await loadServices(); nodes = renderOverview(); }
    view.replaceChildren(...nodes.filter(Boolean));
    document.title = "medlb: " + (page === "service" ? arg : page);
    if (keepFocus && activeKey) {
      const again = document.getElementById(activeKey) ||
        view.querySelector(`[data-pool-action="${CSS.escape(activeKey)}"]`) ||
        view.querySelector(`[data-action="${CSS.escape(activeKey.split(":")[0])}"][data-server="${CSS.escape(activeKey.split(":")[1] || "")}"]`);
      if (again) again.focus();
    }
  } catch (e) {
    if (e.status !== 401) view.replaceChildren(el("p", { class: "error", role: "alert" }, "Cannot show this page: " + e.message));
  } finally {
    rendering = false;
    state.background = false;
    if (routeAgain) {
      const again = routeAgain;
      routeAgain = null;
      route(again.keepFocus);
    }
  }
}

function refresh() {
  clearTimeout(state.refreshSoon);
  state.refreshSoon = setTimeout(() => route(true), 150);
}

function connectLive() {
  if (state.source) state.source.close();
  const live = $("live");
  const source = new EventSource("/api/v1/stream");
  state.source = source;
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
  source.onmessage = () => refresh();
}

// `message` is an error (a refused login) unless `note`: "You have logged out." is not one.
function showLogin(message, note) {
  state.me = null;
  if (state.source) { state.source.close(); state.source = null; }
  clearInterval(state.timer);
  $("top").hidden = true;
  $("view").replaceChildren();
  $("login-view").hidden = false;
  $("login-error").textContent = note ? "" : message || "";
  $("login-note").textContent = note ? message : "";
  $("login-name").focus();
}

function loggedIn(me) {
  state.me = me;
  $("login-view").hidden = true;
  $("top").hidden = false;
  $("who").textContent = `${me.name} (${me.role})`;
  $("nav-config").hidden = !may("admin");
  connectLive();
  clearInterval(state.timer);
  state.timer = setInterval(() => { if (!$("confirm").open) route(true); }, 5000);
  route();
}

async function start() {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-submit").disabled = true;
    $("login-note").textContent = "";
    try {
      const me = await api("POST", "/api/v1/login", { name: $("login-name").value, password: $("login-password").value });
      $("login-password").value = "";
      loggedIn(me);
    } catch (e) {
      $("login-error").textContent = e.message;
    } finally {
      $("login-submit").disabled = false;
    }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/api/v1/logout"); } catch (e) { /* the session may be gone already */ }
    showLogin("You have logged out.", true);
  });
  window.addEventListener("hashchange", () => { route(); $("main").focus(); });
  try {
    // 200 with no name when nobody is logged in: the first load makes no failing request.
    const me = await api("GET", "/api/v1/session");
    if (me.csrf) loggedIn(me);
    else showLogin(me.ended ? "Your session has ended; log in again." : "", true);
  } catch (e) {
    showLogin("");
  }
}

document.addEventListener("DOMContentLoaded", start);
