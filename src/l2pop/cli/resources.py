"""``l2pop network|port|host|fdb ...``: the REST resources from the command line.

Each handler makes the REST calls docs/design.md describes and prints the answer with
``l2pop.cli.output`` (``-o json``: exactly the server's JSON). ``NET`` arguments take a
network id or a network name; a name is resolved through ``GET /v1/networks`` and must
match exactly one network.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from l2pop.cli import output
from l2pop.cli.client import ApiClient, CliError, segment
from l2pop.cli.common import Context, api_command, client_options

ARP_MODES = ("neigh_suppress", "proxy", "off")
PORT_STATUSES = ("DOWN", "BUILD", "ACTIVE")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``network``, ``port``, ``host`` and ``fdb`` command groups."""
    _register_networks(subparsers)
    _register_ports(subparsers)
    _register_hosts(subparsers)
    _register_fdb(subparsers)


# -- helpers ----------------------------------------------------------------------------


def resolve_network(api: ApiClient, ref: str) -> str:
    """The id of network ``ref`` (an id or a name). Raises ``CliError`` if none or several.

    A UUID is taken as an id without asking the server (an unknown id then fails with
    the server's 404 on the actual call).
    """
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    matches = [n for n in api.get_all("/v1/networks") if n.get("name") == ref]
    if not matches:
        raise CliError(f"no network with id or name {ref!r}")
    if len(matches) > 1:
        ids = ", ".join(str(n.get("id")) for n in matches)
        raise CliError(f"network name {ref!r} is ambiguous ({ids}); give the id")
    return str(matches[0]["id"])


def network_names(api: ApiClient) -> dict[str, str]:
    """Network id -> name for table output; empty when the list cannot be read."""
    try:
        return {str(n["id"]): str(n.get("name") or n["id"]) for n in api.get_all("/v1/networks")}
    except (CliError, KeyError, TypeError):
        return {}


