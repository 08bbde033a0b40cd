"""``l2pop server --workers N`` (ADR 23): one real supervisor process on a throwaway
PostgreSQL, its workers serving one address through ``SO_REUSEPORT``. Fresh connections
reach every worker (each names its replica in ``/healthz`` and labels its ``/metrics``); a
write through the address reaches every worker's hub; a worker killed with ``kill -9`` is
restarted while the address keeps serving; SIGTERM to the supervisor (or its ``kill -9``)
leaves no worker behind. Bad ``--workers`` values and SQLite are refused before any child
starts."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from l2pop.testbed.netns import kill_pid, pid_alive
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.testbed.process import ServerProcess, free_port

WORKERS = 2
BASE = "ctl"
REPLICAS = {f"{BASE}/w{i}" for i in range(WORKERS)}
#: a worker killed -9 is restarted after the first backoff (0.5 s) plus its start-up
RESTART_BOUND = 20.0
STARTED = re.compile(r"worker w(\d+) pid (\d+) started")


class Supervised(ServerProcess):
    """``l2pop server --workers 2 --replica ctl``; the workers' pids from its log."""

    def __init__(self, url: str, log_path: Path) -> None:
        args = ("--workers", str(WORKERS), "--replica", BASE)
        super().__init__(url, log_path=log_path, extra_args=args)
        self.log = log_path

    def worker_pids(self) -> dict[int, int]:
        """The pid of the latest start of each worker index, from the supervisor's log."""
        pids: dict[int, int] = {}
        for index, pid in STARTED.findall(self.log.read_text()):
            pids[int(index)] = int(pid)
        return pids

    def all_pids(self) -> set[int]:
        return {int(pid) for _, pid in STARTED.findall(self.log.read_text())}

    def is_our_worker(self, pid: int) -> bool:
        """``pid`` is still a worker of this supervisor (not a reused pid)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"--worker-of" in cmdline and str(self.pid).encode() in cmdline

    def healthz(self) -> dict[str, object]:
        """``/healthz`` over a connection of its own: the kernel picks the worker."""
        r = httpx.get(self.url + "/healthz", timeout=5.0, headers={"Connection": "close"})
        r.raise_for_status()
        return dict(r.json())

    def replicas_answering(self, tries: int = 60) -> set[str]:
        return {str(self.healthz()["replica"]) for _ in range(tries)}

    def wait_all_answer(self, timeout: float = RESTART_BOUND) -> None:
        deadline = time.monotonic() + timeout
        while (seen := self.replicas_answering(20)) != REPLICAS:
            assert time.monotonic() < deadline, f"only {seen} answer after {timeout}s"
            time.sleep(0.1)

    def cleanup(self) -> None:
        """Stop the supervisor; then SIGKILL any of its workers still there (a safety net
        for a failed test: by their pids, and only while they are still its workers)."""
        try:
            self.stop(timeout=40)
        finally:
            for pid in self.all_pids():
                if self.is_our_worker(pid):
                    kill_pid(pid, signal.SIGKILL)


@pytest.fixture
def supervised(postgres: ThrowawayPostgres, tmp_path: Path) -> Iterator[Supervised]:
    with postgres.database("l2pop_workers") as url:
        server = Supervised(url, tmp_path / "server.log")
        try:
            server.start()
            server.wait_all_answer()
            yield server
        finally:
            server.cleanup()


def wait_gone(pids: set[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while left := {pid for pid in pids if pid_alive(pid)}:
        assert time.monotonic() < deadline, f"pids {left} still there after {timeout}s"
        time.sleep(0.05)


@pytest.mark.postgres
def test_fresh_connections_reach_every_worker_and_a_write_reaches_them_all(
    supervised: Supervised,
) -> None:
    s = supervised
    assert s.replicas_answering() == REPLICAS
    labels: set[str] = set()
    for _ in range(60):
        text = httpx.get(s.url + "/metrics", headers={"Connection": "close"}).text
        for family in text_string_to_metric_families(text):
            if family.name.startswith("l2pop_"):
                labels |= {sample.labels["replica"] for sample in family.samples}
    assert labels == REPLICAS  # every l2pop sample is labelled, with one of the two

    api = s.api()
    try:
        made = api.create_network(name="blue")
        deadline = time.monotonic() + 5
        behind = set(REPLICAS)
        while behind:  # every worker's hub follows the commit (ADR 21), whoever made it
            health = s.healthz()
            if int(str(health["revision"])) >= made.revision:
                behind.discard(str(health["replica"]))
            assert time.monotonic() < deadline, f"{behind} not at revision {made.revision}"
    finally:
        api.close()
    for _ in range(20):  # and every worker lists it, each over a connection of its own
        api = s.api()
        try:
            assert [n.name for n in api.networks()] == ["blue"]
        finally:
            api.close()


@pytest.mark.postgres
def test_a_killed_worker_is_restarted_while_the_address_serves_on(
    supervised: Supervised,
) -> None:
    s = supervised
    before = s.worker_pids()
    assert sorted(before) == list(range(WORKERS))
    victim = before[0]
    assert s.is_our_worker(victim)
    os.kill(victim, signal.SIGKILL)  # the pid our supervisor started, checked just above
    deadline = time.monotonic() + 5
    while f"pid {victim} killed by SIGKILL" not in s.log.read_text():
        assert time.monotonic() < deadline, "the supervisor did not notice the death"
        time.sleep(0.02)
    # the dead worker's socket is closed: every new connection reaches the survivor
    answered = [s.healthz()["replica"] for _ in range(30)]
    assert set(answered) <= REPLICAS
    s.wait_all_answer()  # ... until the restarted w0 answers too
    after = s.worker_pids()
    assert after[0] != victim and after[1] == before[1]
    assert s.is_our_worker(after[0])
    assert "restarting it in" in s.log.read_text()


@pytest.mark.postgres
def test_sigterm_to_the_supervisor_stops_every_worker(supervised: Supervised) -> None:
    s = supervised
    pids = set(s.worker_pids().values())
    assert len(pids) == WORKERS
    start = time.monotonic()
    s.stop(timeout=40)
    assert s.proc is not None and s.proc.returncode == 0
    wait_gone(pids, timeout=1)  # reaped by the supervisor before it exited
    print(f"SIGTERM -> supervisor and {WORKERS} workers gone in {time.monotonic() - start:.2f}s")
    with pytest.raises(httpx.TransportError):
        httpx.get(s.url + "/healthz", timeout=2)


@pytest.mark.postgres
def test_workers_end_with_a_supervisor_killed_9(supervised: Supervised) -> None:
    s = supervised
    pids = set(s.worker_pids().values())
    s.kill()  # no shutdown code runs in the supervisor: the kernel tells the workers
    wait_gone(pids, timeout=15)


def start_refused(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "l2pop", "server", "--listen", f"127.0.0.1:{free_port()}"]
    return subprocess.run(
        [*cmd, *args], check=False, capture_output=True, text=True, timeout=30, cwd=tmp_path
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_workers_on_sqlite_are_refused_at_start(tmp_path: Path) -> None:
    db = tmp_path / "l2pop.db"
    line = one_error_line(start_refused(tmp_path, "--db", f"sqlite:///{db}", "--workers", "2"))
    assert "--workers 2 needs PostgreSQL" in line
    assert not db.exists()  # refused before touching anything


@pytest.mark.parametrize("workers", ["0", "-1", "65"])
def test_a_worker_count_out_of_range_is_refused(tmp_path: Path, workers: str) -> None:
    nowhere = "postgresql://nobody@127.0.0.1:1/nothing"  # checked before any connection
    line = one_error_line(start_refused(tmp_path, "--db", nowhere, f"--workers={workers}"))
    assert "--workers must be 1 to 64" in line


def test_bad_options_are_reported_once_before_any_worker_starts(tmp_path: Path) -> None:
    nowhere = "postgresql://nobody@127.0.0.1:1/nothing"
    done = start_refused(tmp_path, "--db", nowhere, "--workers", "2", "--tls-cert", "c.pem")
    assert "--tls-cert and --tls-key go together" in one_error_line(done)
    long_name = "r" * 126  # fits alone, not with /w1
    done = start_refused(tmp_path, "--db", nowhere, "--workers", "2", "--replica", long_name)
    assert "its /wN suffix included" in one_error_line(done)


def test_an_address_in_use_is_reported_once(tmp_path: Path) -> None:
    nowhere = "postgresql://nobody@127.0.0.1:1/nothing"
    with socket.socket() as taken:  # bound without SO_REUSEPORT: no worker may join it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "l2pop", "server", "--db", nowhere, "--workers", "2"]
        done = subprocess.run(
            [*cmd, "--listen", f"127.0.0.1:{port}"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert "cannot listen on 127.0.0.1" in one_error_line(done)
