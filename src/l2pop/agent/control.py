"""A local control and status endpoint for agents: tiny HTTP/1.1 over ``asyncio.start_server``.

No web framework on purpose: an agent must stay small, and one process may host a whole swarm
of simulated agents, keyed by host name. JSON in, JSON out; errors use the server's shape,
``{"error": {"code", "message"}}``.

    GET  /healthz                                   {"ok": true}
    GET  /agents                                    [{host, connected, revision, digest,
                                                    last_error, errors, ...}], sorted by host;
                                                    errors: the networks the datapath fails
                                                    on ({network_id, vni, entry, message,
                                                    attempts}), as sent with the acks
    GET  /agents/{host}/tables                      what the datapath holds, read back:
                                                    {host, revision, digest, networks}
    GET  /agents/{host}/stats                       the agent's counters
    GET  /applied                                   every agent's (revision, monotonic) log
    GET  /trace                                     every agent's recent port and revision
                                                    events, [monotonic, event, subject,
                                                    detail] (``agent.stats.Trace``)
    GET  /agents/{host}/trace                       ... of one agent
    POST /agents/{host}/ports/{port_id}/unplug      simulate a VM's device going (only with
                                                    a datapath that has ``PortPlugging``,
                                                    e.g. memory; 409 otherwise)
    POST /agents/{host}/ports/{port_id}/plug        ... and coming back

Bind it to loopback: it has no authentication, and it can take a simulated port down.
``l2pop.testbed.faults`` extends it with fault-injection routes for the swarm.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from l2pop.agent.channel import Agent
from l2pop.datapath.abc import port_plugging
from l2pop.model import canonical, digest

log = logging.getLogger("l2pop.agent")

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
#: a keep-alive connection idle this long is closed
IDLE_TIMEOUT_S = 60.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    500: "Internal Server Error",
}

Reply = tuple[int, Any]  # status, JSON body


def error_reply(status: int, code: str, message: str) -> Reply:
    """An error in the server's shape."""
    return status, {"error": {"code": code, "message": message}}


def path_parts(path: str) -> list[str]:
    """The non-empty segments of a request path, query left out."""
    return [p for p in path.split("?", 1)[0].split("/") if p]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class ControlServer:
    """Serves ``agents`` (host name -> Agent; the mapping may grow while serving)."""

    def __init__(self, agents: Mapping[str, Agent], listen: str) -> None:
        self.agents = agents
        self.host, self.port = parse_address(listen)
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(
            self._client, self.host, self.port, limit=MAX_HEADER_BYTES
        )
        port: int = self._server.sockets[0].getsockname()[1]
        self.port = port
        log.info("control endpoint on %s:%d", self.host, port)
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- routing ----------------------------------------------------------------------

    async def handle(self, method: str, path: str) -> Reply:
        """The reply to one request; pure routing, testable without a socket."""
        parts = path_parts(path)
        if parts == ["healthz"]:
            return (200, {"ok": True}) if method == "GET" else error_reply(405, "method", "use GET")
        if parts == ["applied"] and method == "GET":
            # every agent's (revision, monotonic time) log at once: for benchmarks
            return 200, {h: list(a.stats.applied_log) for h, a in self.agents.items()}
        if parts == ["trace"] and method == "GET":
            return 200, {h: a.reconciler.trace.as_list() for h, a in self.agents.items()}
        if not parts or parts[0] != "agents":
            return error_reply(404, "not_found", f"no route {path}")
        if len(parts) == 1:
            if method != "GET":
                return error_reply(405, "method", "use GET")
            return 200, [self.agents[h].status() for h in sorted(self.agents)]

        agent = self.agents.get(parts[1])
        if agent is None:
            return error_reply(404, "not_found", f"no agent for host {parts[1]}")
        rest = parts[2:]
        if method == "GET" and rest == ["tables"]:
            return 200, await self._tables(agent)
        if method == "GET" and rest == ["stats"]:
            return 200, {"host": agent.host, **agent.stats.as_dict()}
        if method == "GET" and rest == ["trace"]:
            return 200, {"host": agent.host, "events": agent.reconciler.trace.as_list()}
        if method == "POST" and len(rest) == 3 and rest[0] == "ports":
            return await self._port(agent, rest[1], rest[2])
        if rest in (["tables"], ["stats"], ["trace"]) or (rest and rest[0] == "ports"):
            return error_reply(405, "method", f"{method} is not allowed on {path}")
        return error_reply(404, "not_found", f"no route {path}")

    async def _tables(self, agent: Agent) -> dict[str, Any]:
        # Read back from the datapath, off the event loop (a blocking one does I/O to dump).
        held = await asyncio.to_thread(agent.datapath.dump)
        applied = agent.reconciler.applied()
        return {
            "host": agent.host,
            "revision": applied[0] if applied else None,
            "digest": digest(held),
            "networks": canonical(held),
        }

    @staticmethod
    async def _port(agent: Agent, port_id: str, action: str) -> Reply:
        datapath = agent.datapath
        if action not in ("plug", "unplug"):
            return error_reply(404, "not_found", f"no port action {action}")
        plugging = port_plugging(datapath)
        if plugging is None:
            return error_reply(409, "unsupported", f"the {datapath.name} datapath has no {action}")
        do = plugging.unplug if action == "unplug" else plugging.plug
        if datapath.blocking:
            await asyncio.to_thread(do, port_id)
        else:
            do(port_id)
        return 200, {"host": agent.host, "port_id": port_id, "action": action}

    # -- HTTP/1.1 ---------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection (keep-alive) until the client closes it."""
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
                except (asyncio.IncompleteReadError, TimeoutError):
                    return  # clean close between requests, or an idle / stuck client
                except asyncio.LimitOverrunError:
                    await self._write(writer, 413, {"error": {"code": "too_large"}}, close=True)
                    return
                keep = await self._one(head, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _one(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; returns whether the connection stays open."""
        lines = head.decode("latin-1").split("\r\n")
        request = lines[0].split(" ")
        if len(request) != 3 or not request[2].startswith("HTTP/1."):
            await self._write(
                writer, *error_reply(400, "bad_request", "bad request line"), close=True
            )
            return False
        method, path, version = request
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await self._write(writer, *error_reply(413, "too_large", "body too large"), close=True)
            return False
        if int(length):
            await reader.readexactly(int(length))  # no route takes a body; drain it
        connection = headers.get("connection", "").lower()
        keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        try:
            status, body = await self.handle(method, path)
        except Exception:
            log.exception("control: %s %s failed", method, path)
            status, body = error_reply(500, "error", "internal error; see the agent log")
        await self._write(writer, status, body, close=not keep)
        return keep

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, status: int, body: Any, *, close: bool) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()
