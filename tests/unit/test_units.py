"""The human units of the config file: durations, sizes, addresses and listen ranges."""

import pytest

from medlb.config.units import (
    HostPort,
    listen_overlaps,
    parse_duration,
    parse_listen,
    parse_server_address,
    parse_size,
)

# --- durations -----------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("500ms", 0.5),
    ("2s", 2.0),
    ("1.5m", 90.0),
    ("1h", 3600.0),
    ("1d", 86400.0),
    ("300s", 300.0),
    (5, 5.0),
    (0.25, 0.25),
    (0, 0.0),
])
def test_duration_is_read_in_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["2x", "-1s", "s", "", "1.5", "2 hours", -1, -0.5, True, False, None, [1]])
def test_duration_rejects_what_is_not_a_duration(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_duration_error_names_what_was_expected():
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("2x")


# --- sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, size", [
    (512, 512),
    ("512", 512),
    ("64KiB", 65536),
    ("16MiB", 16 * 1024 * 1024),
    ("1GiB", 1024**3),
    ("1GB", 10**9),
    ("1kb", 1000),
    ("64 KiB", 65536),
])
def test_size_is_read_in_bytes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["12XB", "1.5MiB", "-1", "KiB", "", -1, True, 1.5, None])
def test_size_rejects_what_is_not_a_size(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


# --- server addresses ----------------------------------------------------------------


@pytest.mark.parametrize("text, host, port", [
    ("vna1.site-a.example", "vna1.site-a.example", None),
    ("vna2.site-a.example:12000", "vna2.site-a.example", 12000),
    ("10.0.0.5", "10.0.0.5", None),
    ("10.0.0.5:104", "10.0.0.5", 104),
    ("[::1]:104", "::1", 104),
    ("[::1]", "::1", None),
    ("fe80::1", "fe80::1", None),
    ("2001:db8::10", "2001:db8::10", None),
    ("pacs_01", "pacs_01", None),
])
def test_server_address_is_host_and_optional_port(text, host, port):
    assert parse_server_address(text) == HostPort(host, port)


def test_ipv6_server_address_prints_with_brackets():
    assert str(parse_server_address("[::1]:104")) == "[::1]:104"
    assert str(parse_server_address("host")) == "host"


@pytest.mark.parametrize("bad", [
    "host:0", "host:99999", "host:65536", "host:", "host:abc", "[::1]:0",
    "bad name", "-leading-dash", "trailing-dash-", "host/path", "", "[::1", "[::1]104", 104, None,
])
def test_server_address_rejects_bad_hosts_and_ports(bad):
    with pytest.raises(ValueError):
        parse_server_address(bad)


def test_port_out_of_range_error_says_so():
    with pytest.raises(ValueError, match="1-65535"):
        parse_server_address("host:99999")


@pytest.mark.parametrize("bad", ["10.0.0.256", "10.0.0.256:104", "192.168.1", "010.0.0.1"])
def test_server_address_rejects_mistyped_ipv4(bad):
    # All-numeric dotted names are not host names; the resolver reads "192.168.1" as
    # 192.168.0.1 and "010.0.0.1" as 8.0.0.1, so such a typo would reach the wrong host.
    with pytest.raises(ValueError):
        parse_server_address(bad)


# --- listen addresses ----------------------------------------------------------------


def test_listen_single_port():
    assert parse_listen("0.0.0.0:12000") == [HostPort("0.0.0.0", 12000)]


def test_listen_range_expands_to_one_address_per_port():
    assert parse_listen("0.0.0.0:12300-12301") == [HostPort("0.0.0.0", 12300), HostPort("0.0.0.0", 12301)]


def test_listen_ipv6_with_brackets():
    assert parse_listen("[::]:104") == [HostPort("::", 104)]


@pytest.mark.parametrize("bad", [
    "0.0.0.0:12301-12300",  # backwards
    "0.0.0.0",              # no port
    "vna.example",          # no port
    "::1",                  # bare IPv6 has no port
    "0.0.0.0:0",
    "0.0.0.0:70000",
    "0.0.0.0:1-70000",
    "0.0.0.0:12000-",
    12000,
])
def test_listen_rejects_bad_addresses(bad):
    with pytest.raises(ValueError):
        parse_listen(bad)


def test_backwards_range_error_says_so():
    with pytest.raises(ValueError, match="backwards"):
        parse_listen("0.0.0.0:12301-12300")


def test_missing_listen_port_error_says_so():
    with pytest.raises(ValueError, match="no port"):
        parse_listen("0.0.0.0")


@pytest.mark.parametrize("a, b", [
    ("0.0.0.0:104", "127.0.0.1:104"),
    ("127.0.0.1:104", "0.0.0.0:104"),
    ("10.0.0.1:104", "10.0.0.1:104"),
    ("[::]:104", "127.0.0.1:104"),
    ("[::]:104", "[::1]:104"),
])
def test_listen_addresses_on_the_same_port_overlap(a, b):
    assert listen_overlaps(parse_listen(a)[0], parse_listen(b)[0])


@pytest.mark.parametrize("a, b", [
    ("0.0.0.0:104", "127.0.0.1:105"),
    ("0.0.0.0:104", "0.0.0.0:11112"),
    ("10.0.0.1:104", "10.0.0.2:104"),
    ("0.0.0.0:104", "[::1]:104"),
])
def test_listen_addresses_that_can_both_bind_do_not_overlap(a, b):
    assert not listen_overlaps(parse_listen(a)[0], parse_listen(b)[0])
