// l2pop's web page: sign in, load the state over /v1, then follow /v1/watch.
//
// No framework and no build step: the page is a few tables, an event list and an SVG graph,
// redrawn from one state object at most once per animation frame. Server data is only ever
// written as text (textContent), never as markup. The token lives in sessionStorage (this
// tab only) and travels as a bearer header, or as the live stream's first frame.

import { drawGraph } from "./graph.js";

const TOKEN_KEY = "l2pop-token";
const PAGE = 100; // rows per table page
const EVENTS_SHOWN = 300;
const RECONNECT_MS = 2000;

const state = {
  token: null, // null: not signed in; "": the server needs no token (loopback)
  revision: 0,
  replica: "",
  hosts: new Map(), // name -> host row
  networks: new Map(), // id -> network summary
  events: [], // newest first
  tab: "hosts",
  page: { hosts: 0, networks: 0 },
  detail: null, // host name shown in the detail pane
  socket: null,
  live: false,
};

const $ = (selector) => document.querySelector(selector);

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

// -- the API -------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("the server refused the token");
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return { body: await response.json(), link: response.headers.get("Link") };
}

async function listAll(path) {
  const items = [];
  let next = path;
  while (next) {
    const { body, link } = await api(next);
    items.push(...body);
    const match = link && link.match(/<([^>]+)>;\s*rel="next"/);
    next = match ? match[1] : null;
  }
  return items;
}

// -- signing in ----------------------------------------------------------------------------

async function start() {
  bindControls();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  for (const candidate of saved !== null ? [saved] : [""]) {
    state.token = candidate;
    try {
      await loadAll();
      showApp();
      return;
    } catch (error) {
      if (!(error instanceof Unauthorized)) return showSignIn(String(error));
    }
  }
  showSignIn(saved !== null ? "the saved token was refused" : null);
}

