"""The tcp relay as a client sees it: ports, half-close, limits, timeouts."""

from __future__ import annotations

import shutil
import socket
import subprocess
import struct

import pytest

from helpers import (LOOPBACK, connect, consecutive_free_ports, free_port, free_ports, server, service, wait_until,
                     who_answers)


def test_multi_port_vip_forwards_to_the_port_the_client_hit(medlb, backends):
    """A server without a port gets the client's port: 127.0.0.1:P -> 127.0.0.2:P."""
    first = consecutive_free_ports(2)
    other = free_ports(1)[0]
    backends.start("VNA", [first, first + 1, other], host="127.0.0.2")
    vna = service("vna", [], [server("vna1", None, host="127.0.0.2")])
    vna["listen"] = [f"{LOOPBACK}:{first}-{first + 1}", f"{LOOPBACK}:{other}"]
    lb = medlb([vna])

    for port in (first, first + 1, other):
        sock, name = connect(port)
        assert name == "VNA"
        assert sock.getpeername()[1] == port
        sock.close()
    assert lb.service("vna")["listen"] == [f"{LOOPBACK}:{first}", f"{LOOPBACK}:{first + 1}", f"{LOOPBACK}:{other}"]


def test_half_close_lets_the_server_finish_its_answer(medlb, backends):
    vip, pa = free_ports(2)
    backends.start("A", pa)
    medlb([service("ris", vip, [server("A", pa)])])
    sock, _ = connect(vip)

    payload = b"x" * 300_000
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)  # the client is done sending, but still reads
    received = bytearray()
    while piece := sock.recv(65536):
        received += piece

    assert bytes(received) == payload
    sock.close()


def test_max_connections_refuses_cleanly_and_counts(medlb, backends):
    vip, pa = free_ports(2)
    backends.start("A", pa)
    lb = medlb([service("ris", vip, [server("A", pa)], limits={"max_connections": 3})])
    held = [connect(vip) for _ in range(3)]
    assert all(name == "A" for _, name in held)

    refused = socket.create_connection((LOOPBACK, vip), timeout=5)
    assert refused.recv(10) == b""  # closed at once, no data
    refused.close()

    assert lb.service("ris")["refused_connections"] == 1
    held[0][0].close()
    wait_until(lambda: lb.service("ris")["active_connections"] == 2, 5, what="a slot to free up")
    assert who_answers(vip) == "A"
    for sock, _ in held[1:]:
        sock.close()


def test_idle_connection_is_closed_after_idle_timeout(medlb, backends):
    vip, pa = free_ports(2)
    backends.start("A", pa)
    lb = medlb([service("ris", vip, [server("A", pa)], limits={"idle_timeout": "500ms"})])
    sock, _ = connect(vip)
    sock.settimeout(10)

    assert sock.recv(10) == b""  # medlb closed it; nothing was sent either way
    wait_until(lambda: lb.service("ris")["active_connections"] == 0, 5, what="the idle connection to be released")
    sock.close()


def stuck_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener with a full accept queue, and the connections that fill it. It drops
    new SYNs, so a connect to it hangs (until the queue has room again): the loopback
    stand-in for a server that vanished from the network."""
    stuck = socket.socket()
    stuck.bind((LOOPBACK, 0))
    stuck.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(stuck.getsockname())
        fillers.append(filler)
    return stuck, fillers


def test_connect_timeout_to_a_server_that_never_answers_moves_on(medlb, backends):
    vip, pa = free_ports(2)
    backends.start("A", pa)
    stuck, fillers = stuck_listener()
    lb = medlb([service("ris", vip, [server("stuck", stuck.getsockname()[1]), server("A", pa)],
                        health={"type": "none"}, limits={"connect_timeout": "300ms"})])
    try:
        answers = {who_answers(vip) for _ in range(4)}

        assert answers == {"A"}
        assert lb.server("ris", "stuck")["connect_failures"] >= 1
    finally:
        for sock in fillers + [stuck]:
            sock.close()


def test_a_client_aborted_while_its_server_connect_hangs_leaves_the_server_with_no_connection(medlb):
    vip = free_port()
    stuck, fillers = stuck_listener()  # medlb's connect hangs until the queue has room
    filler_ports = {filler.getsockname()[1] for filler in fillers}
    lb = medlb([service("ris", vip, [server("slow", stuck.getsockname()[1])], health={"type": "none"},
                        limits={"connect_timeout": "60s"})])
    accepted = []
    try:
        client = socket.create_connection((LOOPBACK, vip), timeout=10)
        wait_until(lambda: lb.server("ris", "slow")["active_connections"] == 1, 10, what="medlb to be connecting")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # aborted: a reset, not a half-close medlb would pass on
        wait_until(lambda: lb.service("ris")["active_connections"] == 0, 10, what="the client to be gone")

        # Make room: medlb's connect now completes (at its next SYN), for a client that left.
        stuck.settimeout(30)
        for _ in range(len(fillers) + 1):
            connection, peer = stuck.accept()
            accepted.append(connection)
            if peer[1] not in filler_ports:
                break
        assert accepted and accepted[-1].getpeername()[1] not in filler_ports, "medlb's connect never completed"

        wait_until(lambda: lb.server("ris", "slow")["active_connections"] == 0, 10,
                   what="the server's connection count to go back to 0")
    finally:
        for sock in fillers + accepted + [stuck]:
            sock.close()


def _kernel_sockets(filter_expression: str) -> list[str]:
    """`ss` lines (with timers) for the established sockets the filter selects."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", filter_expression], capture_output=True,
                         text=True, check=True)
    return [line for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) is not installed")
def test_relayed_connections_keep_tcp_keepalive_on_both_sides(medlb, backends):
    """A peer that vanishes without a FIN (power cut, cable) is found by TCP keepalive:
    medlb's socket to the client and its socket to the server both have it on."""
    vip, pa = free_ports(2)
    backends.start("A", pa)
    medlb([service("ris", vip, [server("A", pa)])])
    sock, name = connect(vip)
    assert name == "A"
    # medlb's side of the client connection (source port vip) and its connection to
    # the server (destination port pa); the test's and the backend's own sockets are
    # not selected.
    def both_keepalive() -> bool:
        lines = _kernel_sockets(f"( sport = :{vip} or dport = :{pa} )")
        return len(lines) == 2 and all("timer:(keepalive" in line for line in lines)

    wait_until(both_keepalive, 5, what="keepalive on both of medlb's sockets")
    sock.close()
