"""Monitoring that plugs in (docs/monitoring.md): the alert rules pass promtool and fire
as documented, every metric the rules and the Grafana dashboard query is one a running
medlb exports, and a real Prometheus scrapes medlb with the documented scrape config
(bearer token, the admin certificate as CA) and evaluates the rules on what it got."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import need_tool
from dicom_helpers import dicom_service
from helpers import LOOPBACK, TOKEN, Backends, MedlbFactory, free_port, free_ports, http_service, server, service
from test_mllp_mode import adt, mllp_service
from tlscerts import TestCA

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "docs/prometheus/medlb-alerts.yml"
ALERT_TESTS = ROOT / "docs/prometheus/medlb-alerts.test.yml"
DASHBOARD = ROOT / "docs/grafana/medlb.json"
MONITORING = ROOT / "docs/monitoring.md"
PROMETHEUS_TOKEN = "prometheus-viewer-token-0123456789"
#: Grafana's variables, replaced by values PromQL accepts when a query is checked.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "${service}": ".*",
                     "$service": ".*", "${instance}": ".*", "$instance": ".*"}


@pytest.fixture(scope="module")
def every_mode(tmp_path_factory):
    """One medlb with a service of each mode, TLS, two workers and an admin certificate
    that expires in 10 days: every metric family medlb has is exported."""
    folder = tmp_path_factory.mktemp("monitoring")
    ca = TestCA(folder / "ca")
    admin_cert, vip_cert = ca.issue("admin", ["localhost"], days=10), ca.issue("vip", ["localhost"])
    group, factory = Backends(), MedlbFactory(folder)
    tcp, alive, dead, mllp, http, dicom = free_ports(6)
    group.start("A", alive)
    try:
        lb = factory([
            service("vna", tcp, [server("A", alive), server("B", dead)],
                    tls={"cert": str(vip_cert.cert), "key": str(vip_cert.key)}),
            mllp_service("adt", mllp, [server("engine", dead)], retries=0),
            http_service("viewer", http, [server("web", dead)]),
            dicom_service("pacs", dicom, [server("pacs1", dead, ae_title="PACS1")]),
        ], workers=2, admin={"token": TOKEN,
                             "tls": {"cert": str(admin_cert.cert), "key": str(admin_cert.key)},
                             "tokens": [{"name": "prometheus", "role": "viewer", "token": PROMETHEUS_TOKEN}]})
        lb.ca = ca
        lb.wait_health("adt", "engine", "down", 20)
        yield lb
    finally:
        factory.stop_all()
        group.stop_all()


def exported_names(lb) -> set[str]:
    """Every sample name /metrics can carry, also of families that have no sample yet
    (a counter `x` is queried as `x_total`, a histogram as `x_bucket`, `x_sum`, `x_count`)."""
    names: set[str] = set()
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}
    for family in text_string_to_metric_families(lb.api("GET", "/metrics").text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
    return names


def metric_value(lb, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(lb.api("GET", "/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"{name} {labels} is not exported")


def queried_names(expression: str) -> set[str]:
    return set(re.findall(r"\bmedlb_[a-z0-9_]+", expression))


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    def panels(items):  # type: ignore[no-untyped-def]
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    board = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in panels(board["panels"]) for target in panel.get("targets", [])]
    queries += [variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
                for variable in board["templating"]["list"] if variable["type"] == "query"]
    return queries


# --- metrics the alerts need ------------------------------------------------------------


def test_the_admin_certificate_expiry_is_exported(every_mode):
    days = metric_value(every_mode, "medlb_admin_certificate_days_left")

    assert 9 < days <= 10


def test_hl7_messages_refused_are_counted_from_zero_by_who_refused(every_mode, tmp_path):
    """A counter that exists from the start, so an alert's increase() sees the first refusal."""
    assert metric_value(every_mode, "medlb_mllp_refused_messages_total", service="adt", refused_by="medlb") == 0
    assert metric_value(every_mode, "medlb_mllp_refused_messages_total", service="adt", refused_by="server") == 0
    import hl7.client

    port = int(every_mode.config["services"][1]["listen"][0].rsplit(":", 1)[1])
    with hl7.client.MLLPClient(LOOPBACK, port) as client:
        answer = client.send_message(adt("REFUSED1", "P1"))
    assert b"MSA|AE|REFUSED1" in answer  # no server: medlb answers AE itself

    assert metric_value(every_mode, "medlb_mllp_refused_messages_total", service="adt", refused_by="medlb") == 1
