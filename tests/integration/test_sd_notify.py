"""medlb under systemd (`Type=notify`): READY=1 once every listener is bound and the
first checks have run, a one-line STATUS=, and a refused reload reported in both
STATUS= and the log (the journal). The test plays systemd's part: it binds the
datagram socket and hands it over in NOTIFY_SOCKET, as systemd does."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from helpers import connect, free_ports, server, service, wait_until


class NotifySocket:
    """What systemd listens on: one datagram per sd_notify call, KEY=VALUE lines."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def next(self, timeout: float) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536).decode()
        message = dict(line.split("=", 1) for line in data.splitlines() if line)
        self.messages.append(message)
        return message

    def until(self, predicate, timeout: float) -> dict[str, str]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.01, deadline - time.monotonic()))
            if predicate(message):
                return message

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    listener = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))  # medlb's process inherits it
    yield listener
    listener.close()


def test_ready_comes_once_listeners_are_bound_and_first_checks_ran(medlb, backends, notify_socket):
    vip, a, b = free_ports(3)
    backends.start("A", a)  # B is down: its first check must have run before READY
    lb = medlb([service("pacs", vip, [server("A", a), server("B", b)],
                        health={"type": "tcp", "interval": "1s", "timeout": "500ms", "rise": 2, "fall": 2})],
               start=False)
    lb.start(wait=False)

    ready = notify_socket.until(lambda m: m.get("READY") == "1", 30)

    _, greeting = connect(vip)  # bound before READY
    assert greeting == "A"
    assert "1 of 2 servers up" in ready["STATUS"], ready
    assert ready.get("MAINPID") == str(lb.proc.pid)
    assert lb.server("pacs", "B")["health"] == "down"


def test_status_follows_health_and_a_refused_reload_is_reported(medlb, backends, notify_socket):
    vip, a, b = free_ports(3)
    backends.start("A", a)
    backends.start("B", b)
    lb = medlb([service("pacs", vip, [server("A", a), server("B", b)])], start=False)
    lb.start(wait=False)
    assert "2 of 2 servers up" in notify_socket.until(lambda m: m.get("READY") == "1", 30)["STATUS"]

    backends.kill("B")
    assert notify_socket.until(lambda m: "1 of 2 servers up" in m.get("STATUS", ""), 10)

    good = dict(lb.config)
    bad = {**good, "services": [{**good["services"][0], "scheduler": "fastest"}]}
    lb.write_config(bad)
    lb.signal(signal.SIGHUP)
    refused = notify_socket.until(lambda m: "reload refused" in m.get("STATUS", ""), 10)
    assert "scheduler" in refused["STATUS"] and "running the previous config" in refused["STATUS"], refused
    assert wait_until(lambda: "reload_refused" in lb.log(), 5, what="the refusal in the log")

    lb.write_config(good)
    lb.signal(signal.SIGHUP)
    reloaded = notify_socket.until(lambda m: "reloaded" in m.get("STATUS", ""), 10)
    assert "1 service" in reloaded["STATUS"], reloaded

