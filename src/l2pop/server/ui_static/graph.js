// The membership graph: networks on the left, their member hosts on the right, an edge per
// membership, hosts coloured by sync state. At 1,000 hosts and 2,000 networks the whole graph
// is a hairball, so it draws a scope: the networks whose name (or VNI) matches the filter, or
// those of the host it names, at most MAX_NETWORKS of them and MAX_HOSTS hosts.

const SVG = "http://www.w3.org/2000/svg";
const MAX_NETWORKS = 40;
const MAX_HOSTS = 120;
const ROW = 18;

function node(tag, attrs, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) n.setAttribute(key, String(value));
  if (text !== undefined) n.textContent = text;
  return n;
}

function syncClass(host) {
  if (!host || !host.connected) return "host-bad";
  return host.in_sync ? "host-ok" : "host-warn";
}

// Draws into `container`; returns a note saying what was left out.
export function drawGraph(container, state, filter, onHost) {
  const wanted = filter.toLowerCase();
  let networks = [...state.networks.values()];
  if (wanted && state.hosts.has(filter)) networks = networks.filter((n) => n.members.includes(filter));
  else if (wanted) networks = networks.filter((n) => n.name.toLowerCase().includes(wanted) || String(n.vni) === wanted);
  networks.sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  const total = networks.length;
  networks = networks.slice(0, MAX_NETWORKS);
  const hostNames = [...new Set(networks.flatMap((n) => n.members))].sort();
  const shownHosts = hostNames.slice(0, MAX_HOSTS);
  const hostIndex = new Map(shownHosts.map((h, i) => [h, i]));
  const rows = Math.max(networks.length, shownHosts.length, 1);
  const height = rows * ROW + 20;
  const width = 700;
  const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "membership graph" });
  const netY = (i) => 10 + (i + 0.5) * (height - 20) / Math.max(networks.length, 1);
  const hostY = (i) => 10 + (i + 0.5) * (height - 20) / Math.max(shownHosts.length, 1);
  networks.forEach((network, i) => {
    for (const member of network.members) {
      const j = hostIndex.get(member);
      if (j === undefined) continue;
      svg.append(node("line", { class: "edge", x1: 230, y1: netY(i), x2: 470, y2: hostY(j) }));
    }
  });
  networks.forEach((network, i) => {
    const g = node("g", { "data-network": network.id });
    g.append(node("rect", { class: "net", x: 222, y: netY(i) - 6, width: 12, height: 12, rx: 2 }));
    g.append(node("text", { x: 214, y: netY(i) + 4, "text-anchor": "end" }, `${network.name} (${network.vni})`));
    svg.append(g);
  });
  shownHosts.forEach((name, j) => {
    const host = state.hosts.get(name);
    const g = node("g", { "data-host": name, class: "graph-host" });
    g.append(node("circle", { class: syncClass(host), cx: 476, cy: hostY(j), r: 6 }));
    g.append(node("text", { x: 488, y: hostY(j) + 4 }, name));
    g.addEventListener("click", () => onHost(name));
    svg.append(g);
  });
  container.replaceChildren(svg);
  const left = [];
  if (total > networks.length) left.push(`${total - networks.length} more networks`);
  if (hostNames.length > shownHosts.length) left.push(`${hostNames.length - shownHosts.length} more hosts`);
  return `${networks.length} networks, ${shownHosts.length} hosts` + (left.length ? ` (not drawn: ${left.join(", ")}; narrow the filter)` : "");
}
