"""The kernel's flow hash in Python gives the buckets the kernel gave.

The expected buckets were read from a kernel (6.18, nft 1.0.6): a netdev ingress rule
`meta mark set jhash ip saddr . tcp sport mod 65537 seed 0x5eed` stored each SYN's mark
in a set; tests/netns/test_kernel_forms.py checks the same live on every CI run.
"""

from __future__ import annotations

import pytest

from medlb.kernel.jhash import bucket, flow_key


@pytest.mark.parametrize(("port", "expected"), [(1024, 24543), (40000, 34988), (40001, 45633), (51234, 42495)])
def test_flow_buckets_match_the_kernel(port, expected):
    assert bucket("198.18.5.1", port, seed=0x5EED, size=65537) == expected


def test_client_address_bucket_matches_the_kernel():
    assert bucket("198.18.5.1", None, seed=0x12345678, size=65537) == 8736


def test_the_key_is_the_padded_registers_nft_hashes():
    assert flow_key("198.18.5.1", 8080) == bytes([198, 18, 5, 1, 0x1F, 0x90, 0, 0])
    assert flow_key("198.18.5.1", None) == bytes([198, 18, 5, 1])
