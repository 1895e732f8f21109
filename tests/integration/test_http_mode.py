"""mode: http as clients see it: keep-alive, forwarding headers, routes, persistence,
health, medlb's own answers (502/503/504/400/408/431), and TLS offload and bridging."""

from __future__ import annotations

import collections
import signal
import socket
import ssl

import httpx

from helpers import LOOPBACK, free_ports, http_service, server, wait_until
from tlscerts import TestCA


def test_keepalive_forwarding_headers_and_spread(medlb, backends):
    vip, pa, pb = free_ports(3)
    backends.start_http("A", pa)
    backends.start_http("B", pb)
    lb = medlb([http_service("api", vip, [server("a", pa), server("b", pb)])])
    lb.wait_health("api", "a", "up", 10)
    lb.wait_health("api", "b", "up", 10)

    seen: collections.Counter[str] = collections.Counter()
    with httpx.Client(base_url=f"http://{LOOPBACK}:{vip}", timeout=10) as client:
        for _ in range(1000):
            response = client.get("/name")
            assert response.status_code == 200
            seen[response.text] += 1
        echoed = client.get("/headers", headers={"X-Forwarded-For": "6.6.6.6", "Host": "api.example"}).json()
    assert seen["A"] > 300 and seen["B"] > 300, seen
    view = lb.service("api")
    assert view["total_connections"] == 1, "1,000 requests on one client connection"
    assert view["http"]["requests"]["2xx"] >= 1001
    headers = echoed["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"  # replaced, not appended
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "api.example"
    assert headers["forwarded"] == 'for=127.0.0.1;proto=http;host="api.example"'
    assert headers["host"] == "api.example"
    metrics = lb.api("GET", "/metrics").text
    assert 'medlb_http_requests_total{code="2xx",server="a",service="api"}' in metrics
    assert "medlb_http_response_seconds_bucket" in metrics


def test_routes_send_paths_to_named_pools(medlb, backends):
    vip, pa, pb, pc = free_ports(4)
    backends.start_http("VIEWER", pa)
    backends.start_http("FHIR", pb)
    backends.start_http("DICOMWEB", pc)
    lb = medlb([http_service("vip", vip, [server("viewer", pa)],
                             pools={"fhir": {"servers": [server("fhir1", pb)]},
                                    "dicomweb": {"servers": [server("dw1", pc)]}},
                             http={"routes": [{"path_prefix": "/fhir", "pool": "fhir"},
                                              {"path_prefix": "/dicom-web", "pool": "dicomweb"}]})])
    for name in ("viewer", "fhir1", "dw1"):
        lb.wait_health("vip", name, "up", 10)
    with httpx.Client(base_url=f"http://{LOOPBACK}:{vip}", timeout=10) as client:
        assert client.get("/fhir/Patient/1").text == "FHIR /fhir/Patient/1"
        assert client.get("/fhir").text == "FHIR /fhir"
        assert client.get("/dicom-web/studies?limit=1").text == "DICOMWEB /dicom-web/studies"
        assert client.get("/fhirx").text == "VIEWER /fhirx"
        assert client.get("/").text == "VIEWER /"


def test_cookie_persistence_sticks_spreads_and_moves_on_halt(medlb, backends):
    vip, pa, pb = free_ports(3)
    backends.start_http("A", pa)
    backends.start_http("B", pb)
    lb = medlb([http_service("api", vip, [server("a", pa), server("b", pb)],
                             persistence={"type": "cookie", "name": "MEDLBSRV"})])
    lb.wait_health("api", "a", "up", 10)
    lb.wait_health("api", "b", "up", 10)
    base = f"http://{LOOPBACK}:{vip}"

    first = httpx.get(base + "/name", timeout=10)
    cookie = first.cookies["MEDLBSRV"]
    assert "127.0.0.1" not in cookie and str(pa) not in cookie and str(pb) not in cookie
    set_cookie = first.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "Secure" not in set_cookie  # plain HTTP: no Secure
    sticky = {httpx.get(base + "/name", cookies={"MEDLBSRV": cookie}, timeout=10).text for _ in range(20)}
    assert sticky == {first.text}
    echoed = httpx.get(base + "/headers", cookies={"MEDLBSRV": cookie, "other": "1"}, timeout=10).json()
    assert echoed["headers"]["cookie"] == "other=1"  # medlb's cookie is not passed on
    spread = {httpx.get(base + "/name", timeout=10).text for _ in range(20)}
    assert spread == {"A", "B"}

    name = "a" if first.text == "A" else "b"
    assert lb.set_state("api", name, "drain").status_code == 200
    assert httpx.get(base + "/name", cookies={"MEDLBSRV": cookie}, timeout=10).text == first.text
    assert lb.set_state("api", name, "halt").status_code == 200
    moved = httpx.get(base + "/name", cookies={"MEDLBSRV": cookie}, timeout=10)
    assert moved.text != first.text
    assert moved.cookies["MEDLBSRV"] != cookie


def test_failing_health_url_gets_no_traffic_and_nothing_up_gives_503(medlb, backends):
    vip, pa, pb = free_ports(3)
    backends.start_http("A", pa)
    backends.start_http("B", pb, health=500)
    lb = medlb([http_service("api", vip, [server("a", pa), server("b", pb)])])
    lb.wait_health("api", "a", "up", 10)
    lb.wait_health("api", "b", "down", 10)
    assert "status 500" in lb.server("api", "b")["health_reason"]
    answers = {httpx.get(f"http://{LOOPBACK}:{vip}/name", timeout=10).text for _ in range(20)}
    assert answers == {"A"}

    httpx.post(f"http://{LOOPBACK}:{pa}/control/health/500", timeout=10)
    lb.wait_health("api", "a", "down", 10)
    response = httpx.get(f"http://{LOOPBACK}:{vip}/name", timeout=10)
    assert response.status_code == 503
    assert "No server" in response.text
    assert lb.service("api")["http"]["errors"]["no_server"] >= 1


def test_server_failures_give_502_and_504(medlb, backends):
    vip, pa, dead = free_ports(3)
    backends.start_http("A", pa)
    lb = medlb([http_service("api", vip, [server("a", pa)], health={"type": "none"},
                             http={"server_timeout": "500ms"})])
    response = httpx.get(f"http://{LOOPBACK}:{vip}/slow/3", timeout=10)
    assert response.status_code == 504
    assert response.headers["connection"] == "close"
    backends.kill("A")
    response = httpx.get(f"http://{LOOPBACK}:{vip}/name", timeout=10)
    assert response.status_code == 502
    errors = lb.service("api")["http"]["errors"]
    assert errors["gateway_timeout"] == 1 and errors["bad_gateway"] >= 1
    last = lb.service("api")["http"]["last_errors"]  # medlb's own 5xx answers, newest first
    assert (last[0]["status"], last[0]["reason"]) == (502, "bad_gateway")
    assert {k: v for k, v in last[-1].items() if k != "at"} == {"status": 504, "reason": "gateway_timeout",
                                                                 "server": "a"}


def _raw_exchange(port: int, data: bytes, context: ssl.SSLContext | None = None) -> bytes:
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
    sock.sendall(data)
    received = b""
    while piece := sock.recv(65536):
        received += piece
    sock.close()
    return received


def test_bad_oversized_and_slow_heads_are_answered_and_counted(medlb, backends):
    vip, pa = free_ports(2)
    backends.start_http("A", pa)
    lb = medlb([http_service("api", vip, [server("a", pa)],
                             http={"header_timeout": "500ms", "max_header_size": "4k", "max_headers": 20})])
    lb.wait_health("api", "a", "up", 10)

    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    assert _raw_exchange(vip, big).startswith(b"HTTP/1.1 431 ")
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n"
    assert _raw_exchange(vip, many).startswith(b"HTTP/1.1 431 ")
    assert _raw_exchange(vip, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")

    slow = socket.create_connection((LOOPBACK, vip), timeout=10)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    received = b""
    while piece := slow.recv(65536):
        received += piece
    slow.close()
    assert received.startswith(b"HTTP/1.1 408 ")

    errors = lb.service("api")["http"]["errors"]
    assert errors["header_too_large"] == 1 and errors["too_many_headers"] == 1
    assert errors["bad_request"] == 1 and errors["header_timeout"] == 1


def test_offload_and_bridging_with_real_tls_on_both_ends(medlb, backends, tmp_path):
    front = TestCA(tmp_path / "front", "front CA")
    back = TestCA(tmp_path / "back", "backend CA")
    vip_cert = front.issue("vip", ["localhost"])
    plain_port, tls_port, offload_vip, bridge_vip = free_ports(4)
    backends.start_http("PLAIN", plain_port)
    api_cert = back.issue("api1", ["api1.internal"])
    backends.start_http("TLS", tls_port, cert=api_cert.cert, key=api_cert.key)
    tls = {"cert": str(vip_cert.cert), "key": str(vip_cert.key)}
    health = {"type": "http", "path": "/health", "expect_status": 200, "interval": "200ms", "timeout": "150ms",
              "rise": 2, "fall": 2}
    lb = medlb([
        http_service("offload", offload_vip, [server("api1", plain_port)], tls=tls,
                     persistence={"type": "cookie", "name": "MEDLBSRV"}, health=health),
        http_service("bridge", bridge_vip, [server("api1", tls_port)], tls=tls,
                     backend_tls={"verify": True, "ca": str(back.path), "server_name": "api1.internal"},
                     health=health),
    ])
    lb.wait_health("offload", "api1", "up", 10)
    lb.wait_health("bridge", "api1", "up", 10)  # the http check goes over TLS, verified

    with httpx.Client(verify=ssl.create_default_context(cafile=str(front.path)), timeout=10) as client:
        offload = client.get(f"https://localhost:{offload_vip}/headers")
        assert offload.json()["name"] == "PLAIN"
        assert offload.json()["headers"]["x-forwarded-proto"] == "https"
        assert "Secure" in offload.headers["set-cookie"]
        bridged = client.get(f"https://localhost:{bridge_vip}/headers")
        assert bridged.json()["name"] == "TLS"
        assert bridged.json()["headers"]["x-forwarded-proto"] == "https"

    # A backend CA that does not match: the check fails verification and the server is down.
    wrong = TestCA(tmp_path / "wrong", "wrong CA")
    config = lb.config
    config["services"][1]["backend_tls"]["ca"] = str(wrong.path)
    lb.write_config(config)
    assert lb.api("POST", "/api/v1/reload").status_code == 200
    lb.wait_health("bridge", "api1", "down", 10)
    assert "certificate" in lb.server("bridge", "api1")["health_reason"].lower()


def test_plain_http_on_a_tls_port_is_answered_or_redirected(medlb, backends, tmp_path):
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("vip", ["localhost"])
    vip, vip2, pa = free_ports(3)
    backends.start_http("A", pa)
    tls = {"cert": str(leaf.cert), "key": str(leaf.key)}
    lb = medlb([http_service("api", vip, [server("a", pa)], tls=tls),
                http_service("web", vip2, [server("a", pa)], tls=tls, http={"redirect_http": True})])
    lb.wait_health("api", "a", "up", 10)
    lb.wait_health("web", "a", "up", 10)
    answer = _raw_exchange(vip, b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"https://" in answer
    redirect = httpx.get(f"http://localhost:{vip2}/fhir/metadata?x=1", timeout=10)
    assert redirect.status_code == 301
    assert redirect.headers["location"] == f"https://localhost:{vip2}/fhir/metadata?x=1"
    assert httpx.get(redirect.headers["location"], verify=ssl.create_default_context(cafile=str(ca.path)), timeout=10).text == "A /fhir/metadata"
    assert lb.service("api")["http"]["errors"]["plain_http_on_tls"] == 1
    assert lb.service("api")["tls"]["handshake_failures"]["plain_http"] == 1
    assert lb.service("web")["http"]["errors"]["redirected_to_https"] == 1


def test_sigterm_closes_idle_keepalive_connections_and_lets_a_request_finish(medlb, backends):
    vip, pa = free_ports(2)
    backends.start_http("A", pa)
    lb = medlb([http_service("api", vip, [server("a", pa)], health={"type": "none"})], stop_timeout="30s")
    idle = httpx.Client(base_url=f"http://{LOOPBACK}:{vip}", timeout=30)
    assert idle.get("/name").text == "A"  # its connection now sits idle in keep-alive
    busy = socket.create_connection((LOOPBACK, vip), timeout=30)
    busy.sendall(b"GET /slow/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: lb.service("api")["http"]["in_flight"] == 1, 10, what="the slow request to be in flight")

    lb.signal(signal.SIGTERM)

    answer = b""
    while piece := busy.recv(65536):
        answer += piece
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"A")
    assert b"connection: close" in answer.lower()
    assert lb.proc is not None and lb.proc.wait(15) == 0  # well before stop_timeout
    assert "stopped aborted_connections=0" in lb.log()
    idle.close()
    busy.close()


def _established_to(port: int) -> int:
    """Established TCP connections whose local end is `port` (the backend's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


def test_a_reload_that_drops_a_server_closes_its_idle_pooled_connections(medlb, backends):
    vip, pa, pb = free_ports(3)
    backends.start_http("A", pa)
    backends.start_http("B", pb)
    lb = medlb([http_service("web", vip, [server("A", pa), server("B", pb)])])
    lb.wait_health("web", "A", "up", 10)
    lb.wait_health("web", "B", "up", 10)
    with httpx.Client(timeout=10) as client:
        names = {client.get(f"http://{LOOPBACK}:{vip}/name").text for _ in range(6)}
    assert names == {"A", "B"}
    wait_until(lambda: _established_to(pb) >= 1, 5, what="a pooled connection to B")

    config = lb.config
    config["services"][0]["servers"] = [server("A", pa)]
    config["services"][0]["health"] = {"type": "none"}  # no checks to B either
    lb.write_config(config)
    assert lb.api("POST", "/api/v1/reload").status_code == 200

    wait_until(lambda: _established_to(pb) == 0, 5, what="medlb to close its idle connections to B")
