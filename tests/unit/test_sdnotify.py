"""``l2pop.sdnotify``: datagrams to ``NOTIFY_SOCKET`` (paths and abstract names) and the
relay the ``--workers`` supervisor collects its workers' readiness with."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2pop import sdnotify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    assert sdnotify.notify("READY=1", {}) is False


def test_a_message_reaches_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert sdnotify.notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_a_message_reaches_an_abstract_socket() -> None:
    name = f"l2pop-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert sdnotify.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


def test_an_unusable_socket_is_reported_not_raised(tmp_path: Path) -> None:
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1"}) is False
    assert sdnotify.socket_address("relative") is None


def test_the_relay_knows_which_processes_are_ready() -> None:
    relay = sdnotify.Relay()
    try:
        assert relay.ready_pids() == set()
        code = "from l2pop import sdnotify; sdnotify.notify('STATUS=x'); sdnotify.ready()"
        env = {**os.environ, **relay.environ(), "PYTHONPATH": os.pathsep.join(sys.path)}
        child = subprocess.Popen([sys.executable, "-c", code], env=env)
        assert child.wait(60) == 0
        deadline = time.monotonic() + 5
        while not relay.ready_pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert relay.ready_pids() == {child.pid}  # from the kernel's credentials
    finally:
        relay.close()
