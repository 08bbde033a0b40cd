"""Reading an Open vSwitch host's overlay state back from its switch, and watching it change.

``ovs_tables`` reads the l2pop bridge with the OVS tools (``ovs-ofctl dump-flows`` and
``dump-groups`` in OpenFlow 1.5, ``ovs-vsctl`` for ports and the bridge's external_ids),
independent of the datapath's own code, into the ``KernelNetwork`` shape the linux hosts'
read-back has, so one assertion checks both kinds of host. The layout it reads is the one
the ovs datapath writes (docs/adr/0018-ovs-pipeline.md; ``datapath/_pipeline.py`` writes it,
and is deliberately not imported here: a bug there must not hide in the read-back):

* only flows with the l2pop cookie (``0x6c32`` in the top 16 bits) are read; a flow's
  network is its ``metadata`` (the VNI inside the pipeline) or, before classification,
  its ``tun_id``; the bridge's ``external_ids:l2pop-net-<VNI>=<network id>`` names the
  networks the bridge carries;
* ``fdb``: table 40, ``dl_dst=MAC`` -> ``set_field:VTEP->tun_dst``;
* ``neigh``: table 20 (``arp_tpa=IP``) and table 30 (``nd_target=IP``) ->
  ``set_field:MAC->eth_src``;
* ``flood``: the ``tun_dst`` of each bucket of group V; ``ports``: the interfaces output
  by the buckets of group ``0x1000000 | V`` (the network's local ports);
* ``mode``: a table-10 ARP request dispatch to table 20 means suppression; the table-20
  miss (priority 10) then floods (``goto_table:40``: neigh_suppress) or stays local
  (``group:``: proxy); no dispatch means ``off``. Anything else is reported as
  ``inconsistent`` so an assertion on the mode fails loudly;
* ``vxlan`` holds the tunnel port the network's flows use (``l2pop-vxlan``/``l2pop-gre``),
  ``local`` its ``options:local_ip`` if it has one.

The parsers (``parse_flows``, ``parse_groups``) take ``ovs-ofctl`` output as text, so they
are tested without a switch. ``OvsFlowMonitor`` is ``KernelMonitor``'s counterpart:
``ovs-ofctl monitor`` on the bridge, bracketed by marker flows so no event at either end
is missed. ``add_foreign_ovs``/``foreign_ovs_state``: hand-made OVS objects a datapath must
leave alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

from l2pop.testbed.iproute import TestbedError
from l2pop.testbed.ovs import OvsInstance
from l2pop.testbed.tables import KernelNetwork

COOKIE, COOKIE_MASK = 0x6C32 << 48, 0xFFFF << 48
#: the ``dump-flows`` filter for l2pop's flows
OURS = f"cookie={COOKIE:#x}/{COOKIE_MASK:#x}"
LOCAL_GROUP = 0x1000000
T_DISPATCH, T_ARP, T_ND, T_FORWARD = 10, 20, 30, 40
DEFAULT_BRIDGE = "br-l2pop"
TUNNEL_TYPES = ("vxlan", "gre")
OF = ("-O", "OpenFlow15")

#: hand-made objects (``add_foreign_ovs``): another cookie, another bridge, a group id and
#: an EtherType l2pop never uses (IEEE 802 local experimental), so they forward nothing
FOREIGN_OVS_BRIDGE = "hand-br"
FOREIGN_OVS_PORT = "hand-int"
FOREIGN_COOKIE = 0xBEEF0001
FOREIGN_GROUP = 0x7F000001
FOREIGN_ETHERTYPE = 0x88B5
FOREIGN_EXTERNAL_ID = ("hand-made", "yes")
#: marker flows of ``OvsFlowMonitor``: their own cookie, a MAC outside every range we use,
#: a table l2pop's pipeline does not use (OVS refuses flow mods in its hidden table 254)
MARKER_COOKIE = 0xFE00000000000000
MARKER_TABLE = 200


# -- ovs-ofctl output ---------------------------------------------------------------------


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside parentheses and brackets (``learn(...)``, ``NXM_X[0..3]``)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [part for part in out if part]


def _int(value: str) -> int:
    """A number as ovs-ofctl prints it (``0x3e9`` or ``1001``), a mask dropped."""
    return int(value.split("/", 1)[0], 0)


@dataclass(frozen=True)
class Flow:
    """One flow of ``dump-flows --no-stats`` (or one event of ``monitor``).

    ``match``: field -> value, flags such as ``arp`` or ``icmp6`` with value ""; table 0
    and the default priority are filled in where ovs-ofctl leaves them out.
    """

    cookie: int
    table: int
    priority: int
    match: dict[str, str]
    actions: list[str]

    @property
    def ours(self) -> bool:
        return self.cookie & COOKIE_MASK == COOKIE

    @property
    def vni(self) -> int | None:
        """The network: ``metadata`` inside the pipeline, ``tun_id`` before it."""
        for key in ("metadata", "tun_id"):
            if key in self.match:
                return _int(self.match[key])
        return None

    def set_fields(self) -> dict[str, str]:
        """``set_field:VALUE->FIELD`` actions as field -> value (the last one wins)."""
        out = {}
        for action in self.actions:
            if action.startswith("set_field:") and "->" in action:
                value, target = action[len("set_field:") :].rsplit("->", 1)
                out[target] = value
        return out

    def outputs(self) -> list[int]:
        return outputs(self.actions)

    @property
    def key(self) -> str | None:
        """The entry the flow stands for: its MAC (fdb) or IP (neighbour)."""
        for name in ("dl_dst", "arp_tpa", "nd_target"):
            if name in self.match:
                return self.match[name]
        return None


def outputs(actions: list[str]) -> list[int]:
    """The port numbers of ``output:N`` actions."""
    out = []
    for action in actions:
        if action.startswith("output:"):
            port = action[len("output:") :]
            if port.isdigit():
                out.append(int(port))
    return out


def parse_flow(line: str) -> Flow | None:
    """One line of ``dump-flows`` or a ``monitor`` event; None for other lines (headers)."""
    text = line.strip()
    if " actions=" not in text and not text.startswith("actions="):
        return None
    head, _, actions = text.partition("actions=")
    match: dict[str, str] = {}
    # dump-flows separates its fields with ", " and the match with ","; monitor uses " "
    for token in re.split(r"[ ,]+", head.strip()):
        if not token:
            continue
        name, eq, value = token.partition("=")
        match[name] = value if eq else ""
    if "event" in match and match["event"] not in ("ADDED", "DELETED", "MODIFIED"):
        return None
    meta = {k: match.pop(k, None) for k in ("cookie", "table", "priority")}
    for extra in ("event", "reason", "duration", "n_packets", "n_bytes", "idle_age"):
        match.pop(extra, None)
    return Flow(
        cookie=_int(meta["cookie"]) if meta["cookie"] else 0,
        table=_int(meta["table"]) if meta["table"] else 0,
        priority=_int(meta["priority"]) if meta["priority"] else 32768,
        match=match,
        actions=split_top(actions),
    )


def parse_flows(text: str) -> list[Flow]:
    return [f for f in (parse_flow(line) for line in text.splitlines()) if f is not None]


@dataclass(frozen=True)
class Group:
    """One group of ``dump-groups``: its id, type and each bucket's actions."""

    group_id: int
    type: str
    buckets: list[list[str]]


