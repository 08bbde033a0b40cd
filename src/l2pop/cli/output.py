"""Rendering for the command line: rich tables, or the server's JSON as is.

Contract:
- ``-o json`` prints exactly the JSON the server answered (a list or an object),
  indented, on stdout, so scripts can pipe it to ``jq``. Nothing else goes to stdout.
- ``-o table`` (default) prints rich tables. Values are shown literally (never read as
  rich markup); ``None`` shows as ``-``. When stdout is not a terminal and ``COLUMNS`` is
  unset, the width is wide enough that ids and addresses are never wrapped, and no
  colour codes are written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from l2pop.cli.common import OUTPUT_FORMATS
from l2pop.console import make_console

_STATUS_STYLE = {"ACTIVE": "green", "BUILD": "yellow", "DOWN": "red"}


def cell(value: Any) -> Text:
    """One table cell: ``None`` or ``""`` -> ``-``, bools -> yes/no, lists one per line."""
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes", style="green") if value else Text("no", style="red")
    if isinstance(value, list | tuple):
        return Text("\n".join(str(item) for item in value)) if value else Text("-", style="dim")
    return Text(str(value))


def status_cell(status: Any) -> Text:
    return Text(str(status), style=_STATUS_STYLE.get(str(status), ""))


def ago(value: Any, now: datetime | None = None) -> str:
    """``2024-05-01T12:00:00Z`` -> ``12s ago``; ``-`` for ``None``; unparsable as is."""
    if not value:
        return "-"
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def lag(applied_revision: Any, server_revision: int | None) -> str:
    """Server revision minus the host's applied revision; ``-`` when either is unknown."""
    if server_revision is None or not isinstance(applied_revision, int):
        return "-"
    return str(max(server_revision - applied_revision, 0))


