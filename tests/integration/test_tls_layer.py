"""The TLS layer on a tcp service: termination, SNI, policies, mutual TLS, reload,
expiry in the API, and re-encryption to a TLS server."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl

import pytest

from helpers import LOOPBACK, free_ports, server, service, wait_until
from tlscerts import TestCA


def tls_connect(port: int, ca, server_name: str = "localhost", context: ssl.SSLContext | None = None):
    context = context or ssl.create_default_context(cafile=str(ca.path))
    raw = socket.create_connection((LOOPBACK, port), timeout=5)
    sock = context.wrap_socket(raw, server_hostname=server_name)
    return sock


def read_line(sock) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        piece = sock.recv(1)
        if not piece:
            break
        data += piece
    return data


def test_tcp_service_terminates_tls_and_relays(medlb, backends, tmp_path):
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("vip", ["localhost"])
    vip, pa = free_ports(2)
    backends.start("A", pa)
    lb = medlb([service("ris", vip, [server("A", pa)], tls={"cert": str(leaf.cert), "key": str(leaf.key)})])

    sock = tls_connect(vip, ca)
    assert read_line(sock) == b"A\n"
    payload = b"y" * 500_000
    sock.sendall(payload)
    received = bytearray()
    while len(received) < len(payload):
        received += sock.recv(65536)
    assert bytes(received) == payload
    sock.close()

    view = lb.service("ris")["tls"]
    assert view["handshakes"] >= 1
    assert 89 < view["certificates"][0]["days_left"] <= 90
    assert "medlb_tls_certificate_days_left" in lb.api("GET", "/metrics").text


def test_sni_chooses_the_certificate(medlb, backends, tmp_path):
    ca = TestCA(tmp_path / "ca")
    pacs = ca.issue("pacs", ["pacs.test"])
    ris = ca.issue("ris", ["ris.test"])
    vip, pa = free_ports(2)
    backends.start("A", pa)
    medlb([service("ris", vip, [server("A", pa)], tls={"certificates": [
        {"cert": str(pacs.cert), "key": str(pacs.key)},
        {"cert": str(ris.cert), "key": str(ris.key)}]})])
    for name in ("pacs.test", "ris.test"):
        sock = tls_connect(vip, ca, name)  # verifies the host name against the certificate
        assert read_line(sock) == b"A\n"
        sock.close()


def test_modern_policy_refuses_tls12_and_counts_it(medlb, backends, tmp_path):
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("vip")
    vip, pa = free_ports(2)
    backends.start("A", pa)
    lb = medlb([service("ris", vip, [server("A", pa)],
                        tls={"cert": str(leaf.cert), "key": str(leaf.key), "policy": "modern"})])
    old = ssl.create_default_context(cafile=str(ca.path))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, OSError)):
        tls_connect(vip, ca, context=old)
    sock = tls_connect(vip, ca)
    assert sock.version() == "TLSv1.3"
    sock.close()
    wait_until(lambda: sum(lb.service("ris")["tls"]["handshake_failures"].values()) >= 1, 5,
               what="the failed handshake to be counted")


def test_mutual_tls_requires_a_client_certificate(medlb, backends, tmp_path):
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("vip")
    client = ca.issue("modality", ["modality"], client=True)
    vip, pa = free_ports(2)
    backends.start("A", pa)
    medlb([service("ris", vip, [server("A", pa)], tls={
        "cert": str(leaf.cert), "key": str(leaf.key), "client_ca": str(ca.path), "verify_client": "required"})])

    anonymous = tls_connect(vip, ca)
    # TLS 1.3: the server's refusal arrives after the client's handshake completes.
    with pytest.raises((ssl.SSLError, OSError)):
        line = read_line(anonymous)
        if not line:
            raise OSError("closed")
    anonymous.close()

    context = ssl.create_default_context(cafile=str(ca.path))
    context.load_cert_chain(str(client.cert), str(client.key))
    sock = tls_connect(vip, ca, context=context)
    assert read_line(sock) == b"A\n"
    sock.close()


def test_sighup_reloads_renewed_certificates(medlb, backends, tmp_path):
    ca = TestCA(tmp_path / "ca")
    first = ca.issue("first", days=10)
    renewed = ca.issue("renewed", days=200)
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(first.cert, live_cert)
    shutil.copy(first.key, live_key)
    vip, pa = free_ports(2)
    backends.start("A", pa)
    lb = medlb([service("ris", vip, [server("A", pa)], tls={"cert": str(live_cert), "key": str(live_key)})])
    held = tls_connect(vip, ca)
    assert read_line(held) == b"A\n"
    assert lb.service("ris")["tls"]["certificates"][0]["days_left"] < 11

    shutil.copy(renewed.cert, live_cert)
    shutil.copy(renewed.key, live_key)
    lb.signal(signal.SIGHUP)
    wait_until(lambda: lb.service("ris")["tls"]["certificates"][0]["days_left"] > 100, 10,
               what="the renewed certificate to be loaded")
    sock = tls_connect(vip, ca)
    assert read_line(sock) == b"A\n"
    der = sock.getpeercert(binary_form=True)
    from cryptography import x509

    assert (x509.load_der_x509_certificate(der).not_valid_after_utc
            - x509.load_der_x509_certificate(der).not_valid_before_utc).days >= 199
    sock.close()
    held.sendall(b"still here\n")  # the connection from before the reload goes on
    assert read_line(held) == b"still here\n"
    held.close()


def test_a_broken_certificate_refuses_the_reload(medlb, backends, tmp_path):
    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("vip")
    vip, pa = free_ports(2)
    backends.start("A", pa)
    lb = medlb([service("ris", vip, [server("A", pa)], tls={"cert": str(leaf.cert), "key": str(leaf.key)})])
    leaf.cert.write_text("not a certificate")
    response = lb.api("POST", "/api/v1/reload")
    assert response.status_code >= 400
    assert "certificate" in response.text
    sock = tls_connect(vip, ca)  # the old context keeps serving
    assert read_line(sock) == b"A\n"
    sock.close()


def test_tcp_mode_reencrypts_to_a_server_that_requires_a_client_certificate(medlb, backends, tmp_path):
    """backend_tls in tcp mode: plain in, TLS out, verified, with medlb's client certificate."""
    import httpx

    ca = TestCA(tmp_path / "ca")
    server_cert = ca.issue("api1", ["api1.internal"])
    client_cert = ca.issue("medlb", ["medlb"], client=True)
    vip, without, pa = free_ports(3)
    backends.start_http("TLS", pa, cert=server_cert.cert, key=server_cert.key, client_ca=ca.path)
    backend = {"verify": True, "ca": str(ca.path), "server_name": "api1.internal"}
    medlb([service("api", vip, [server("a", pa)], backend_tls={**backend, "cert": str(client_cert.cert),
                                                                "key": str(client_cert.key)}),
           service("nocert", without, [server("a", pa)], backend_tls=backend)])
    assert httpx.get(f"http://{LOOPBACK}:{vip}/name", timeout=10).text == "TLS"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{LOOPBACK}:{without}/name", timeout=10)  # the server refuses medlb
