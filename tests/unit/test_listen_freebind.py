"""Listen sockets are bound with IP_FREEBIND: the passive node of a pair listens on VIPs
its peer holds, ready the instant keepalived moves them here (docs/ha.md). Binding
sends nothing: no packet leaves this host."""

from __future__ import annotations

import socket

from medlb.config.units import HostPort
from medlb.proxy.listeners import bound_socket

#: In 198.18.0.0/15 (RFC 2544 benchmarking), on no interface of the test host.
ABSENT_ADDRESS = "198.18.0.77"


def test_a_listen_socket_binds_an_address_this_host_does_not_have_yet():
    for reuse_port in (False, True):  # one process, and the workers' SO_REUSEPORT groups
        sock = bound_socket("emr", HostPort(ABSENT_ADDRESS, 0), reuse_port=reuse_port)
        try:
            sock.listen(8)
            assert sock.getsockname()[0] == ABSENT_ADDRESS
            assert sock.getsockopt(socket.IPPROTO_IP, 15) == 1  # IP_FREEBIND
        finally:
            sock.close()
