"""SIGTERM drains: established connections finish, new ones are not accepted."""

from __future__ import annotations

import signal
import socket

from helpers import echo, LOOPBACK, connect, free_ports, server, service, wait_until


def test_sigterm_lets_established_connections_finish_then_exits_0(medlb, backends):
    vip, pa = free_ports(2)
    backends.start("A", pa)
    lb = medlb([service("ris", vip, [server("A", pa)])], stop_timeout="30s")
    sock, _ = connect(vip)

    lb.signal(signal.SIGTERM)

    assert echo(sock) == b"ping\n"
    # The echo can complete before medlb's stop task has run: wait until the listener
    # is closed, or the kernel's backlog still accepts the "new" connection.
    wait_until(lambda: "listener_closed" in lb.log(), 10, what="medlb to close its listener")
    try:
        refused = socket.create_connection((LOOPBACK, vip), timeout=2)
        refused.close()
        accepted_new = True
    except OSError:
        accepted_new = False
    assert not accepted_new
    sock.close()
    assert lb.proc is not None and lb.proc.wait(15) == 0
    assert "stopped aborted_connections=0" in lb.log()


def test_sigterm_closes_what_is_left_after_stop_timeout(medlb, backends):
    vip, pa = free_ports(2)
    backends.start("A", pa)
    lb = medlb([service("ris", vip, [server("A", pa)])], stop_timeout="500ms")
    sock, _ = connect(vip)
    sock.settimeout(10)

    lb.signal(signal.SIGTERM)

    assert lb.proc is not None and lb.proc.wait(15) == 0
    assert sock.recv(10) == b""
    assert "stopped aborted_connections=1" in lb.log()
