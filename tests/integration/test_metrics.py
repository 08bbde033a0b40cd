"""``/metrics`` of a real server, checked mechanically (docs/metrics.md, docs/adr/0027):

* the exposition of a server with connected agents and some churn follows Prometheus'
  naming rules (every family ``l2pop_...``, HELP on all, counters ``_total``, histograms with
  a unit, no duplicates) and passes ``promtool check metrics``;
* the operator's gauges say what happened (hosts connected and in sync, store and hub
  revision, build info), agent acks are timed in ``l2pop_agent_apply_seconds``, and the
  port activation histogram takes ``observe`` from whoever measures activations;
* every PromQL expression of the Grafana dashboard (``contrib/grafana/l2pop.json``) names
  only metrics this server exposes, is valid PromQL (``promtool check rules`` on a rules
  file with one recording rule per expression), and the dashboard is importable.

promtool comes from Debian's prometheus package, extracted by ``scripts/bootstrap`` into
``.venv/bin``; the tests that need it skip without it, except in CI (``CI=true``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from channel_harness import Cluster
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import l2pop
from l2pop.server.app import create_app
from l2pop.store import open_store
from l2pop.testbed.postgres import ThrowawayPostgres

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "l2pop.json"
NAME = re.compile(r"^l2pop_[a-z0-9_]+$")
#: what a histogram's or summary's name ends with: the base unit it measures
UNIT_SUFFIXES = ("_seconds", "_bytes")
#: Grafana's variables, replaced by what a query may hold there (promtool knows none)
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${replica}": ".*",
    "$replica": ".*",
}
HOSTS = 3


@dataclass(frozen=True)
class Scrape:
    """One ``/metrics`` answer and what the server did before it."""

    text: str
    version: str


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ],
)
def scrape(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scrape]:
    """A server with three agents, two networks, ports created, activated, changed and
    deleted, a revision waited for and a request to no route; then one scrape. On each
    engine (PostgreSQL: the hub hears of commits through ``PostgresFeed``)."""
    with contextlib.ExitStack() as stack:
        db_url = None
        if request.param == "postgresql":
            server: ThrowawayPostgres = request.getfixturevalue("postgres")
            db_url = stack.enter_context(server.database("l2pop_metrics"))
        cluster = Cluster(tmp_path_factory.mktemp("metrics"), db_url)
        stack.callback(cluster.close)
        yield churn_and_scrape(cluster)


def churn_and_scrape(cluster: Cluster) -> Scrape:
    """Drive ``cluster`` through the churn ``scrape`` describes; its ``/metrics`` then."""
    hosts = cluster.add_hosts(HOSTS)
    cluster.start_agents(hosts)
    blue, red = cluster.network("blue"), cluster.network("red", arp_suppression="proxy")
    ports = [cluster.port(blue, h, f"198.19.0.{i}") for i, h in enumerate(hosts, 1)]
    ports.append(cluster.port(red, hosts[0], "203.0.113.1"))
    for port in ports:
        cluster.wait_status(port, "ACTIVE")
    for i in range(5):
        cluster.patch_port(ports[0], fixed_ips=[f"198.19.1.{i + 1}"])
    cluster.ok(cluster.http.delete(f"/v1/ports/{ports[-1]}"))
    revision = int(cluster.http.get("/healthz").json()["revision"])
    assert cluster.api.wait_revision(revision, timeout=10).complete
    assert cluster.http.get("/v1/no-such-route").status_code == 404
    cluster.converge()
    return Scrape(cluster.api.metrics(), l2pop.__version__)


def families(text: str) -> dict[str, Any]:
    """Name -> family, as prometheus_client parses the exposition (which raises on any
    malformed line); a counter's family is named without ``_total`` there."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def declared(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The ``# TYPE`` and ``# HELP`` lines, name -> type and name -> text, exactly as
    exposed (the parser renames counters, so the ``_total`` rule is checked here); a name
    declared twice fails."""
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    for line in text.splitlines():
        for kind, into in (("TYPE", types), ("HELP", helps)):
            prefix = f"# {kind} "
            if line.startswith(prefix):
                name, _, rest = line[len(prefix) :].partition(" ")
                assert name not in into, f"{kind} of {name} twice"
                into[name] = rest
    return types, helps


def exposed_names(text: str) -> set[str]:
    """Every name a query may select: each family's and each sample's (``_total``,
    ``_bucket``, ``_sum``, ``_count``)."""
    found = families(text)
    return set(found) | {s.name for f in found.values() for s in f.samples}


def promtool() -> Path:
    """The promtool next to this Python (``.venv/bin``, where bootstrap puts it) or on
    PATH; skips when there is none, fails instead in CI."""
    beside = Path(sys.prefix) / "bin" / "promtool"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("promtool")
    if found:
        return Path(found)
    why = f"promtool not found at {beside} nor on PATH: scripts/bootstrap extracts it there"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


# -- the exposition ---------------------------------------------------------------------


def test_exposition_follows_the_naming_rules(scrape: Scrape) -> None:
    types, helps = declared(scrape.text)
    assert types, "no metric at all"
    for name, kind in types.items():
        assert NAME.match(name), f"{name}: not l2pop_[a-z0-9_]+"
        assert helps.get(name, "").strip(), f"{name}: no HELP text"
        if kind == "counter":
            assert name.endswith("_total"), f"counter {name} does not end in _total"
        else:
            assert not name.endswith("_total"), f"{kind} {name} ends in _total"
        if kind in ("histogram", "summary"):
            assert name.endswith(UNIT_SUFFIXES), f"{kind} {name} has no unit suffix"
        assert not name.endswith("_created"), f"{name}: _created series are not exposed"
        if name.endswith("_info"):
            assert kind == "gauge", f"{name}: an info metric is a gauge"
    assert set(helps) == set(types), "HELP without TYPE"
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for family in families(scrape.text).values():
        assert family.documentation, family.name
        for sample in family.samples:
            assert NAME.match(sample.name), sample.name
            assert sample.labels.get("replica"), f"{sample.name}: no replica label"
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in seen, f"duplicate series {key}"
            seen.add(key)
            if sample.name.endswith("_info"):
                assert sample.value == 1.0, sample


def test_promtool_check_metrics(scrape: Scrape) -> None:
    done = subprocess.run(
        [str(promtool()), "check", "metrics"],
        input=scrape.text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_operator_gauges_and_apply_latency(scrape: Scrape) -> None:
    found = families(scrape.text)

    def value(sample: str, **labels: str) -> float:
        return sum(
            s.value
            for f in found.values()
            for s in f.samples
            if s.name == sample and labels.items() <= s.labels.items()
        )

    assert value("l2pop_hosts") == HOSTS
    assert value("l2pop_hosts_connected") == HOSTS
    assert value("l2pop_hosts_in_sync") == HOSTS
    assert value("l2pop_store_revision") == value("l2pop_hub_revision") > 0
    assert value("l2pop_ports", status="ACTIVE") == HOSTS
    assert value("l2pop_revision_waits_in_flight") == 0
    assert value("l2pop_hub_batches_total") > 0
    (build,) = found["l2pop_build_info"].samples
    assert build.labels["version"] == scrape.version
    requests = found["l2pop_http_requests"].samples
    assert any(s.labels["route"] == "unmatched" and s.labels["status"] == "404" for s in requests)
    # every agent acked deltas of commits heard while it was connected
    apply = {s.name: s for s in found["l2pop_agent_apply_seconds"].samples if "le" not in s.labels}
    count = apply["l2pop_agent_apply_seconds_count"].value
    assert count >= HOSTS, count
    assert 0 < apply["l2pop_agent_apply_seconds_sum"].value / count < 5.0
    buckets = [
        s.value for s in found["l2pop_agent_apply_seconds"].samples if s.name.endswith("_bucket")
    ]
    assert buckets == sorted(buckets) and buckets[-1] == count  # cumulative, +Inf = count
    assert value("l2pop_port_activation_seconds_count") >= 1  # the activations above


def test_activation_histogram_takes_observations(tmp_path: Path) -> None:
    """``app.state.activation_histogram`` is what the activation measurement feeds; the
    channel's apply hook is the apply histogram (in-process app, no lifespan needed)."""
    store = open_store(f"sqlite:///{tmp_path / 'l2pop.db'}")
    try:
        app = create_app(store, "token", replica="r1")
        app.state.activation_histogram.observe(0.3)
        assert app.state.channel.apply_latency is app.state.metrics.agent_apply
        text = generate_latest(app.state.metrics_registry).decode()
    finally:
        store.close()
    count = 'l2pop_port_activation_seconds_count{replica="r1"} 1.0'
    bucket = 'l2pop_port_activation_seconds_bucket{le="0.5",replica="r1"} 1.0'
    below = 'l2pop_port_activation_seconds_bucket{le="0.25",replica="r1"} 0.0'
    assert count in text and bucket in text and below in text, text