def _leaf(
    group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    return group.add_parser(name, help=help_text, description=help_text, parents=[client_options()])


def _group(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    group = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
    return group


def _show(ctx: Context, data: Any, render: Any, *extra: Any) -> None:
    if ctx.out.json:
        ctx.out.emit_json(data)
    else:
        render(ctx.out, data, *extra)


# -- networks ---------------------------------------------------------------------------


def _register_networks(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    group = _group(subparsers, "network", "manage networks")

    p = _leaf(group, "create", "create a network (VNI allocated when not given)")
    p.add_argument("--name", default="", help="network name")
    p.add_argument("--vni", type=int, help="VXLAN network identifier, 1..16777215")
    p.add_argument("--arp-suppression", choices=ARP_MODES, help="default neigh_suppress")
    p.set_defaults(func=api_command(_network_create))

    p = _leaf(group, "list", "list networks")
    p.set_defaults(func=api_command(_network_list))

    p = _leaf(group, "show", "show one network")
    p.add_argument("network", metavar="NET", help="network id or name")
    p.set_defaults(func=api_command(_network_show))

    p = _leaf(group, "set", "change a network's name or ARP suppression mode")
    p.add_argument("network", metavar="NET", help="network id or name")
    p.add_argument("--name", help="new name")
    p.add_argument("--arp-suppression", choices=ARP_MODES, help="new mode")
    p.set_defaults(func=api_command(_network_set))

    p = _leaf(group, "delete", "delete a network (refused while it has ports)")
    p.add_argument("network", metavar="NET", help="network id or name")
    p.set_defaults(func=api_command(_network_delete))


def _network_create(ctx: Context) -> None:
    a = ctx.args
    body: dict[str, Any] = {"name": a.name}
    if a.vni is not None:
        body["vni"] = a.vni
    if a.arp_suppression is not None:
        body["arp_suppression"] = a.arp_suppression
    _show(ctx, ctx.api.post("/v1/networks", body), output.network)


def _network_list(ctx: Context) -> None:
    _show(ctx, ctx.api.get_all("/v1/networks"), output.networks)


def _network_show(ctx: Context) -> None:
    net_id = resolve_network(ctx.api, ctx.args.network)
    _show(ctx, ctx.api.get(f"/v1/networks/{segment(net_id)}"), output.network)


def _network_set(ctx: Context) -> None:
    a = ctx.args
    body: dict[str, Any] = {}
    if a.name is not None:
        body["name"] = a.name
    if a.arp_suppression is not None:
        body["arp_suppression"] = a.arp_suppression
    if not body:
        raise CliError("nothing to change: give --name and/or --arp-suppression")
    net_id = resolve_network(ctx.api, a.network)
    _show(ctx, ctx.api.patch(f"/v1/networks/{segment(net_id)}", body), output.network)


def _network_delete(ctx: Context) -> None:
    net_id = resolve_network(ctx.api, ctx.args.network)
    ctx.api.delete(f"/v1/networks/{segment(net_id)}")
    ctx.out.message(f"Deleted network {net_id}.")


# -- ports ------------------------------------------------------------------------------


def _register_ports(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = _group(subparsers, "port", "manage ports and their host binding")

    p = _leaf(group, "create", "create a port (MAC generated when not given)")
    p.add_argument("--network", required=True, metavar="NET", help="network id or name")
    p.add_argument("--ip", dest="ips", action="append", metavar="IP", help="fixed IP (repeat)")
    p.add_argument("--mac", help="unicast MAC address")
    p.add_argument("--name", help="port name")
    p.add_argument("--host", help="bind to this host at once")
    p.set_defaults(func=api_command(_port_create))

    p = _leaf(group, "list", "list ports, optionally filtered")
    p.add_argument("--network", metavar="NET", help="only ports of this network (id or name)")
    p.add_argument("--host", help="only ports bound to this host")
    p.add_argument("--status", type=str.upper, choices=PORT_STATUSES, help="only this status")
    p.set_defaults(func=api_command(_port_list))

    p = _leaf(group, "show", "show one port")
    p.add_argument("port", metavar="ID", help="port id")
    p.set_defaults(func=api_command(_port_show))

    p = _leaf(group, "bind", "bind a port to a host (or migrate it)")
    p.add_argument("port", metavar="ID", help="port id")
    p.add_argument("--host", required=True, help="host name")
    p.set_defaults(func=api_command(_port_bind))

    p = _leaf(group, "unbind", "unbind a port from its host")
    p.add_argument("port", metavar="ID", help="port id")
    p.set_defaults(func=api_command(_port_unbind))

    p = _leaf(group, "set", "change a port's fixed IPs, MAC or name")
    p.add_argument("port", metavar="ID", help="port id")
    ips = p.add_mutually_exclusive_group()
    ips.add_argument("--ip", dest="ips", action="append", metavar="IP", help="replace fixed IPs")
    ips.add_argument("--no-ip", action="store_true", help="remove every fixed IP")
    p.add_argument("--mac", help="new MAC (refused while the port is ACTIVE)")
    p.add_argument("--name", help="new name")
    p.set_defaults(func=api_command(_port_set))

    p = _leaf(group, "delete", "delete a port")
    p.add_argument("port", metavar="ID", help="port id")
    p.set_defaults(func=api_command(_port_delete))


def _port_path(port_id: str) -> str:
    return f"/v1/ports/{segment(port_id)}"


def _port_create(ctx: Context) -> None:
    a = ctx.args
    body: dict[str, Any] = {
        "network_id": resolve_network(ctx.api, a.network),
        "fixed_ips": a.ips or [],
    }
    for key in ("mac", "name", "host"):
        if getattr(a, key) is not None:
            body[key] = getattr(a, key)
    _show(ctx, ctx.api.post("/v1/ports", body), output.port)


def _port_list(ctx: Context) -> None:
    a = ctx.args
    params: dict[str, str] = {}
    if a.network:
        params["network_id"] = resolve_network(ctx.api, a.network)
    if a.host:
        params["host"] = a.host
    if a.status:
        params["status"] = a.status
    items = ctx.api.get_all("/v1/ports", params)
    if ctx.out.json:
        ctx.out.emit_json(items)
    else:
        output.ports(ctx.out, items, network_names(ctx.api))


def _port_show(ctx: Context) -> None:
    _show(ctx, ctx.api.get(_port_path(ctx.args.port)), output.port)


def _port_bind(ctx: Context) -> None:
    _show(ctx, ctx.api.patch(_port_path(ctx.args.port), {"host": ctx.args.host}), output.port)


def _port_unbind(ctx: Context) -> None:
    _show(ctx, ctx.api.patch(_port_path(ctx.args.port), {"host": None}), output.port)


def _port_set(ctx: Context) -> None:
    a = ctx.args
    body: dict[str, Any] = {}
    if a.ips or a.no_ip:
        body["fixed_ips"] = a.ips or []
    if a.mac is not None:
        body["mac"] = a.mac
    if a.name is not None:
        body["name"] = a.name
    if not body:
        raise CliError("nothing to change: give --ip/--no-ip, --mac and/or --name")
    _show(ctx, ctx.api.patch(_port_path(a.port), body), output.port)


def _port_delete(ctx: Context) -> None:
    ctx.api.delete(_port_path(ctx.args.port))
    ctx.out.message(f"Deleted port {ctx.args.port}.")


# -- hosts ------------------------------------------------------------------------------


def _register_hosts(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = _group(subparsers, "host", "manage hosts (hypervisors with one VTEP)")

    p = _leaf(group, "create", "register a host; prints its agent token once")
    p.add_argument("name", metavar="NAME", help="host name (as the agent's --host)")
    p.add_argument("--vtep-ip", required=True, metavar="IP", help="the host's VTEP IP")
    p.set_defaults(func=api_command(_host_create))

    p = _leaf(group, "list", "list hosts with their sync state")
    p.set_defaults(func=api_command(_host_list))

    p = _leaf(group, "show", "show one host")
    p.add_argument("name", metavar="NAME", help="host name")
    p.set_defaults(func=api_command(_host_show))

    p = _leaf(group, "delete", "delete a host")
    p.add_argument("name", metavar="NAME", help="host name")
    p.set_defaults(func=api_command(_host_delete))


def _host_create(ctx: Context) -> None:
    body = {"name": ctx.args.name, "vtep_ip": ctx.args.vtep_ip}
    _show(ctx, ctx.api.post("/v1/hosts", body), output.host_created, ctx.server)


def _host_list(ctx: Context) -> None:
    items = ctx.api.get_all("/v1/hosts")
    _show(ctx, items, output.hosts, ctx.api.revision)


def _host_show(ctx: Context) -> None:
    item = ctx.api.get(f"/v1/hosts/{segment(ctx.args.name)}")
    _show(ctx, item, output.host, ctx.api.revision)


def _host_delete(ctx: Context) -> None:
    ctx.api.delete(f"/v1/hosts/{segment(ctx.args.name)}")
    ctx.out.message(f"Deleted host {ctx.args.name}.")


# -- desired state ----------------------------------------------------------------------


def _register_fdb(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = _group(subparsers, "fdb", "inspect the desired forwarding state of a host")
    p = _leaf(group, "show", "flood list, FDB and neighbour table the host must hold")
    p.add_argument("--host", required=True, help="host name")
    p.set_defaults(func=api_command(_fdb_show))


def _fdb_show(ctx: Context) -> None:
    state = ctx.api.get(f"/v1/hosts/{segment(ctx.args.host)}/fdb")
    if ctx.out.json:
        ctx.out.emit_json(state)
    else:
        output.fdb(ctx.out, state, network_names(ctx.api))