def parse_groups(text: str) -> list[Group]:
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("group_id="):
            continue
        head, *buckets = line.split(",bucket=")
        fields = dict(part.partition("=")[::2] for part in head.split(","))
        parsed = []
        for bucket in buckets:
            # "bucket_id:N,actions=A,B" (OF1.5) or "actions=A,B" / "A,B" (older)
            _, _, acts = bucket.partition("actions=") if "actions=" in bucket else ("", "", bucket)
            parsed.append(split_top(acts))
        out.append(Group(_int(fields["group_id"]), fields.get("type", ""), parsed))
    return out


# -- OVSDB values (ovs-vsctl --format=json) --------------------------------------------------


def ovsdb_value(value: Any) -> Any:
    """An OVSDB JSON value as Python: ``["map", ...]`` a dict, ``["set", ...]`` a list (an
    empty set None), ``["uuid", U]`` the uuid string, atoms as they are."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        tag, body = value
        if tag == "map":
            return {k: ovsdb_value(v) for k, v in body}
        if tag == "set":
            items = [ovsdb_value(v) for v in body]
            return items or None
        if tag in ("uuid", "named-uuid"):
            return body
    return value


def ovsdb_rows(text: str) -> list[dict[str, Any]]:
    """The rows of ``ovs-vsctl --format=json list TABLE`` as dicts."""
    doc = json.loads(text)
    heads = doc["headings"]
    return [dict(zip(heads, (ovsdb_value(v) for v in row), strict=True)) for row in doc["data"]]


# -- the read-back ----------------------------------------------------------------------


def bridge_exists(ovs: OvsInstance, bridge: str) -> bool:
    try:
        ovs.vsctl("br-exists", bridge, wait=False)
    except TestbedError:
        return False
    return True


def bridge_external_ids(ovs: OvsInstance, bridge: str) -> dict[str, str]:
    rows = ovsdb_rows(
        ovs.vsctl("--format=json", "--columns=external_ids", "list", "Bridge", bridge, wait=False)
    )
    return dict(rows[0]["external_ids"] or {}) if rows else {}


def ofctl(ovs: OvsInstance, bridge: str, command: str, *args: str, stdin: str | None = None) -> str:
    """``ovs-ofctl -O OpenFlow15 COMMAND <bridge's socket> ARGS`` in ``ovs``'s environment."""
    return ovs.ofctl(bridge, command, *args, stdin=stdin, options=OF)


class _Reader:
    """Builds ``build_tables``' answer: flows first, then groups, then each network's mode
    and tunnel port."""

    def __init__(self, interfaces: list[dict[str, Any]], bridge: str) -> None:
        self.bridge = bridge
        self.by_ofport = {r["ofport"]: r for r in interfaces if isinstance(r.get("ofport"), int)}
        self.tunnels = {p for p, r in self.by_ofport.items() if r.get("type") in TUNNEL_TYPES}
        self.nets: dict[int, KernelNetwork] = {}
        self.used: dict[int, set[int]] = {}  # VNI -> the tunnel ofports its flows use
        self.dispatch: set[int] = set()  # VNIs whose ARP requests go to the responder
        self.miss: dict[int, str] = {}  # VNI -> what the responder does without an entry

    def net(self, vni: int) -> KernelNetwork:
        if vni not in self.nets:
            self.nets[vni] = KernelNetwork(vni, self.bridge, "")
        return self.nets[vni]

    def use(self, vni: int, ports: list[int]) -> None:
        self.used.setdefault(vni, set()).update(p for p in ports if p in self.tunnels)

    def flow(self, flow: Flow) -> None:
        vni = flow.vni
        if not flow.ours or vni is None:
            return
        n = self.net(vni)
        in_port = flow.match.get("in_port", "")
        self.use(vni, flow.outputs() + ([int(in_port)] if in_port.isdigit() else []))
        sets = flow.set_fields()
        if flow.table == T_FORWARD and "dl_dst" in flow.match and "tun_dst" in sets:
            n.fdb[flow.match["dl_dst"]] = sets["tun_dst"]
        elif flow.table == T_ARP and "arp_tpa" in flow.match and "eth_src" in sets:
            n.neigh[flow.match["arp_tpa"]] = sets["eth_src"]
        elif flow.table == T_ND and "nd_target" in flow.match and "eth_src" in sets:
            n.neigh[flow.match["nd_target"]] = sets["eth_src"]
        elif flow.table == T_DISPATCH and "arp" in flow.match:
            if f"goto_table:{T_ARP}" in flow.actions:
                self.dispatch.add(vni)
        elif flow.table == T_ARP and not flow.key:
            if f"goto_table:{T_FORWARD}" in flow.actions:
                self.miss[vni] = "flood"
            elif any(a.startswith("group:") for a in flow.actions):
                self.miss[vni] = "local"

    def group(self, group: Group) -> None:
        if group.group_id & ~(LOCAL_GROUP - 1) == LOCAL_GROUP:
            local = self.nets.get(group.group_id & (LOCAL_GROUP - 1))
            if local is not None:
                ofports = [p for bucket in group.buckets for p in outputs(bucket)]
                local.ports = sorted(
                    self.by_ofport[p]["name"] for p in ofports if p in self.by_ofport
                )
            return
        n = self.nets.get(group.group_id)
        if n is None:
            return
        for bucket in group.buckets:
            vtep = Flow(0, 0, 0, {}, bucket).set_fields().get("tun_dst")
            if vtep is not None:
                n.flood.append(vtep)
            self.use(n.vni, outputs(bucket))
        n.flood.sort()

    def finish(self) -> dict[int, KernelNetwork]:
        for vni, n in self.nets.items():
            miss = self.miss.get(vni)
            if vni in self.dispatch:
                n.mode = {"flood": "neigh_suppress", "local": "proxy"}.get(miss or "", "")
            else:  # no responder: a flooding miss flow (or none) is harmless
                n.mode = "off" if miss in (None, "flood") else ""
            n.mode = n.mode or "inconsistent"
            ports = sorted(self.used.get(vni, ()))
            n.vxlan = ",".join(self.by_ofport[p]["name"] for p in ports)  # 2: visibly wrong
            if len(ports) == 1:
                n.local = (self.by_ofport[ports[0]].get("options") or {}).get("local_ip")
        return self.nets


def build_tables(
    flows: list[Flow],
    groups: list[Group],
    interfaces: list[dict[str, Any]],
    external_ids: dict[str, str],
    bridge: str = DEFAULT_BRIDGE,
) -> dict[int, KernelNetwork]:
    """VNI -> KernelNetwork from parsed switch state (the module docstring says how):
    ``interfaces`` are OVSDB Interface rows (name, ofport, type, options),
    ``external_ids`` the bridge's."""
    reader = _Reader(interfaces, bridge)
    for key in external_ids:
        vni = key.removeprefix("l2pop-net-")
        if key.startswith("l2pop-net-") and vni.isdigit():
            reader.net(int(vni))
    for flow in flows:
        reader.flow(flow)
    for group in groups:
        reader.group(group)
    return reader.finish()