# -- the Grafana dashboard ----------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(board: dict[str, Any]) -> list[str]:
    """Every panel target's PromQL expression."""
    return [t["expr"] for p in panels(board) for t in p.get("targets", [])]


def variable_queries(board: dict[str, Any]) -> list[str]:
    """The templating variables' queries (Grafana's ``label_values(...)``, not PromQL)."""
    out = []
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        out.append(query["query"] if isinstance(query, dict) else str(query))
    return out


def test_dashboard_is_importable() -> None:
    board = dashboard()
    (source,) = board["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    everything = [*panels(board), *board["templating"]["list"]]
    for item in everything:
        if item.get("type") == "row":
            continue
        assert item["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, item
        for target in item.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", target
        if "gridPos" in item:
            grid = item["gridPos"]
            assert grid["x"] + grid["w"] <= 24, item["title"]
    assert board["uid"] and board["title"]


def test_dashboard_names_only_exposed_metrics(scrape: Scrape) -> None:
    exposed = exposed_names(scrape.text)
    board = dashboard()
    queries = expressions(board) + variable_queries(board)
    assert len(queries) > 20
    for query in queries:
        names = set(re.findall(r"\bl2pop_[a-z0-9_]+\b", query))
        assert names, f"no l2pop metric in {query!r}"
        assert names <= exposed, f"{query!r} names {sorted(names - exposed)}, not exposed"


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, query in enumerate(expressions(dashboard())):
        expr = query
        for variable, stand_in in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, stand_in)
        assert "$" not in expr, f"a Grafana variable left in {query!r}"
        rules.append({"record": f"l2pop:dashboard_expr:{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    # JSON is YAML: no YAML library needed to write a rules file promtool reads
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
    done = subprocess.run(
        [str(promtool()), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rules)} rules found" in done.stdout, done.stdout
