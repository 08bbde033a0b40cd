"""``l2pop network|port|host|fdb ...``: the REST resources from the command line.

Each handler makes its REST calls through ``l2pop.client.Client`` and prints the answer with
``l2pop.cli.output``: the answer models dumped as JSON (``model_dump(mode="json")``, which is
the server's JSON, since the server encodes the same ``l2pop.wire`` models), printed as is for
``-o json`` and rendered as tables otherwise. ``NET`` arguments take a network id or a network
name; a name is resolved through the network list (``Client.networks``) and must match
exactly one network.

``--wait [--timeout S]`` on the writes (``network create|set|delete``, ``port
create|bind|unbind|set|delete``): once the answer is printed, wait for its revision
(``L2pop-Revision``) to be applied by every host that had to hear it
(``Client.wait_revision``, docs/adr/0024). The wait's line (``revision 42 applied by 3 hosts
in 12 ms``) goes to stderr in every output mode, so stdout stays the answer (valid JSON with
``-o json``); a wait that runs out is ``error: ...`` naming the hosts behind, exit code 1
(the write itself is done).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from l2pop.cli.common import CliError, Context, api_command, client_options

if TYPE_CHECKING:
    from pydantic import BaseModel

    from l2pop.client import Client

ARP_MODES = ("neigh_suppress", "proxy", "off")
ENCAPS = ("vxlan", "gre")
PORT_STATUSES = ("DOWN", "BUILD", "ACTIVE")
#: ``--timeout`` of ``--wait`` when not given, seconds (the server allows at most 60)
WAIT_TIMEOUT_S = 10.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``network``, ``port``, ``host`` and ``fdb`` command groups."""
    _register_networks(subparsers)
    _register_ports(subparsers)
    _register_hosts(subparsers)
    _register_fdb(subparsers)


# -- helpers ----------------------------------------------------------------------------


def resolve_network(api: Client, ref: str) -> str:
    """The id of network ``ref`` (an id or a name). Raises ``CliError`` if none or several.

    A UUID is taken as an id without asking the server (an unknown id then fails with
    the server's 404 on the actual call).
    """
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    matches = [n for n in api.networks() if n.name == ref]
    if not matches:
        raise CliError(f"no network with id or name {ref!r}")
    if len(matches) > 1:
        ids = ", ".join(n.id for n in matches)
        raise CliError(f"network name {ref!r} is ambiguous ({ids}); give the id")
    return matches[0].id


def network_names(api: Client) -> dict[str, str]:
    """Network id -> name for table output; empty when the list cannot be read."""
    from l2pop.client import ClientError

    try:
        return {n.id: n.name or n.id for n in api.networks()}
    except ClientError:
        return {}


def as_json(answer: BaseModel | Sequence[BaseModel]) -> Any:
    """An answer model (or a list of them) as the server's JSON: ``-o json`` prints it, the
    tables read it."""
    if isinstance(answer, Sequence):
        return [item.model_dump(mode="json") for item in answer]
    return answer.model_dump(mode="json")


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


def _show(ctx: Context, answer: Any, render: Any, *extra: Any) -> None:
    data = as_json(answer)
    if ctx.out.json:
        ctx.out.emit_json(data)
    else:
        render(ctx.out, data, *extra)
    _wait_if_asked(ctx)


def _writes(*parsers: argparse.ArgumentParser) -> None:
    """``--wait`` and ``--timeout`` on each write command."""
    for p in parsers:
        p.add_argument(
            "--wait",
            action="store_true",
            help="then wait until every host that must hear the change has applied it",
        )
        p.add_argument(
            "--timeout",
            type=float,
            metavar="S",
            help=f"with --wait: give up after S seconds (default {WAIT_TIMEOUT_S:g}, at most 60)",
        )


def _wait_if_asked(ctx: Context) -> None:
    """With ``--wait``: wait for the revision of the last answer (see the module notes)."""
    from l2pop.client import ApiError

    a = ctx.args
    if not getattr(a, "wait", False):
        if getattr(a, "timeout", None) is not None:
            raise CliError("--timeout is for --wait")
        return
    timeout = WAIT_TIMEOUT_S if a.timeout is None else a.timeout
    if not 0 < timeout <= 60:
        raise CliError(f"--timeout must be more than 0 and at most 60 seconds, not {timeout:g}")
    revision = ctx.api.revision
    if revision is None:
        raise CliError("the server's answer named no revision: cannot wait for it")
    start = time.monotonic()
    try:
        reached = ctx.api.wait_revision(revision, timeout)
    except ApiError as exc:
        if exc.status == 504:
            raise CliError(f"the write is done (revision {revision}), but {exc.detail}") from None
        raise
    took = round((time.monotonic() - start) * 1000)
    count = len(reached.hosts)
    hosts = "1 host" if count == 1 else f"{count} hosts"
    print(f"revision {revision} applied by {hosts} in {took} ms", file=sys.stderr)


# -- networks ---------------------------------------------------------------------------


