"""A pair's VIPs are bound with IP_FREEBIND: the passive node listens on VIPs its peer
holds, ready the instant keepalived moves them here (docs/ha.md). Any other address
must be on this host, so a mistyped listen address is refused at start instead of
listening for nobody. Binding sends nothing: no packet leaves this host."""

from __future__ import annotations

import socket

import pytest

from medlb.config.units import HostPort
from medlb.proxy.listeners import BindError, bound_socket

#: In 198.18.0.0/15 (RFC 2544 benchmarking), on no interface of the test host.
ABSENT_ADDRESS = "198.18.0.77"


def test_a_vip_of_the_pair_binds_before_this_host_holds_it():
    for reuse_port in (False, True):  # one process, and the workers' SO_REUSEPORT groups
        sock = bound_socket("emr", HostPort(ABSENT_ADDRESS, 0), reuse_port=reuse_port,
                            floating=frozenset({ABSENT_ADDRESS}))
        try:
            sock.listen(8)
            assert sock.getsockname()[0] == ABSENT_ADDRESS
            assert sock.getsockopt(socket.IPPROTO_IP, 15) == 1  # IP_FREEBIND
        finally:
            sock.close()


def test_an_address_that_is_not_a_vip_must_be_on_this_host():
    with pytest.raises(BindError) as refused:
        bound_socket("emr", HostPort(ABSENT_ADDRESS, 0), floating=frozenset({"198.18.0.100"}))
    assert ABSENT_ADDRESS in str(refused.value)
