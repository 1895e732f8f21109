"""The fhir, dicomweb and xds health checks against stubs that answer right or wrong."""

from __future__ import annotations

import json
import sys

import pytest

from helpers import PEERS, free_ports, server, wait_until

CAPABILITY = {"resourceType": "CapabilityStatement", "status": "active", "fhirVersion": "4.0.1",
              "kind": "instance", "format": ["json"], "rest": [{"mode": "server"}]}
XDS_OK = """<?xml version="1.0"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>
<query:AdhocQueryResponse xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
 status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"><rim:RegistryObjectList
 xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"/></query:AdhocQueryResponse></soap:Body></soap:Envelope>"""
XDS_FAILURE = XDS_OK.replace("ResponseStatusType:Success", "ResponseStatusType:Failure")


def canned(backends, tmp_path, name: str, port: int, body: str, status: int = 200,
           content_type: str = "application/json") -> None:
    body_file = tmp_path / f"{name}.body"
    body_file.write_text(body)
    backends.start_process(name, [sys.executable, str(PEERS / "canned_http.py"), "--port", str(port),
                                  "--status", str(status), "--body-file", str(body_file),
                                  "--content-type", content_type, "--log", str(tmp_path / f"{name}.log")])


def check_service(name: str, vip: int, servers, health):
    return {"name": name, "mode": "http", "listen": [f"127.0.0.1:{vip}"], "servers": servers,
            "health": {**health, "interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 1}}


@pytest.mark.parametrize("kind", ["fhir", "dicomweb", "xds"])
def test_check_passes_on_the_right_answer_and_fails_on_garbage(medlb, backends, tmp_path, kind):
    vip, good, bad, error = free_ports(4)
    right = {"fhir": json.dumps(CAPABILITY), "dicomweb": "[]", "xds": XDS_OK}[kind]
    wrong = {"fhir": '{"resourceType": "OperationOutcome"}', "dicomweb": "<html>hello</html>",
             "xds": XDS_FAILURE}[kind]
    canned(backends, tmp_path, "good", good, right)
    canned(backends, tmp_path, "bad", bad, wrong)
    canned(backends, tmp_path, "error", error, right, status=500)
    health = {"type": kind}
    if kind == "dicomweb":
        health["path"] = "/dicom-web/studies?limit=1"
    if kind == "xds":
        health["path"] = "/xds/registry"
    lb = medlb([check_service("svc", vip, [server("good", good), server("bad", bad), server("error", error)],
                              health)])
    wait_until(lambda: (lb.server("svc", "good")["last_check"] or {}).get("ok"), 10, what="a passing check")
    lb.wait_health("svc", "good", "up", 10)
    lb.wait_health("svc", "bad", "down", 10)
    lb.wait_health("svc", "error", "down", 10)
    reasons = {s["name"]: s["health_reason"] for s in lb.service("svc")["servers"]}
    assert "500" in reasons["error"]
    if kind == "fhir":
        assert "FHIR 4.0.1" in reasons["good"] and "OperationOutcome" in reasons["bad"]
        assert "GET /metadata" in (tmp_path / "good.log").read_text()
    if kind == "dicomweb":
        assert "not DICOM JSON" in reasons["bad"]
        assert "GET /dicom-web/studies?limit=1" in (tmp_path / "good.log").read_text()
    if kind == "xds":
        assert "Failure" in reasons["bad"]
        logged = (tmp_path / "good.log").read_text()
        assert "POST /xds/registry application/soap+xml" in logged
        assert 'action="urn:ihe:iti:2007:RegistryStoredQuery"' in logged


def test_xds_wsdl_probe(medlb, backends, tmp_path):
    vip, good = free_ports(2)
    canned(backends, tmp_path, "wsdl", good, '<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"/>',
           content_type="text/xml")
    lb = medlb([check_service("svc", vip, [server("r", good)], {"type": "xds", "path": "/registry", "wsdl": True})])
    # Health starts up before the first check: wait for a check that passed.
    wait_until(lambda: (lb.server("svc", "r")["last_check"] or {}).get("ok"), 10, what="a passing check")
    assert lb.server("svc", "r")["health_reason"] == "status 200 (WSDL)"
    assert "GET /registry?wsdl" in (tmp_path / "wsdl.log").read_text()


def test_an_https_checks_relative_ca_is_read_from_the_config_files_folder(backends, tmp_path, monkeypatch):
    """Where `medlb check` reads it (config/files.py), whatever folder medlb runs in."""
    import asyncio

    from tlscerts import TestCA

    from medlb.config.models import HttpCheck
    from medlb.health.base import CheckTarget
    from medlb.health.http import check

    config_dir = tmp_path / "etc"
    ca = TestCA(config_dir)
    issued = ca.issue("archive", dns=["localhost"])
    [port] = free_ports(1)
    backends.start_http("A", port, cert=issued.cert, key=issued.key)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = CheckTarget("archive", "a", "127.0.0.1", port, base_dir=config_dir)
    settings = HttpCheck(type="https", path="/health", ca=ca.path.name)

    outcome = asyncio.run(check(target, settings))

    assert outcome.ok, outcome.reason
