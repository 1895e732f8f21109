"""The connection ceiling derived from the open-file limit, and the advisory `medlb check`
prints when the services' max_connections do not fit in it."""

import pytest

from medlb import descriptors
from medlb.config import parse_config


def config_text(*services: str, workers: int = 1, reserve: int | None = None) -> str:
    head = f"workers: {workers}\n" + (f"limits: {{descriptor_reserve: {reserve}}}\n" if reserve else "")
    return head + "services:\n" + "".join(services)


def service(name: str, port: int, max_connections: int = 10, body: str = "", servers: int = 1,
            listen: int = 1) -> str:
    """One service's YAML, a list item under `services:`; `body` holds extra keys, one a line."""
    addresses = ", ".join(f'"127.0.0.1:{port + i}"' for i in range(listen))
    pool = ", ".join(f'{{name: s{i}, address: "10.0.0.{i + 1}:104"}}' for i in range(servers))
    lines = [f"name: {name}", f"listen: [{addresses}]", f"limits: {{max_connections: {max_connections}}}",
             f"servers: [{pool}]", *body.splitlines()]
    return "  - " + "\n    ".join(lines) + "\n"


def reserve_of(text: str) -> int:
    return descriptors.capacity(parse_config(text, open_files=1 << 20).config, 1 << 20).reserve


# --- the ceiling ------------------------------------------------------------------


def test_two_descriptors_per_connection_after_the_reserve():
    assert descriptors.ceiling(256, 132) == 62
    assert descriptors.ceiling(257, 132) == 62
    assert descriptors.ceiling(258, 132) == 63


def test_a_reserve_at_or_above_the_limit_leaves_no_connection():
    assert descriptors.ceiling(256, 256) == 0
    assert descriptors.ceiling(256, 1000) == 0


def test_the_reserve_counts_listen_sockets_and_checks_in_one_process():
    # 128 fixed, 3 listen sockets, 2 servers checked at 2 descriptors each.
    assert reserve_of(config_text(service("a", 1000, servers=2, listen=3))) == 128 + 3 + 2 * 2


def test_with_workers_the_checks_run_elsewhere_and_each_worker_counts_its_own_table():
    text = config_text(service("a", 1000, servers=2, listen=3), workers=4)
    room = descriptors.capacity(parse_config(text, open_files=1024).config, 1024)
    assert room.reserve == 128 + 3
    assert room.per_process == (1024 - 131) // 2
    assert room.connections == 4 * room.per_process


def test_no_check_reserves_nothing_for_checks():
    assert reserve_of(config_text(service("a", 1000, body="health: {type: none}"))) == 128 + 1


def test_http_idle_pools_and_mllp_links_are_reserved_per_server():
    http = service("web", 1000, servers=2, body="mode: http\nhttp: {server_idle_connections: 10}")
    mllp = service("hl7", 1100, servers=3, body="mode: mllp\nmllp: {server_connections: 4}")
    by_connection = service("hl7c", 1200, servers=3, body="mode: mllp\nmllp: {balance: connection}")
    assert reserve_of(config_text(http, reserve=16)) == 16 + 1 + 2 * 2 + 10 * 2
    assert reserve_of(config_text(mllp, reserve=16)) == 16 + 1 + 3 * 2 + 4 * 3
    assert reserve_of(config_text(by_connection, reserve=16)) == 16 + 1 + 3 * 2


def test_descriptor_reserve_is_a_key_with_bounds():
    assert reserve_of(config_text(service("a", 1000), reserve=500)) == 500 + 1 + 2
    with pytest.raises(Exception, match="descriptor_reserve"):
        parse_config(config_text(service("a", 1000), reserve=8))


# --- the advisory -----------------------------------------------------------------

#: One service, one listen socket, one checked server: 256 descriptors hold (256 - 131) // 2.
FITS = (256 - 131) // 2


def test_max_connections_that_fit_draw_no_advisory():
    text = config_text(service("a", 1000, max_connections=FITS))
    assert parse_config(text, open_files=256).advisories == []


def test_one_connection_over_draws_an_advisory_that_does_not_refuse_the_file():
    text = config_text(service("a", 1000, max_connections=FITS - 10), service("b", 2000, max_connections=11))
    loaded = parse_config(text, open_files=256 + 2 + 1)  # the second service's socket and check

    assert loaded.warnings == []
    [advisory] = loaded.advisories
    assert advisory.path == "services" and advisory.line == 2
    assert f"max_connections adds up to {FITS + 1} over all services" in advisory.message
    assert f"holds {FITS} connections in one process" in advisory.message


def test_with_workers_the_advisory_counts_every_worker():
    per_worker = (256 - 129) // 2
    fits = config_text(service("a", 1000, max_connections=3 * per_worker), workers=3)
    over = config_text(service("a", 1000, max_connections=3 * per_worker + 1), workers=3)
    assert parse_config(fits, open_files=256).advisories == []
    [advisory] = parse_config(over, open_files=256).advisories
    assert f"holds {3 * per_worker} connections in 3 workers" in advisory.message