class Output:
    """Where and how a command prints its result (see the module contract)."""

    def __init__(self, mode: str = "table", console: Console | None = None) -> None:
        if mode not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {mode!r}")
        self.mode = mode
        self.console = console if console is not None else make_console()

    @property
    def json(self) -> bool:
        return self.mode == "json"

    def emit_json(self, data: Any) -> None:
        """Print the server's JSON answer unchanged (nothing for an empty answer)."""
        if data is None:
            return
        self.console.file.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        self.console.file.flush()

    def message(self, text: str) -> None:
        """A plain line for table mode (e.g. ``Deleted network x.``); silent in json mode."""
        if not self.json:
            self.console.print(Text(text))

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        title: str | None = None,
        caption: str | None = None,
    ) -> None:
        table = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            title=title,
            caption=caption,
            title_justify="left",
            caption_justify="left",
        )
        for name in columns:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(*(v if isinstance(v, Text) else cell(v) for v in row))
        self.console.print(table)

    def details(self, pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
        """A two-column field/value table for one object."""
        self.table(("field", "value"), pairs, title=title)


# -- resources --------------------------------------------------------------------------

NETWORK_COLUMNS = ("id", "name", "vni", "encap", "arp_suppression", "revision")


def networks(out: Output, items: list[Mapping[str, Any]]) -> None:
    out.table(NETWORK_COLUMNS, ([n.get(c) for c in NETWORK_COLUMNS] for n in items))


def network(out: Output, item: Mapping[str, Any]) -> None:
    keys = ("id", "name", "vni", "encap", "arp_suppression", "created_at", "revision")
    out.details((k, item.get(k)) for k in keys)


def ports(out: Output, items: list[Mapping[str, Any]], names: Mapping[str, str]) -> None:
    """Port rows; ``names`` maps network ids to names (the id is shown when unknown)."""
    rows = (
        [
            p.get("id"),
            p.get("name"),
            names.get(str(p.get("network_id")), p.get("network_id")),
            p.get("mac"),
            p.get("fixed_ips"),
            p.get("host"),
            status_cell(p.get("status")),
        ]
        for p in items
    )
    out.table(("id", "name", "network", "mac", "fixed_ips", "host", "status"), rows)


def port(out: Output, item: Mapping[str, Any]) -> None:
    keys = ("id", "name", "network_id", "mac", "fixed_ips", "host", "status", "revision")
    out.details(
        (k, status_cell(item.get(k)) if k == "status" else item.get(k))
        for k in (*keys, "created_at")
    )


HOST_COLUMNS = (
    "name",
    "vtep_ip",
    "connected",
    "replica",
    "last_seen",
    "applied_revision",
    "lag",
    "in_sync",
    "errors",
    "datapath",
    "encaps",
)


def encaps_cell(item: Mapping[str, Any]) -> str | None:
    """The encaps the host's agent announced, comma-separated (None: never connected)."""
    encaps = item.get("encaps")
    return None if encaps is None else ",".join(map(str, encaps))


def error_count(item: Mapping[str, Any]) -> Text:
    """How many networks the host's agent fails to program (red when any)."""
    errors = item.get("errors") or []
    return Text(str(len(errors)), style="red" if errors else "dim")


def error_lines(item: Mapping[str, Any]) -> list[str]:
    """One line per failing network: ``network (vni V): entry: message (attempt N)``."""
    lines = []
    for e in item.get("errors") or []:
        entry = f"{e.get('entry')}: " if e.get("entry") else ""
        attempts = e.get("attempts")
        tail = f" (attempt {attempts})" if isinstance(attempts, int) and attempts > 1 else ""
        lines.append(f"{e.get('network_id')} (vni {e.get('vni')}): {entry}{e.get('message')}{tail}")
    return lines


def hosts(out: Output, items: list[Mapping[str, Any]], server_revision: int | None) -> None:
    rows = (
        [
            h.get("name"),
            h.get("vtep_ip"),
            h.get("connected"),
            h.get("replica"),
            ago(h.get("last_seen")),
            h.get("applied_revision"),
            lag(h.get("applied_revision"), server_revision),
            h.get("in_sync"),
            error_count(h),
            h.get("datapath"),
            encaps_cell(h),
        ]
        for h in items
    )
    caption = f"server revision: {server_revision if server_revision is not None else '-'}"
    out.table(HOST_COLUMNS, rows, caption=caption)


def host(out: Output, item: Mapping[str, Any], server_revision: int | None) -> None:
    last_seen = item.get("last_seen")
    out.details(
        [
            ("name", item.get("name")),
            ("vtep_ip", item.get("vtep_ip")),
            ("connected", item.get("connected")),
            ("replica", item.get("replica")),
            ("last_seen", f"{last_seen} ({ago(last_seen)})" if last_seen else None),
            ("applied_revision", item.get("applied_revision")),
            ("server_revision", server_revision),
            ("lag", lag(item.get("applied_revision"), server_revision)),
            ("in_sync", item.get("in_sync")),
            ("errors", error_lines(item)),
            ("datapath", item.get("datapath")),
            ("encaps", encaps_cell(item)),
            ("created_at", item.get("created_at")),
        ]
    )


def host_created(out: Output, item: Mapping[str, Any], server_url: str) -> None:
    """The new host, then its agent token in a panel that says it is shown only once."""
    out.details([(k, item.get(k)) for k in ("name", "vtep_ip", "created_at")])
    token = str(item.get("token", ""))
    console = out.console
    console.print()
    console.print(
        Text.assemble(
            ("Agent token for host ", "bold"),
            (str(item.get("name")), "bold cyan"),
            (": shown once, the server keeps only a hash. Store it now:", "bold"),
        )
    )
    console.print()
    console.print(Text(f"    {token}", style="bold yellow"))
    console.print()
    console.print(Text("Start the agent with:", style="dim"))
    console.print(
        Text(
            f"    l2pop agent --server {server_url} --host {item.get('name')} "
            f"--local-ip {item.get('vtep_ip')} --token {token}"
        )
    )


def fdb(out: Output, state: Mapping[str, Any], names: Mapping[str, str]) -> None:
    """The desired state of one host: a header, then per network flood/fdb/neigh."""
    header = Text()
    header.append("host ", style="dim")
    header.append(str(state.get("host")), style="bold")
    header.append("  revision ", style="dim")
    header.append(str(state.get("revision")))
    header.append("  digest ", style="dim")
    header.append(str(state.get("digest")))
    out.console.print(header)
    nets = state.get("networks") or []
    if not nets:
        out.console.print(Text("(not a member of any network)", style="dim"))
    for net in nets:
        net_id = str(net.get("network_id"))
        title = Text()
        title.append("\nnetwork ", style="dim")
        title.append(names.get(net_id, net_id), style="bold")
        if net_id in names:
            title.append(f" ({net_id})", style="dim")
        title.append(f"  vni {net.get('vni')}", style="")
        if net.get("encap"):
            title.append(f"  encap {net.get('encap')}")
        if net.get("arp_suppression"):
            title.append(f"  arp_suppression {net.get('arp_suppression')}")
        out.console.print(title)
        flood = net.get("flood") or []
        out.console.print(Text("flood: " + (", ".join(map(str, flood)) if flood else "-")))
        entries = net.get("fdb") or []
        if entries:
            rows = ([e.get("mac"), e.get("vtep")] for e in entries)
            out.table(("mac", "vtep"), rows, title="fdb")
        else:
            out.console.print(Text("fdb: -"))
        neigh = net.get("neigh") or []
        if neigh:
            out.table(("ip", "mac"), ([e.get("ip"), e.get("mac")] for e in neigh), title="neigh")
        else:
            out.console.print(Text("neigh: -"))


# -- status -------------------------------------------------------------------------------


def status(out: Output, status: Mapping[str, Any], server: str) -> None:
    """``l2pop status`` for table output (``GET /v1/status``)."""
    hosts = status["hosts"]
    replicas = ", ".join(status["replicas"])
    behind = status["revision"] - status["hub_revision"]
    hub = "" if behind <= 0 else f" (this server's hub {behind} behind)"
    ports = "  ".join(f"{s} {n}" for s, n in sorted(status["ports"].items()))
    synced = hosts["in_sync"] == hosts["total"]
    out.console.print(
        Text.assemble(
            ("l2pop ", "bold"),
            f"{status['version']} at {server}, replica {status['replica']} (live: {replicas})\n",
            f"revision {status['revision']}{hub}\n",
            "hosts ",
            (f"{hosts['in_sync']} / {hosts['total']} in sync", "green" if synced else "yellow"),
            f", {hosts['connected']} connected\n",
            f"networks {status['networks']}   ports {ports}",
        )
    )
    if status["lagging"]:
        out.table(
            ("host", "connected", "in sync", "applied", "lag", "replica", "last seen", "errors"),
            (_lagging_row(h) for h in status["lagging"]),
            title="most lagging hosts",
        )
    else:
        out.console.print(Text("every host is connected and in sync", style="green"))
    out.table(
        ("time", "event", "subject", "revision", "members applied"),
        (_event_row(e) for e in reversed(status["events"])),
        title="last events",
    )


def _lagging_row(host: Mapping[str, Any]) -> Sequence[Any]:
    return (
        host["name"],
        Text("yes", "green") if host["connected"] else Text("no", "red"),
        Text("yes", "green") if host["in_sync"] else Text("no", "yellow"),
        host["applied_revision"],
        host["lag"],
        host["replica"],
        ago(host["last_seen"]) if host["last_seen"] else None,
        host["errors"],
    )


def _event_row(event: Mapping[str, Any]) -> Sequence[Any]:
    subject = " ".join(
        str(part)
        for part in (
            event["mac"],
            event["network"] and f"in {event['network']}",
            event["host"] and f"on {event['host']}",
            event["detail"],
        )
        if part
    )
    return (event["time"][11:23], event["kind"], subject, event["revision"], _applied(event))


def _applied(event: Mapping[str, Any]) -> Text | None:
    if event["applied_ms"] is not None:
        n = event["hosts"]
        return Text(f"{n} host{'s' * (n != 1)} in {event['applied_ms']} ms", "green")
    if event["behind"]:
        return Text(f"never by {', '.join(event['behind'])}", "red")
    if event["hosts"]:
        return Text(f"waiting for {', '.join(event['pending'])}", "yellow")
    return None