def ovs_tables(ovs: OvsInstance, bridge: str = DEFAULT_BRIDGE) -> dict[int, KernelNetwork]:
    """VNI -> what ``ovs``'s bridge ``bridge`` holds for that network ({} without the
    bridge: the agent has not made it yet)."""
    if not bridge_exists(ovs, bridge):
        return {}
    flows = parse_flows(ofctl(ovs, bridge, "dump-flows", "--no-stats", OURS))
    groups = parse_groups(ofctl(ovs, bridge, "dump-groups"))
    # ofports are per bridge: only this bridge's interfaces (br-phy has an ofport 1 too)
    mine = set(ovs.vsctl("list-ifaces", bridge, wait=False).split())
    rows = ovsdb_rows(
        ovs.vsctl("--format=json", "--columns=name,ofport,type,options", "list", "Interface")
    )
    interfaces = [row for row in rows if row["name"] in mine]
    return build_tables(flows, groups, interfaces, bridge_external_ids(ovs, bridge), bridge)


# -- hand-made objects ------------------------------------------------------------------------


def foreign_flows() -> list[str]:
    """Hand-made flows for the l2pop bridge: table 0 and one of l2pop's own tables."""
    match = f"priority=1,dl_type={FOREIGN_ETHERTYPE:#x}"
    return [
        f"cookie={FOREIGN_COOKIE:#x},table=0,{match},actions=drop",
        f"cookie={FOREIGN_COOKIE:#x},table={T_FORWARD},{match},actions=drop",
    ]


