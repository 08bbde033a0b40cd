"""Prometheus metrics: request counts and latency, plus store gauges read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from l2pop.server.desired import count_ports_by_status
from l2pop.server.sessions import SessionRegistry
from l2pop.store import Store


class StoreCollector(Collector):
    """Gauges computed from the store when Prometheus scrapes (no bookkeeping on writes)."""

    def __init__(self, store: Store, sessions: SessionRegistry) -> None:
        self.store = store
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.store.read() as tx:
            revision = tx.revision()
            networks = len(tx.list_networks())
            hosts = len(tx.list_hosts())
            ports = count_ports_by_status(tx)
        yield GaugeMetricFamily("l2pop_revision", "Last committed store revision", revision)
        yield GaugeMetricFamily("l2pop_networks", "Networks", networks)
        yield GaugeMetricFamily("l2pop_hosts", "Registered hosts", hosts)
        yield GaugeMetricFamily(
            "l2pop_hosts_connected", "Hosts with a live agent session", self.sessions.count()
        )
        by_status = GaugeMetricFamily("l2pop_ports", "Ports by status", labels=["status"])
        for status, count in ports.items():
            by_status.add_metric([status.value], count)
        yield by_status


class ChannelCollector(Collector):
    """Agent-channel counters: messages and bytes sent by type, coalesced backlogs."""

    def __init__(self, stats: Mapping[str, int]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        messages = CounterMetricFamily(
            "l2pop_channel_messages_sent", "Channel messages sent to agents", labels=["type"]
        )
        sent_bytes = CounterMetricFamily(
            "l2pop_channel_bytes_sent", "Channel bytes sent to agents", labels=["type"]
        )
        for key, value in sorted(self.stats.items()):
            if key.startswith("sent_"):
                messages.add_metric([key.removeprefix("sent_")], value)
            elif key.startswith("bytes_"):
                sent_bytes.add_metric([key.removeprefix("bytes_")], value)
        yield messages
        yield sent_bytes
        yield CounterMetricFamily(
            "l2pop_channel_coalesced",
            "Slow-agent backlogs replaced by a snapshot",
            self.stats.get("coalesced", 0),
        )
        yield CounterMetricFamily(
            "l2pop_channel_resyncs", "Resyncs requested by agents", self.stats.get("resyncs", 0)
        )


def install_metrics(
    app: FastAPI, store: Store, sessions: SessionRegistry, channel_stats: Mapping[str, int]
) -> None:
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
    app.state.metrics_registry = registry

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        latency.labels(request.method, path).observe(time.perf_counter() - start)
        requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
