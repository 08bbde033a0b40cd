"""Prometheus metrics (``/metrics``): requests, the agent channel, apply latency, and
gauges read at scrape time from the store, the hub and the sessions.

Every metric is listed with its type, labels, unit and meaning in ``docs/metrics.md``; the
names follow Prometheus' conventions (docs/adr/0027-metrics.md): base units in the name,
counters end in ``_total``, ``_info`` for the build. Every sample carries a ``replica``
label, the server process's replica name (added to its labels, which the exposition sorts
by name), so that the figures of replicas and workers behind one address stay apart. Some
figures are the store's, the same on every replica (``l2pop_store_revision``,
``l2pop_networks``, ``l2pop_hosts``, ``l2pop_ports``: aggregate them with ``max``), the
others this replica's own (``sum`` them).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import l2pop
from l2pop.server.channel import Channel
from l2pop.server.hub import Hub
from l2pop.server.routes import API_PREFIX
from l2pop.server.sessions import ChannelStats, SessionRegistry
from l2pop.store import Store

REVISION_HEADER = b"l2pop-revision"

#: histogram boundaries, in seconds, of every latency the server measures: 1 ms (a delta
#: applied by an idle agent on the same machine) to 30 s (a snapshot storm after a restart),
#: three per decade (1, 2.5, 5) so that a quantile is read within a factor of 2.5; beyond
#: 30 s only ``+Inf``, which an operator reads as "stuck" anyway
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: metric types whose ``_created`` samples ``ReplicaLabel`` drops (see there)
_CREATED_TYPES = frozenset({"counter", "histogram", "summary"})


class StateCollector(Collector):
    """Gauges computed when Prometheus scrapes (no bookkeeping on writes): the store's
    revision and counts, this replica's hub revision, and its hosts connected and in sync."""

    def __init__(self, store: Store, hub: Hub, sessions: SessionRegistry) -> None:
        self.store = store
        self.hub = hub
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # the hub first: it never passes the store, so store - hub is never negative
        hub_revision = self.hub.revision
        with self.store.read() as tx:
            revision = tx.revision()
            counts = tx.counts()
        yield GaugeMetricFamily(
            "l2pop_store_revision",
            "Last committed revision of the store (every replica reads the same)",
            revision,
        )
        yield GaugeMetricFamily(
            "l2pop_hub_revision",
            "Revision this replica's hub has read and fanned out to its agents; "
            "l2pop_store_revision minus this is the hub's lag",
            hub_revision,
        )
        yield GaugeMetricFamily("l2pop_networks", "Networks in the store", counts.networks)
        yield GaugeMetricFamily("l2pop_hosts", "Hosts registered in the store", counts.hosts)
        by_status = GaugeMetricFamily(
            "l2pop_ports", "Ports in the store by status", labels=["status"]
        )
        for status, count in counts.ports.items():
            by_status.add_metric([status.value], count)
        yield by_status
        yield GaugeMetricFamily(
            "l2pop_hosts_connected",
            "Hosts with a live agent session on this replica",
            self.sessions.count(),
        )
        yield GaugeMetricFamily(
            "l2pop_hosts_in_sync",
            "Hosts whose live session on this replica last acknowledged the digest the "
            "hub holds for them (host list's in_sync)",
            self.in_sync(),
        )

    def in_sync(self) -> int:
        """Live sessions here whose last ack's digest is the host's current digest: what
        ``Channel.host_status`` calls in sync, one dictionary look-up per session."""
        digest_of = self.hub.digest_of
        return sum(1 for s in self.sessions.live() if s.acked_digest == digest_of(s.host))


class GaugeCollector(Collector):
    """One gauge read from ``value`` at scrape time."""

    def __init__(self, name: str, documentation: str, value: Callable[[], int]) -> None:
        self.name, self.documentation, self.value = name, documentation, value

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, self.value())