def add_foreign_ovs(ovs: OvsInstance, bridge: str = DEFAULT_BRIDGE) -> None:
    """Hand-made OVS objects next to l2pop's (``bridge`` must exist): a bridge of its own
    with an internal port, an internal port on ``bridge``, flows with another cookie, a
    group outside l2pop's ids and an external_id of the bridge. Idempotent. Flows and
    groups live in ovs-vswitchd only: a restart loses them (call this again)."""
    key, value = FOREIGN_EXTERNAL_ID
    ovs.vsctl(
        "--may-exist", "add-br", FOREIGN_OVS_BRIDGE,
        "--", "set", "bridge", FOREIGN_OVS_BRIDGE, "datapath_type=netdev",
        "--", "--may-exist", "add-port", bridge, FOREIGN_OVS_PORT,
        "--", "set", "interface", FOREIGN_OVS_PORT, "type=internal",
        "--", "set", "bridge", bridge, f"external_ids:{key}={value}",
    )  # fmt: skip
    ofctl(ovs, bridge, "add-flows", "-", stdin="\n".join(foreign_flows()) + "\n")
    group = f"group_id={FOREIGN_GROUP},type=all,bucket=actions=drop"
    ovs.ofctl(bridge, "mod-group", group, options=(*OF, "--may-create"))


