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

    def refused() -> bool:
        # The signal and the echo race on medlb's loop: on a loaded machine the
        # listener may close a moment after the echo came back, so wait for it.
        try:
            socket.create_connection((LOOPBACK, vip), timeout=2).close()
            return False
        except OSError:
            return True

    wait_until(refused, 10, what="medlb to stop accepting new connections")
    assert echo(sock) == b"ping\n"  # the established connection still works
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
