"""The admin API against a running medlb: auth and roles, errors, shapes, metrics, audit."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import LOOPBACK, TOKEN, Backends, MedlbFactory, connect, free_ports, server, service, wait_until

VIEWER = "viewer-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcd"
ADMIN = "second-admin-token-0123456789"
STATE_PATH = "/api/v1/services/pacs/servers/A/state"

PROTECTED = [
    ("GET", "/api/v1/services", None),
    ("GET", "/api/v1/services/pacs", None),
    ("GET", "/metrics", None),
    ("GET", "/api/v1/openapi.json", None),
    ("GET", "/api/v1/audit", None),
    ("POST", STATE_PATH, {"state": "halt"}),
    ("POST", "/api/v1/services/pacs/failback", {}),
    ("POST", "/api/v1/reload", None),
]


def anonymous(lb, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
    """A request without medlb's admin token: none at all, or the one given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"http://{LOOPBACK}:{lb.admin_port}{path}", headers=headers, timeout=10, **kwargs)


def samples(lb) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of /metrics as (name, labels, value); parsing proves it is Prometheus text."""
    response = lb.api("GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(response.text)
            for s in family.samples]


def metric(lb, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels match."""
    return sum(value for n, found, value in samples(lb)
               if n == name and all(found.get(k) == v for k, v in labels.items()))