def foreign_ovs_state(ovs: OvsInstance, bridge: str = DEFAULT_BRIDGE) -> dict[str, bool]:
    """Whether each hand-made object of ``add_foreign_ovs`` is still there, unchanged."""
    bridges = ovs.vsctl("list-br", wait=False).split()
    ports = ovs.vsctl("list-ports", bridge, wait=False).split() if bridge in bridges else []
    flows = ofctl(ovs, bridge, "dump-flows", "--no-stats", f"cookie={FOREIGN_COOKIE:#x}/-1")
    groups = parse_groups(ofctl(ovs, bridge, "dump-groups", str(FOREIGN_GROUP)))
    key, value = FOREIGN_EXTERNAL_ID
    ids = bridge_external_ids(ovs, bridge)
    return {
        "ovs_bridge": FOREIGN_OVS_BRIDGE in bridges,
        "ovs_port": FOREIGN_OVS_PORT in ports,
        "ovs_flows": len(parse_flows(flows)) == len(foreign_flows()),
        "ovs_group": [g.group_id for g in groups] == [FOREIGN_GROUP],
        "ovs_external_id": ids.get(key) == value,
    }


# -- watching flows change ---------------------------------------------------------------------


class OvsFlowMonitor:
    """``ovs-ofctl monitor BRIDGE watch:`` between ``__enter__`` and ``__exit__``: every flow
    added, modified or deleted (a rewrite of an unchanged flow shows as ADDED). Group
    changes are not reported by OpenFlow's flow monitor.

    Same queries as ``KernelMonitor``: ``touched``/``deleted`` by entry key (a flow's
    ``dl_dst``, ``arp_tpa`` or ``nd_target``), ``mentioning`` by any word."""

    def __init__(self, ovs: OvsInstance, bridge: str = DEFAULT_BRIDGE) -> None:
        self.ovs = ovs
        self.bridge = bridge
        self.lines: list[str] = []
        self._raw: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._n = 0
        self._start = 0

    def _marker(self) -> str:
        self._n += 1
        mac = f"02:fe:00:01:{self._n >> 8:02x}:{self._n & 255:02x}"
        spec = f"cookie={MARKER_COOKIE | self._n:#x},table={MARKER_TABLE},dl_dst={mac}"
        ofctl(self.ovs, self.bridge, "add-flow", f"{spec},actions=drop")
        ofctl(self.ovs, self.bridge, "del-flows", f"cookie={MARKER_COOKIE | self._n:#x}/-1")
        return mac

    def _seen(self, mac: str, timeout: float) -> int | None:
        """The index of the marker's DELETED event once it is read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(self._raw):
                if mac in line and "event=DELETED" in line:
                    return i
            time.sleep(0.01)
        return None

    def __enter__(self) -> OvsFlowMonitor:
        # ovs-ofctl's stdout is block-buffered into a pipe: line-buffer it, or the events
        # arrive only when the buffer fills
        cmd = ["stdbuf", "-oL", "ovs-ofctl", *OF, "monitor", self.ovs.mgmt(self.bridge)]
        cmd.append("watch:!initial")
        # stderr joins stdout (only event lines are kept): with stderr on /dev/null this
        # ovs-ofctl (3.1) printed no event at all
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.ovs.env
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 10
        while True:
            start = self._seen(self._marker(), 0.3)
            if start is not None:
                self._start = start + 1
                return self
            if time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"ovs-ofctl monitor on {self.bridge} never started")

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if "event=" in line:
                self._raw.append(line.strip())

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                end = self._seen(self._marker(), 10)
                if end is None:
                    raise RuntimeError(f"ovs-ofctl monitor on {self.bridge} lost the end marker")
                self.lines = [ln for ln in self._raw[self._start : end] if "02:fe:00:01:" not in ln]
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    def _flows(self) -> list[tuple[str, Flow]]:
        out = []
        for line in self.lines:
            flow = parse_flow(line)
            if flow is not None:
                out.append((line, flow))
        return out

    def mentioning(self, *keys: str) -> list[str]:
        """Events naming any of ``keys`` (a MAC, an IP, a VTEP) as a whole word: not
        inside a longer address (``set_field:KEY->``, ``=KEY,`` count)."""
        words = [re.compile(rf"(?<![\w.]){re.escape(k)}(?![\w.:])") for k in keys]
        return [line for line in self.lines if any(w.search(line) for w in words)]

    def touched(self, *keys: str) -> list[str]:
        """Events about the flows keyed by ``keys`` (added, modified or deleted)."""
        wanted = set(keys)
        return [line for line, flow in self._flows() if flow.key in wanted]

    def deleted(self, *keys: str) -> list[str]:
        return [line for line in self.touched(*keys) if "event=DELETED" in line]