def _register_networks(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    group = _group(subparsers, "network", "manage networks")

    p = _leaf(group, "create", "create a network (VNI allocated when not given)")
    p.add_argument("--name", default="", help="network name")
    p.add_argument("--vni", type=int, help="VXLAN network identifier, 1..16777215")
    p.add_argument("--arp-suppression", choices=ARP_MODES, help="default neigh_suppress")
    p.add_argument(
        "--encap",
        choices=ENCAPS,
        help="how it crosses the underlay, fixed for its life; the VNI is the GRE key "
        "(default vxlan)",
    )
    p.set_defaults(func=api_command(_network_create))
    _writes(p)

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
    _writes(p)

    p = _leaf(group, "delete", "delete a network (refused while it has ports)")
    p.add_argument("network", metavar="NET", help="network id or name")
    p.set_defaults(func=api_command(_network_delete))
    _writes(p)


def _network_create(ctx: Context) -> None:
    from l2pop.cli import output

    a = ctx.args
    made = ctx.api.create_network(
        name=a.name, vni=a.vni, arp_suppression=a.arp_suppression, encap=a.encap
    )
    _show(ctx, made, output.network)


def _network_list(ctx: Context) -> None:
    from l2pop.cli import output

    _show(ctx, ctx.api.networks(), output.networks)


def _network_show(ctx: Context) -> None:
    from l2pop.cli import output

    net_id = resolve_network(ctx.api, ctx.args.network)
    _show(ctx, ctx.api.network(net_id), output.network)


def _network_set(ctx: Context) -> None:
    from l2pop.cli import output

    a = ctx.args
    changes = _given(name=a.name, arp_suppression=a.arp_suppression)
    if not changes:
        raise CliError("nothing to change: give --name and/or --arp-suppression")
    net_id = resolve_network(ctx.api, a.network)
    _show(ctx, ctx.api.update_network(net_id, **changes), output.network)


def _network_delete(ctx: Context) -> None:
    net_id = resolve_network(ctx.api, ctx.args.network)
    ctx.api.delete_network(net_id)
    ctx.out.message(f"Deleted network {net_id}.")
    _wait_if_asked(ctx)


def _given(**options: Any) -> dict[str, Any]:
    """The options given on the command line (not None): the fields a ``set`` changes; the
    client leaves the others out of its PATCH."""
    return {key: value for key, value in options.items() if value is not None}


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
    _writes(p)

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
    _writes(p)

    p = _leaf(group, "unbind", "unbind a port from its host")
    p.add_argument("port", metavar="ID", help="port id")
    p.set_defaults(func=api_command(_port_unbind))
    _writes(p)

    p = _leaf(group, "set", "change a port's fixed IPs, MAC or name")
    p.add_argument("port", metavar="ID", help="port id")
    ips = p.add_mutually_exclusive_group()
    ips.add_argument("--ip", dest="ips", action="append", metavar="IP", help="replace fixed IPs")
    ips.add_argument("--no-ip", action="store_true", help="remove every fixed IP")
    p.add_argument("--mac", help="new MAC (refused while the port is ACTIVE)")
    p.add_argument("--name", help="new name")
    p.set_defaults(func=api_command(_port_set))
    _writes(p)

    p = _leaf(group, "delete", "delete a port")
    p.add_argument("port", metavar="ID", help="port id")
    p.set_defaults(func=api_command(_port_delete))
    _writes(p)


def _port_create(ctx: Context) -> None:
    from l2pop.cli import output

    a = ctx.args
    network_id = resolve_network(ctx.api, a.network)
    made = ctx.api.create_port(network_id, fixed_ips=a.ips, mac=a.mac, name=a.name, host=a.host)
    _show(ctx, made, output.port)


def _port_list(ctx: Context) -> None:
    from l2pop.cli import output

    a = ctx.args
    network_id = resolve_network(ctx.api, a.network) if a.network else None
    items = as_json(ctx.api.ports(network_id=network_id, host=a.host or None, status=a.status))
    if ctx.out.json:
        ctx.out.emit_json(items)
    else:
        output.ports(ctx.out, items, network_names(ctx.api))


def _port_show(ctx: Context) -> None:
    from l2pop.cli import output

    _show(ctx, ctx.api.port(ctx.args.port), output.port)


def _port_bind(ctx: Context) -> None:
    from l2pop.cli import output

    _show(ctx, ctx.api.update_port(ctx.args.port, host=ctx.args.host), output.port)


def _port_unbind(ctx: Context) -> None:
    from l2pop.cli import output

    _show(ctx, ctx.api.update_port(ctx.args.port, host=None), output.port)


def _port_set(ctx: Context) -> None:
    from l2pop.cli import output

    a = ctx.args
    fixed_ips = (a.ips or []) if a.ips or a.no_ip else None
    changes = _given(fixed_ips=fixed_ips, mac=a.mac, name=a.name)
    if not changes:
        raise CliError("nothing to change: give --ip/--no-ip, --mac and/or --name")
    _show(ctx, ctx.api.update_port(a.port, **changes), output.port)


def _port_delete(ctx: Context) -> None:
    ctx.api.delete_port(ctx.args.port)
    ctx.out.message(f"Deleted port {ctx.args.port}.")
    _wait_if_asked(ctx)


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
    from l2pop.cli import output

    made = ctx.api.create_host(ctx.args.name, ctx.args.vtep_ip)
    _show(ctx, made, output.host_created, ctx.server)


def _host_list(ctx: Context) -> None:
    from l2pop.cli import output

    items = ctx.api.hosts()
    _show(ctx, items, output.hosts, ctx.api.revision)


def _host_show(ctx: Context) -> None:
    from l2pop.cli import output

    item = ctx.api.host(ctx.args.name)
    _show(ctx, item, output.host, ctx.api.revision)


def _host_delete(ctx: Context) -> None:
    ctx.api.delete_host(ctx.args.name)
    ctx.out.message(f"Deleted host {ctx.args.name}.")


# -- desired state ----------------------------------------------------------------------


def _register_fdb(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = _group(subparsers, "fdb", "inspect the desired forwarding state of a host")
    p = _leaf(group, "show", "flood list, FDB and neighbour table the host must hold")
    p.add_argument("--host", required=True, help="host name")
    p.set_defaults(func=api_command(_fdb_show))


def _fdb_show(ctx: Context) -> None:
    from l2pop.cli import output

    state = as_json(ctx.api.host_fdb(ctx.args.host))
    if ctx.out.json:
        ctx.out.emit_json(state)
    else:
        output.fdb(ctx.out, state, network_names(ctx.api))