class HubCollector(Collector):
    """The hub's counters (batches read, whole-store reloads) and the build's info."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "l2pop_hub_batches",
            "Batches of the change log this replica's hub read and fanned out",
            self.hub.batches,
        )
        yield CounterMetricFamily(
            "l2pop_hub_reloads",
            "Whole-store reloads of this replica's hub (its change log was truncated)",
            self.hub.reloads,
        )
        yield InfoMetricFamily(
            "l2pop_build", "The l2pop version this replica runs", {"version": l2pop.__version__}
        )


class ChannelCollector(Collector):
    """Agent-channel counters: messages and bytes sent by type, coalesced backlogs,
    resyncs, how sessions began, sessions refused or closed for a protocol violation."""

    def __init__(self, stats: ChannelStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        messages = CounterMetricFamily(
            "l2pop_channel_sent_messages", "Channel messages sent to agents", labels=["type"]
        )
        sent_bytes = CounterMetricFamily(
            "l2pop_channel_sent_bytes",
            "Channel bytes sent to agents (encoded JSON text)",
            labels=["type"],
        )
        for kind, count in sorted(self.stats.messages_sent.items()):
            messages.add_metric([kind], count)
        for kind, size in sorted(self.stats.bytes_sent.items()):
            sent_bytes.add_metric([kind], size)
        yield messages
        yield sent_bytes
        yield CounterMetricFamily(
            "l2pop_channel_coalesced_backlogs",
            "Slow-agent backlogs replaced by a snapshot",
            self.stats.coalesced,
        )
        yield CounterMetricFamily(
            "l2pop_channel_resyncs", "Snapshots asked for by agents (resync)", self.stats.resyncs
        )
        sessions = CounterMetricFamily(
            "l2pop_channel_session_starts",
            "Agent sessions by how they began: resumed from the agent's revision, or a "
            "snapshot because this replica's hub did not cover it",
            labels=["start"],
        )
        sessions.add_metric(["resume"], self.stats.resumes)
        sessions.add_metric(["snapshot_refused_resume"], self.stats.resumes_refused)
        yield sessions
        yield CounterMetricFamily(
            "l2pop_channel_refused_sessions",
            "Agent sessions refused because their host had too many being opened",
            self.stats.refused_sessions,
        )
        yield CounterMetricFamily(
            "l2pop_channel_protocol_violations",
            "Agent sessions closed because the agent broke the channel protocol",
            self.stats.protocol_violations,
        )


class ReplicaLabel(Collector):
    """Every metric of ``inner`` with a ``replica`` label added to each of its samples.

    Drops the ``_created`` samples prometheus_client adds to its own counters and
    histograms: in the text format they become a gauge per series (twice the series of
    every histogram child) holding the process's start time, which ``l2pop_build_info``
    and Prometheus' own counter-reset handling make redundant.
    """

    def __init__(self, inner: CollectorRegistry, replica: str) -> None:
        self.inner = inner
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        for metric in self.inner.collect():
            labelled = copy.copy(metric)
            drop_created = metric.type in _CREATED_TYPES
            labelled.samples = [
                sample._replace(labels={**sample.labels, "replica": self.replica})
                for sample in metric.samples
                if not (drop_created and sample.name.endswith("_created"))
            ]
            yield labelled


class ObserveMiddleware:
    """Pure ASGI middleware: request count and latency per route, and the ``L2pop-Revision``
    header on ``/v1`` answers. (Starlette's ``BaseHTTPMiddleware`` costs a task and a body
    copy per request, a measurable share of the server's CPU under churn.)"""

    def __init__(
        self,
        app: ASGIApp,
        requests: Counter,
        latency: Histogram,
        revision: Callable[[], int],
    ) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency
        self.revision = revision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        v1 = scope["path"].startswith(API_PREFIX + "/")

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if v1:
                    header = (REVISION_HEADER, str(self.revision()).encode())
                    message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.latency.labels(method, path).observe(time.perf_counter() - start)
            self.requests.labels(method, path, str(status)).inc()


@dataclass(frozen=True, slots=True)
class ServerMetrics:
    """The histograms other modules feed (``install_metrics`` makes them).

    ``agent_apply``: fed by the channel (``Channel.apply_latency``). ``port_activation``:
    "a port's ACTIVE status committed -> every member host applied it", for whoever
    measures that to ``observe(seconds)``; also ``app.state.activation_histogram``.
    """

    agent_apply: Histogram
    port_activation: Histogram


def install_metrics(
    app: FastAPI,
    store: Store,
    hub: Hub,
    channel: Channel,
    revision: Callable[[], int],
    *,
    replica: str,
    waits: Callable[[], int] = lambda: 0,
) -> ServerMetrics:
    """``/metrics`` and the middleware that counts requests; ``replica`` labels every
    sample; ``revision`` is the store revision the ``L2pop-Revision`` header states,
    ``waits`` how many revision waits are under way.

    Sets ``channel.apply_latency`` (``l2pop_agent_apply_seconds``) and
    ``app.state.activation_histogram`` (``l2pop_port_activation_seconds``, fed by its
    caller); returns both histograms, which ``app.state.metrics`` also holds.
    """
    registry = CollectorRegistry()
    requests = Counter(
        "l2pop_http_requests",
        "HTTP requests served, by route template (unmatched: no route) and status",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "l2pop_http_request_duration_seconds",
        "HTTP request latency, from the request's arrival to its answer's last byte",
        ["method", "route"],
        registry=registry,
        buckets=LATENCY_BUCKETS,
    )
    instruments = ServerMetrics(
        agent_apply=Histogram(
            "l2pop_agent_apply_seconds",
            "Seconds from this replica's hub hearing of a commit to an agent's ack of the "
            "batch ending with it: one observation per ack that advances the agent's "
            "revision without errors",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        ),
        port_activation=Histogram(
            "l2pop_port_activation_seconds",
            "Seconds from a port's ACTIVE status being committed to every member host "
            "having applied it",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        ),
    )
    registry.register(StateCollector(store, hub, channel.registry))
    registry.register(HubCollector(hub))
    registry.register(ChannelCollector(channel.stats))
    registry.register(
        GaugeCollector(
            "l2pop_revision_waits_in_flight",
            "Revision waits (GET /v1/revisions/{revision}?wait=, --wait) under way",
            waits,
        )
    )
    exposed = CollectorRegistry()
    exposed.register(ReplicaLabel(registry, replica))
    channel.apply_latency = instruments.agent_apply
    app.state.metrics_registry = exposed
    app.state.metrics = instruments
    app.state.activation_histogram = instruments.port_activation
    app.add_middleware(ObserveMiddleware, requests=requests, latency=latency, revision=revision)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)

    return instruments