def two_servers(medlb, backends, start: bool = True, **top):
    vip, a, b = free_ports(3)
    backends.start("A", a)
    backends.start("B", b)
    lb = medlb([service("pacs", vip, [server("A", a), server("B", b)])], start=start, **top)
    return lb, vip


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One medlb for the tests that only read (or are refused): faster than one each."""
    group, factory = Backends(), MedlbFactory(tmp_path_factory.mktemp("admin"))
    try:
        lb, _ = two_servers(factory, group)
        yield lb
    finally:
        factory.stop_all()
        group.stop_all()


def test_healthz_answers_without_a_token(shared):
    response = anonymous(shared, "GET", "/healthz")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef"], ids=["no-token", "wrong-token"])
@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_every_other_route_needs_a_valid_token(shared, method, path, body, token):
    response = anonymous(shared, method, path, token, json=body)

    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json()["error"], str) and response.json()["error"]
    assert shared.server("pacs", "A")["state"] == "online"


def test_a_refused_caller_leaves_no_audit_entry(shared):
    anonymous(shared, "POST", STATE_PATH, "wrong-token-0123456789abcdef", json={"state": "halt"})

    assert shared.api("GET", "/api/v1/audit").json() == []


@pytest.mark.parametrize("method,path,named", [
    ("GET", "/api/v1/services/radiology", ["radiology"]),
    ("GET", "/api/v1/services/pacs/servers/Z9", ["pacs", "Z9"]),
    ("POST", "/api/v1/services/radiology/servers/A/state", ["radiology"]),
    ("POST", "/api/v1/services/pacs/servers/Z9/state", ["pacs", "Z9"]),
    ("POST", "/api/v1/services/radiology/failback", ["radiology"]),
])
def test_unknown_service_or_server_is_a_404_naming_it(shared, method, path, named):
    response = shared.api(method, path, json={"state": "drain"} if path.endswith("/state") else None)

    assert response.status_code == 404, response.text
    error = response.json()["error"]
    for name in named:
        assert name in error


def test_a_bad_state_is_a_422_naming_the_allowed_states(shared):
    response = shared.api("POST", STATE_PATH, json={"state": "asleep"})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    for state in ("online", "drain", "halt"):
        assert state in error
    assert shared.server("pacs", "A")["state"] == "online"


def test_service_json_has_the_documented_fields(shared):
    listed = shared.api("GET", "/api/v1/services").json()
    one = shared.service("pacs")

    assert [s["name"] for s in listed] == ["pacs"]
    # The two answers are taken a moment apart: a health check may have run between them.
    def stable(view: dict) -> dict:
        return {**view, "servers": [{k: v for k, v in s.items() if k != "last_check"} for s in view["servers"]]}

    assert stable(listed[0]) == stable(one)
    assert one["mode"] == "tcp"
    assert one["active_pool"] == "primary"
    assert len(one["listen"]) == 1 and one["listen"][0].startswith(f"{LOOPBACK}:")
    assert [s["name"] for s in one["servers"]] == ["A", "B"]
    for entry in one["servers"]:
        assert {"name", "address", "backup", "state", "health", "weight", "active_connections",
                "total_connections"} <= set(entry)
        assert entry["address"].startswith(f"{LOOPBACK}:")
        assert (entry["backup"], entry["state"], entry["weight"]) == (False, "online", 1)
        assert entry["health"] in ("up", "down")
        assert entry["active_connections"] == 0 and entry["total_connections"] == 0


def test_openapi_lists_the_service_paths(shared):
    paths = shared.api("GET", "/api/v1/openapi.json").json()["paths"]

    assert "/api/v1/services" in paths
    assert "/api/v1/services/{name}" in paths
    assert "post" in paths["/api/v1/services/{name}/servers/{server}/state"]


def test_state_can_be_posted_as_curl_sends_it_with_a_form_content_type(medlb, backends):
    lb, _ = two_servers(medlb, backends)

    response = lb.api("POST", STATE_PATH, content='{"state":"drain"}',
                      headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert response.status_code == 200, response.text
    assert lb.server("pacs", "A")["state"] == "drain"


def test_metrics_reflect_connections_bytes_states_and_checks(medlb, backends):
    lb, vip = two_servers(medlb, backends)
    assert metric(lb, "medlb_server_connections_total") == 0

    for _ in range(5):
        sock, _ = connect(vip)
        sock.sendall(b"x" * 1000)
        got = b""
        while len(got) < 1000:
            got += sock.recv(4096)
        sock.close()
    lb.set_state("pacs", "B", "drain").raise_for_status()

    assert metric(lb, "medlb_server_connections_total") == 5
    assert metric(lb, "medlb_server_bytes_total", direction="to_server") >= 5000
    assert metric(lb, "medlb_server_bytes_total", direction="to_client") >= 5000 + 5 * len("A\n")
    assert metric(lb, "medlb_server_up", service="pacs", server="A") == 1
    assert metric(lb, "medlb_server_state", server="B", state="drain") == 1
    assert metric(lb, "medlb_server_state", server="B", state="online") == 0
    held, name = connect(vip)
    assert metric(lb, "medlb_server_active_connections", service="pacs", server=name) == 1
    held.close()
    wait_until(lambda: metric(lb, "medlb_server_active_connections") == 0, 5, what="connections to close")
    wait_until(lambda: metric(lb, "medlb_health_checks_total", server="A") >= 2, 10, what="health checks")
    names = {name for name, labels, _ in samples(lb) if labels.get("service") == "pacs" and "server" in labels}
    assert {"medlb_server_up", "medlb_server_state", "medlb_server_active_connections",
            "medlb_server_connections_total", "medlb_server_bytes_total",
            "medlb_health_check_duration_seconds", "medlb_health_checks_total"} <= names


def test_roles_decide_what_a_token_may_do_and_the_audit_says_who(medlb, backends):
    lb, _ = two_servers(medlb, backends, start=False)
    lb.config["admin"]["tokens"] = [
        {"name": "monitoring", "token": VIEWER, "role": "viewer"},
        {"name": "pacs-admins", "token": OPERATOR, "role": "operator"},
        {"name": "lb-admin", "token": ADMIN, "role": "admin"},
    ]
    lb.write_config(lb.config)
    lb.start()

    assert anonymous(lb, "GET", "/api/v1/services/pacs", VIEWER).status_code == 200
    refused = anonymous(lb, "POST", STATE_PATH, VIEWER, json={"state": "halt"})
    assert refused.status_code == 403 and "operator" in refused.json()["error"]
    assert anonymous(lb, "POST", STATE_PATH, OPERATOR, json={"state": "drain"}).status_code == 200
    assert anonymous(lb, "POST", "/api/v1/reload", OPERATOR).status_code == 403
    assert anonymous(lb, "POST", "/api/v1/services/pacs/servers/B/state", OPERATOR,
                     json={"state": "halt"}).status_code == 200
    assert anonymous(lb, "POST", "/api/v1/reload", ADMIN).status_code == 200

    entries = anonymous(lb, "GET", "/api/v1/audit", VIEWER).json()
    assert [(e["who"], e["action"]) for e in entries] == [
        ("lb-admin", "reload"), ("pacs-admins", "set_state"), ("pacs-admins", "set_state")]
    assert (entries[1]["target"], entries[1]["detail"]) == ("pacs/B", {"from": "online", "to": "halt"})
    assert (entries[2]["target"], entries[2]["detail"]) == ("pacs/A", {"from": "online", "to": "drain"})
    assert entries[0]["at"] >= entries[1]["at"] >= entries[2]["at"]
    assert lb.server("pacs", "A")["state"] == "drain" and lb.server("pacs", "B")["state"] == "halt"


def test_the_admin_token_never_appears_in_the_log(medlb, backends):
    lb, vip = two_servers(medlb, backends, log={"level": "debug"})
    lb.set_state("pacs", "A", "halt").raise_for_status()
    lb.api("POST", "/api/v1/reload").raise_for_status()
    anonymous(lb, "GET", "/api/v1/services", TOKEN + "x")
    anonymous(lb, "GET", "/api/v1/services", f"{TOKEN} extra")
    lb.api("GET", "/metrics")
    lb.write_config({**lb.config, "admin": {**lb.config["admin"], "tokens": [
        {"name": "ops", "token": OPERATOR, "role": "root"}]}})
    assert lb.api("POST", "/api/v1/reload").status_code == 422  # refused: no such role

    lb.stop()

    text = lb.log()
    assert "reloaded" in text and "reload_refused" in text  # the log was written
    assert TOKEN not in text
    assert OPERATOR not in text
