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


# --- the alert rules ----------------------------------------------------------------------


def test_the_alert_rules_pass_promtool_check():
    promtool = need_tool("promtool")

    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_each_alert_fires_on_what_it_names_and_not_before():
    promtool = need_tool("promtool")

    result = subprocess.run([promtool, "test", "rules", ALERT_TESTS.name], cwd=ALERT_TESTS.parent,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert tested == {rule["alert"] for rule in alert_rules()}


def test_the_issue_s_alerts_are_all_there():
    names = {rule["alert"] for rule in alert_rules()}

    assert {"MedlbServiceDown", "MedlbOnBackupCluster", "MedlbServerDown", "MedlbCertificateExpiring",
            "MedlbAdminCertificateExpiring", "MedlbWorkerRestarted", "MedlbHl7MessagesRefused"} <= names


# --- the dashboard and the rules query only what medlb exports --------------------------------


def test_every_metric_the_alerts_query_is_exported(every_mode):
    exported = exported_names(every_mode)
    queried = set().union(*(queried_names(rule["expr"]) for rule in alert_rules()))

    assert queried and queried <= exported, f"not exported: {sorted(queried - exported)}"


def test_every_metric_the_dashboard_queries_is_exported(every_mode):
    exported = exported_names(every_mode)
    queried = set().union(*map(queried_names, dashboard_queries()))

    assert len(queried) > 30
    assert queried <= exported, f"not exported: {sorted(queried - exported)}"


def test_every_dashboard_query_parses_as_promql(tmp_path):
    """promtool parses PromQL in rule files: each panel's query becomes a recording rule."""
    promtool = need_tool("promtool")
    rules = []
    for index, query in enumerate(q for q in dashboard_queries() if not q.startswith("label_values(")):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, query
        rules.append({"record": f"dashboard:query_{index}", "expr": query})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


# --- a real Prometheus, with the documented scrape config ------------------------------------


def documented_prometheus_config() -> dict:
    """The YAML block of docs/monitoring.md that holds `scrape_configs`, as written."""
    blocks = re.findall(r"```yaml\n(.*?)```", MONITORING.read_text(), re.S)
    return yaml.safe_load(next(block for block in blocks if "scrape_configs:" in block))


def test_prometheus_scrapes_medlb_with_the_documented_config_and_evaluates_the_rules(every_mode, tmp_path):
    prometheus = need_tool("prometheus")
    config = documented_prometheus_config()
    job = config["scrape_configs"][0]
    assert job["authorization"]["type"] == "Bearer" and job["scheme"] == "https"
    # Only the site's paths, names and intervals change: a CA file, the token file, this
    # medlb's address (its certificate names localhost), and seconds instead of minutes.
    (tmp_path / "ca.pem").write_bytes(every_mode.ca.path.read_bytes())
    (tmp_path / "token").write_text(PROMETHEUS_TOKEN + "\n")
    job["tls_config"]["ca_file"] = str(tmp_path / "ca.pem")
    job["authorization"]["credentials_file"] = str(tmp_path / "token")
    job["static_configs"] = [{"targets": [f"localhost:{every_mode.admin_port}"]}]
    job["scrape_interval"] = "1s"
    config["rule_files"] = [str(ALERTS)]
    config["global"] = {"evaluation_interval": "1s"}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    api = f"http://{LOOPBACK}:{port}/api/v1"
    proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address={LOOPBACK}:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
    try:
        def get(path: str, **params: str) -> dict:
            try:
                return httpx.get(f"{api}/{path}", params=params, timeout=5).json()["data"]
            except httpx.HTTPError:
                return {}

        def active_alerts() -> dict[str, set[str]]:
            found: dict[str, set[str]] = {}
            for alert in get("alerts").get("alerts", []):
                found.setdefault(alert["labels"]["alertname"], set()).add(alert["labels"].get("service", ""))
            return found

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                get("query", query='up{job="medlb"}').get("result")
                and "MedlbServiceDown" in active_alerts() and "MedlbAdminCertificateExpiring" in active_alerts()):
            time.sleep(0.5)
        log = (tmp_path / "prometheus.log").read_text(errors="replace")
        up = get("query", query='up{job="medlb"}')["result"]
        assert up and up[0]["value"][1] == "1", f"the scrape failed: {get('targets')}\n{log[-2000:]}"
        servers = get("query", query="medlb_server_up")["result"]
        assert {s["metric"]["server"] for s in servers} >= {"A", "B", "engine", "web", "pacs1"}
        rules = [rule for group in get("rules")["groups"] for rule in group["rules"]]
        assert len(rules) == len(alert_rules())
        assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
        alerts = active_alerts()
        assert alerts["MedlbServiceDown"] == {"adt", "viewer", "pacs"}  # their one server is down
        assert "MedlbAdminCertificateExpiring" in alerts  # 10 days left
        assert "MedlbCertificateExpiring" not in alerts  # the service's has 90
    finally:
        proc.terminate()
        proc.wait(timeout=30)
