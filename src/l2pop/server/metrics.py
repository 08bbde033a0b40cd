"""Prometheus metrics: request counts and latency, plus store gauges read at scrape time.

Every sample carries a ``replica`` label, the server process's replica name (added to
its labels, which the exposition sorts by name), so that the figures of replicas and workers
behind one address stay apart.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from l2pop.server.routes import API_PREFIX
from l2pop.server.sessions import ChannelStats, SessionRegistry
from l2pop.store import Store

REVISION_HEADER = b"l2pop-revision"


class StoreCollector(Collector):
    """Gauges computed from the store when Prometheus scrapes (no bookkeeping on writes)."""

    def __init__(self, store: Store, sessions: SessionRegistry) -> None:
        self.store = store
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.store.read() as tx:
            revision = tx.revision()
            counts = tx.counts()
        yield GaugeMetricFamily("l2pop_revision", "Last committed store revision", revision)
        yield GaugeMetricFamily("l2pop_networks", "Networks", counts.networks)
        yield GaugeMetricFamily("l2pop_hosts", "Registered hosts", counts.hosts)
        yield GaugeMetricFamily(
            "l2pop_hosts_connected", "Hosts with a live agent session", self.sessions.count()
        )
        by_status = GaugeMetricFamily("l2pop_ports", "Ports by status", labels=["status"])
        for status, count in counts.ports.items():
            by_status.add_metric([status.value], count)
        yield by_status


class GaugeCollector(Collector):
    """One gauge read from ``value`` at scrape time."""

    def __init__(self, name: str, documentation: str, value: Callable[[], int]) -> None:
        self.name, self.documentation, self.value = name, documentation, value

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, self.value())


class ChannelCollector(Collector):
    """Agent-channel counters: messages and bytes sent by type, coalesced backlogs."""

    def __init__(self, stats: ChannelStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        messages = CounterMetricFamily(
            "l2pop_channel_messages_sent", "Channel messages sent to agents", labels=["type"]
        )
        sent_bytes = CounterMetricFamily(
            "l2pop_channel_bytes_sent", "Channel bytes sent to agents", labels=["type"]
        )
        for kind, count in sorted(self.stats.messages_sent.items()):
            messages.add_metric([kind], count)
        for kind, size in sorted(self.stats.bytes_sent.items()):
            sent_bytes.add_metric([kind], size)
        yield messages
        yield sent_bytes
        yield CounterMetricFamily(
            "l2pop_channel_coalesced",
            "Slow-agent backlogs replaced by a snapshot",
            self.stats.coalesced,
        )
        yield CounterMetricFamily(
            "l2pop_channel_resyncs", "Resyncs requested by agents", self.stats.resyncs
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


class ReplicaLabel(Collector):
    """Every metric of ``inner`` with a ``replica`` label added to each of its samples."""

    def __init__(self, inner: CollectorRegistry, replica: str) -> None:
        self.inner = inner
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        for metric in self.inner.collect():
            labelled = copy.copy(metric)
            labelled.samples = [
                sample._replace(labels={**sample.labels, "replica": self.replica})
                for sample in metric.samples
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


def install_metrics(
    app: FastAPI,
    store: Store,
    sessions: SessionRegistry,
    channel_stats: ChannelStats,
    revision: Callable[[], int],
    *,
    replica: str,
    waits: Callable[[], int] = lambda: 0,
) -> None:
    """``/metrics`` and the middleware that counts requests; ``replica`` labels every
    sample; ``waits`` is how many revision waits are under way."""
    registry = CollectorRegistry()
    requests = Counter(
        "l2pop_http_requests",
        "HTTP requests served",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "l2pop_http_request_seconds",
        "HTTP request latency",
        ["method", "route"],
        registry=registry,
    )
    registry.register(StoreCollector(store, sessions))
    registry.register(ChannelCollector(channel_stats))
    registry.register(GaugeCollector("l2pop_revision_waits", "Revision waits under way", waits))
    exposed = CollectorRegistry()
    exposed.register(ReplicaLabel(registry, replica))
    app.state.metrics_registry = exposed
    app.add_middleware(ObserveMiddleware, requests=requests, latency=latency, revision=revision)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)