function showSignIn(message) {
  state.token = null;
  closeStream();
  $("#app").hidden = true;
  $("#summary").hidden = true;
  $("#signin").hidden = false;
  const error = $("#signin-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("#token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("#token").value.trim();
  state.token = token;
  try {
    await loadAll();
  } catch (error) {
    const message = error instanceof Unauthorized ? "wrong token: the server refused it" : String(error);
    return showSignIn(message);
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#token").value = "";
  showApp();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn(null);
}

function showApp() {
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#summary").hidden = false;
  openStream();
  render();
}

// -- loading -------------------------------------------------------------------------------

async function loadAll() {
  const [status, hosts, topology, events] = await Promise.all([
    api("/v1/status"),
    listAll("/v1/hosts?limit=1000"),
    api("/v1/topology"),
    api("/v1/events?limit=200"),
  ]);
  state.revision = Math.max(status.body.hub_revision, topology.body.revision);
  state.replica = status.body.replica;
  state.networks = new Map(topology.body.networks.map((n) => [n.id, n]));
  state.hosts = new Map(hosts.map((h) => [h.name, withLag(h, status.body.hub_revision)]));
  state.events = events.body.slice().reverse();
  countNetworksPerHost();
}

function countNetworksPerHost() {
  const counts = new Map();
  for (const network of state.networks.values())
    for (const member of network.members) counts.set(member, (counts.get(member) || 0) + 1);
  for (const host of state.hosts.values()) host.networks = counts.get(host.name) || 0;
}

// -- the live stream -----------------------------------------------------------------------

function openStream() {
  closeStream();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/v1/watch`);
  state.socket = socket;
  socket.onopen = () => socket.send(JSON.stringify({ token: state.token || "" }));
  socket.onmessage = (message) => onStream(JSON.parse(message.data));
  socket.onclose = (close) => {
    if (state.socket !== socket) return;
    setLive(false);
    state.socket = null;
    if (close.code === 4401) return showSignIn("the live stream refused the token");
    setTimeout(reconnect, RECONNECT_MS);
  };
}

function closeStream() {
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.close();
  setLive(false);
}

async function reconnect() {
  if (state.token === null || state.socket) return;
  try {
    await loadAll(); // what changed while the stream was down
    openStream();
    render();
  } catch (error) {
    if (error instanceof Unauthorized) return showSignIn("the server refused the token");
    setTimeout(reconnect, RECONNECT_MS);
  }
}

function onStream(message) {
  if (message.type === "hello") {
    setLive(true);
    requestAnimationFrame(() => { document.documentElement.dataset.ready ||= String(performance.now()); }); // after the first render: l2pop bench ui
    return;
  }
  if (message.type !== "tick") return;
  state.revision = Math.max(state.revision, message.revision);
  for (const host of message.hosts) state.hosts.set(host.name, host);
  for (const name of message.hosts_removed) state.hosts.delete(name);
  for (const network of message.networks) state.networks.set(network.id, network);
  for (const id of message.networks_removed) state.networks.delete(id);
  if (message.networks.length || message.networks_removed.length) countNetworksPerHost();
  const bySeq = new Map(message.settled.map((e) => [e.seq, e]));
  if (bySeq.size) state.events = state.events.map((e) => bySeq.get(e.seq) || e);
  state.events = message.events.slice().reverse().concat(state.events).slice(0, EVENTS_SHOWN);
  eventChanges.fresh.push(...message.events);
  eventChanges.settled.push(...message.settled);
  const detail = state.detail;
  if (detail && (message.hosts.some((h) => h.name === detail) || message.networks.length))
    loadDetail(detail);
  // redraw only what the tick changed: a quiet tick costs nothing, a busy one the rows
  const hosts = message.hosts.length || message.hosts_removed.length;
  const networks = message.networks.length || message.networks_removed.length;
  if (hosts || networks) render("hosts"); // a host's network count may have moved
  if (networks) render("networks");
  if (message.events.length || message.settled.length) render("events");
  render("summary");
}

function setLive(on) {
  state.live = on;
  const live = $("#live");
  live.textContent = on ? "live" : "offline";
  live.className = on ? "live on" : "live off";
}

// -- rendering -----------------------------------------------------------------------------

const dirty = new Set();
const eventChanges = { fresh: [], settled: [] }; // since the last frame, for renderEvents

// Redraw `part` ("all", "summary", "hosts", "networks", "events") at the next frame.
function render(part = "all") {
  const first = dirty.size === 0;
  dirty.add(part);
  if (!first) return;
  requestAnimationFrame(() => {
    const all = dirty.has("all");
    const hosts = all || dirty.has("hosts");
    const networks = all || dirty.has("networks");
    const events = dirty.has("events");
    dirty.clear();
    renderSummary();
    if (state.tab === "hosts" && hosts) renderHosts();
    if (state.tab === "networks" && networks) renderNetworks();
    if (state.tab === "graph" && (hosts || networks)) renderGraph();
    if (all) renderEvents();
    else if (events) updateEvents();
  });
}

function hostState(host) {
  if (!host.connected) return "bad";
  if (!host.in_sync) return "warn";
  return "ok";
}

function lagOf(host) {
  return host.lag ?? null;
}

// A row of GET /v1/hosts has no lag: it is the revision it was read at minus the applied one
// (the stream's rows carry theirs, and send it again whenever it changes).
function withLag(host, revision) {
  const known = host.connected && host.applied_revision !== null;
  return { ...host, lag: known ? Math.max(revision - host.applied_revision, 0) : null };
}

// The stream sends a host again when its state changes, not each time an in-sync host's
// applied revision follows the current one: show the current one for those.
function appliedOf(host, lag) {
  if (host.connected && host.in_sync && lag === 0) return Math.max(host.applied_revision || 0, state.revision);
  return host.applied_revision;
}

function renderSummary() {
  const hosts = [...state.hosts.values()];
  $("#revision").textContent = state.revision;
  $("#hosts-total").textContent = hosts.length;
  $("#hosts-connected").textContent = hosts.filter((h) => h.connected).length;
  $("#hosts-in-sync").textContent = hosts.filter((h) => h.connected && h.in_sync).length;
  $("#networks-count").textContent = state.networks.size;
  $("#replica").textContent = state.replica;
}

function pageOf(kind, rows) {
  const pages = Math.max(Math.ceil(rows.length / PAGE), 1);
  state.page[kind] = Math.min(state.page[kind], pages - 1);
  const pager = document.querySelector(`[data-pager="${kind}"]`);
  pager.replaceChildren();
  const prev = el("button", "<", { type: "button" });
  prev.disabled = state.page[kind] === 0;
  prev.onclick = () => { state.page[kind] -= 1; render(); };
  const next = el("button", ">", { type: "button" });
  next.disabled = state.page[kind] >= pages - 1;
  next.onclick = () => { state.page[kind] += 1; render(); };
  pager.append(prev, el("span", `page ${state.page[kind] + 1} of ${pages} (${rows.length})`), next);
  return rows.slice(state.page[kind] * PAGE, (state.page[kind] + 1) * PAGE);
}

function renderHosts() {
  const filter = $("#host-filter").value.trim().toLowerCase();
  let hosts = [...state.hosts.values()];
  if (filter) hosts = hosts.filter((h) => h.name.toLowerCase().includes(filter) || h.vtep_ip.includes(filter));
  const rank = { bad: 0, warn: 1, ok: 2 };
  hosts.sort((a, b) => a.name.localeCompare(b.name));
  if ($("#host-problems").checked)
    hosts.sort((a, b) => rank[hostState(a)] - rank[hostState(b)] || (lagOf(b) || 0) - (lagOf(a) || 0));
  const body = $("#hosts tbody");
  body.replaceChildren(...pageOf("hosts", hosts).map(hostRow));
}

function hostRow(host) {
  const lag = lagOf(host);
  const row = el("tr", null, { "data-host": host.name });
  const sync = hostState(host);
  row.className = sync === "bad" ? "down" : sync === "warn" ? "diverged" : lag ? "lagging" : "";
  const name = el("a", host.name, { class: "host-link" });
  name.onclick = () => showDetail(host.name);
  const cells = [
    ["name", name],
    ["vtep_ip", host.vtep_ip],
    ["datapath", host.datapath || "-"],
    ["encaps", host.encaps ? host.encaps.join(" ") : "-"],
    ["connected", host.connected ? "yes" : "no", host.connected ? "state-ok" : "state-bad"],
    ["replica", host.replica || "-"],
    ["applied_revision", appliedOf(host, lag) ?? "-", "num"],
    ["lag", lag ?? "-", "num"],
    ["in_sync", host.in_sync && host.connected ? "yes" : "no", `state-${sync}`],
    ["last_seen", host.last_seen ? host.last_seen.replace("T", " ").slice(0, 19) : "-"],
    ["networks", host.networks ?? 0, "num"],
    ["errors", Array.isArray(host.errors) ? host.errors.length : host.errors || 0, "num"],
  ];
  for (const [col, value, cls] of cells) {
    const cell = el("td", null, { "data-col": col });
    if (value instanceof Node) cell.append(value);
    else cell.textContent = String(value);
    if (cls) cell.className = cls;
    row.append(cell);
  }
  return row;
}

function renderNetworks() {
  const filter = $("#network-filter").value.trim().toLowerCase();
  let networks = [...state.networks.values()];
  if (filter)
    networks = networks.filter((n) => n.name.toLowerCase().includes(filter) || String(n.vni) === filter || n.members.includes(filter));
  networks.sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  $("#networks tbody").replaceChildren(...pageOf("networks", networks).map(networkRow));
}

function networkRow(network) {
  const row = el("tr", null, { "data-network": network.id });
  const members = network.members.length <= 6
    ? network.members.join(" ")
    : `${network.members.slice(0, 6).join(" ")} +${network.members.length - 6}`;
  const cells = [
    ["name", network.name || network.id.slice(0, 8)],
    ["vni", network.vni, "num"],
    ["encap", network.encap],
    ["arp_suppression", network.arp_suppression],
    ["members", `${network.members.length}: ${members}`],
    ["DOWN", network.ports.DOWN, "num"],
    ["BUILD", network.ports.BUILD, "num"],
    ["ACTIVE", network.ports.ACTIVE, "num"],
  ];
  for (const [col, value, cls] of cells) row.append(el("td", value, { "data-col": col, class: cls || "" }));
  return row;
}

function renderGraph() {
  const note = drawGraph($("#graph"), state, $("#graph-filter").value.trim(), showDetail);
  $("#graph-note").textContent = note;
}

function renderEvents() {
  eventChanges.fresh = [];
  eventChanges.settled = [];
  $("#events").replaceChildren(...state.events.map(eventItem));
}

// The tick's events only: new ones on top, settled ones replaced, the oldest dropped.
function updateEvents() {
  const list = $("#events");
  const { fresh, settled } = eventChanges;
  eventChanges.fresh = [];
  eventChanges.settled = [];
  const latest = new Map(settled.map((e) => [e.seq, e])); // newer than a fresh copy
  for (const event of settled) {
    const old = list.querySelector(`li[data-seq="${event.seq}"]`);
    if (old) old.replaceWith(eventItem(event));
  }
  for (const event of fresh) list.prepend(eventItem(latest.get(event.seq) || event));
  while (list.children.length > EVENTS_SHOWN) list.lastElementChild.remove();
}

function eventItem(event) {
  const item = el("li", null, { "data-seq": event.seq, "data-kind": event.kind });
  item.append(el("span", event.time.slice(11, 23), { class: "when" }), " ");
  item.append(el("span", event.kind, { class: `kind ${event.kind.includes("lost") || event.kind.includes("out of") ? "lost" : ""}` }), " ");
  const subject = [event.mac, event.network && `in ${event.network}`, event.host && `on ${event.host}`, event.detail]
    .filter(Boolean).join(" ");
  item.append(el("span", subject), " ");
  if (event.revision !== null) item.append(el("span", `r${event.revision}`, { class: "rev" }), " ");
  if (event.applied_ms !== null) {
    item.append(el("span", `applied by ${event.hosts} host${event.hosts === 1 ? "" : "s"} in ${event.applied_ms} ms`, { class: "applied", "data-applied": "" }));
  } else if (event.behind) {
    item.append(el("span", `never applied by ${event.behind.join(", ")}`, { class: "lost" }));
  } else if (event.hosts > 0) {
    item.append(el("span", `waiting for ${event.pending.join(", ")}`, { class: "waiting" }));
  }
  return item;
}

// -- one host's tables ---------------------------------------------------------------------

function showDetail(name) {
  state.detail = name;
  $("#host-detail").hidden = false;
  $("#detail-name").textContent = name;
  loadDetail(name);
}

let detailLoading = false;

async function loadDetail(name) {
  if (detailLoading) return;
  detailLoading = true;
  try {
    const quoted = encodeURIComponent(name);
    const [host, tables] = await Promise.all([api(`/v1/hosts/${quoted}`), api(`/v1/hosts/${quoted}/fdb`)]);
    if (state.detail === name) renderDetail(host.body, tables.body);
  } catch (error) {
    if (state.detail === name) $("#detail-status").textContent = `could not read ${name}: ${error}`;
  } finally {
    detailLoading = false;
  }
}

function renderDetail(host, tables) {
  const failing = new Map((host.errors || []).map((e) => [e.network_id, e]));
  const agent = !host.connected
    ? "its agent is not connected: it holds what it last applied"
    : host.in_sync
      ? `its agent applied everything (revision ${host.applied_revision}; digest ${tables.digest.slice(0, 12)} matches)`
      : `its agent has applied revision ${host.applied_revision ?? "nothing"} of ${tables.revision}: not in sync`;
  $("#detail-status").textContent = `${host.vtep_ip}, ${host.datapath || "datapath unknown"}: ${agent}.`;
  const blocks = tables.networks.map((net) => {
    const network = state.networks.get(net.network_id);
    const block = el("div", null, { "data-network": net.network_id });
    const error = failing.get(net.network_id);
    const applied = error
      ? `failed: ${error.entry ? `${error.entry}: ` : ""}${error.message} (${error.attempts} attempts)`
      : host.connected && host.in_sync ? "applied" : host.connected ? "pending" : "unknown (agent not connected)";
    block.append(el("h3", `${network ? network.name : net.network_id} - VNI ${net.vni}, ${net.encap}, ${net.arp_suppression} - agent: ${applied}`,
      { class: error ? "state-bad" : applied === "applied" ? "state-ok" : "state-warn" }));
    block.append(table(["flood list (VTEP)"], net.flood.map((v) => [v]), "flood"));
    block.append(table(["MAC", "VTEP"], net.fdb.map((e) => [e.mac, e.vtep]), "fdb"));
    block.append(table(["IP", "MAC"], net.neigh.map((e) => [e.ip, e.mac]), "neigh"));
    return block;
  });
  if (!blocks.length) blocks.push(el("p", "member of no network: nothing to hold"));
  $("#detail-tables").replaceChildren(...blocks);
}

function table(headers, rows, name) {
  const t = el("table", null, { "data-table": name });
  const head = el("tr");
  for (const h of headers) head.append(el("th", h));
  t.append(head);
  for (const r of rows) {
    const tr = el("tr");
    for (const cell of r) tr.append(el("td", cell));
    t.append(tr);
  }
  if (!rows.length) {
    const empty = el("tr");
    empty.append(el("td", "(empty)", { colspan: String(headers.length) }));
    t.append(empty);
  }
  return t;
}

// -- controls ------------------------------------------------------------------------------

function bindControls() {
  $("#signin-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", signOut);
  $("#detail-close").addEventListener("click", () => {
    state.detail = null;
    $("#host-detail").hidden = true;
  });
  for (const id of ["#host-filter", "#network-filter", "#graph-filter"])
    $(id).addEventListener("input", () => { state.page.hosts = state.page.networks = 0; render(); });
  $("#host-problems").addEventListener("change", render);
  for (const button of document.querySelectorAll("[data-tab]")) {
    button.addEventListener("click", () => {
      state.tab = button.dataset.tab;
      for (const other of document.querySelectorAll("[data-tab]"))
        other.setAttribute("aria-selected", String(other === button));
      for (const pane of ["hosts", "networks", "graph"]) $(`#tab-${pane}`).hidden = pane !== state.tab;
      render();
    });
  }
}

start();
