"""``l2pop status``: the whole deployment on one screen (``GET /v1/status``).

Server(s) and revision, hosts in sync out of all, the hosts furthest behind, networks,
ports by status and the last events with the time their member hosts took to apply them.
``-o json`` prints the server's answer unchanged.
"""

from __future__ import annotations

import argparse

from l2pop.cli.common import Context, api_command, client_options


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "status",
        help="the whole deployment on one screen",
        description="Servers, revision, hosts in sync, the most lagging hosts, networks, "
        "ports by status and the last events.",
        parents=[client_options()],
    )
    p.set_defaults(func=api_command(_status))


def _status(ctx: Context) -> None:
    answer = ctx.api.status().model_dump(mode="json")
    if ctx.out.json:
        ctx.out.emit_json(answer)
        return
    from l2pop.cli import output  # rich: only once there is something to print

    output.status(ctx.out, answer, ctx.server)
