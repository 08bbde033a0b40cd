"""Racing creates and read-validate-writes spread over three replicas: exactly one wins, on
PostgreSQL (the lock is in the database, ADR 14)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from replica_harness import (
    REPLICAS,
    Trio,
)

pytestmark = pytest.mark.postgres

# -- 3. racing writes across replicas ---------------------------------------------------


def race(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def one_winner(answers: list[httpx.Response], ok: int, field_name: str) -> httpx.Response:
    statuses = sorted(a.status_code for a in answers)
    winners = [a for a in answers if a.status_code == ok]
    assert len(winners) == 1 and statuses.count(409) == len(answers) - 1, statuses
    for a in answers:
        if a.status_code == 409:
            error = a.json()["error"]
            assert error["code"] == "conflict" and error["field"] == field_name, error
    return winners[0]


RACERS = 20


def test_racing_writes_across_replicas_have_one_winner(bare_trio: Trio) -> None:
    t = bare_trio
    clients = [t.servers[REPLICAS[i % len(REPLICAS)]].client() for i in range(RACERS)]
    try:
        api = t.api("a")
        # the same VNI from 20 clients over 3 replicas
        answers = race(
            [
                lambda c=c, i=i: c.post("/v1/networks", json={"name": f"v{i}", "vni": 4242})
                for i, c in enumerate(clients)
            ]
        )
        won = one_winner(answers, 201, "vni").json()
        held = [n for n in t.api("b").networks() if n.vni == 4242]
        assert [n.id for n in held] == [won["id"]]

        # the same MAC in one network
        mac = "fa:16:3e:42:42:42"
        answers = race(
            [
                lambda c=c, i=i: c.post(
                    "/v1/ports",
                    json={
                        "network_id": t.blue,
                        "mac": mac,
                        "name": f"m{i}",
                        "fixed_ips": [f"198.19.4.{i + 1}"],
                    },
                )
                for i, c in enumerate(clients)
            ]
        )
        won = one_winner(answers, 201, "mac").json()
        held_ports = [p for p in t.api("c").ports() if p.mac == mac]
        assert [p.id for p in held_ports] == [won["id"]]
        # the losers left nothing behind: none of their IPs is taken
        taken = {ip for p in t.api("a").ports() for ip in p.fixed_ips}
        asked = {f"198.19.4.{i + 1}" for i in range(RACERS)}
        assert taken & asked == set(won["fixed_ips"]), taken & asked

        # read-validate-write: 20 ports of one network, each re-addressed to one IP at once
        ports = [
            api.create_port(t.green, name=f"r{i}", fixed_ips=[f"198.19.5.{i + 1}"]).id
            for i in range(RACERS)
        ]
        answers = race(
            [
                lambda c=c, p=p: c.patch(f"/v1/ports/{p}", json={"fixed_ips": ["198.19.6.1"]})
                for c, p in zip(clients, ports, strict=True)
            ]
        )
        won = one_winner(answers, 200, "fixed_ips").json()
        final = {p.id: p.fixed_ips for p in t.api("b").ports() if p.network_id == t.green}
        assert [p for p, ips in final.items() if "198.19.6.1" in ips] == [won["id"]]
        for i, p in enumerate(ports):  # the losers kept their own address
            if p != won["id"]:
                assert final[p] == [f"198.19.5.{i + 1}"], (p, final[p])

        # the same host name registered through every replica at once
        answers = race(
            [
                lambda c=c, i=i: c.post(
                    "/v1/hosts", json={"name": "dup", "vtep_ip": f"192.0.2.{100 + i}"}
                )
                for i, c in enumerate(clients)
            ]
        )
        one_winner(answers, 201, "name")
        assert [h.name for h in t.api("c").hosts()].count("dup") == 1
    finally:
        for c in clients:
            c.close()
