"""The dicom section, named pools and the DICOM checks in the config file."""

from __future__ import annotations

import textwrap

import pytest

from medlb.config import ConfigError, parse_config

# The issue's example, as written (plus the admin-less top level).
ISSUE_EXAMPLE = """\
services:
  - name: pacs
    mode: dicom
    listen: ["0.0.0.0:104", "0.0.0.0:11112"]
    scheduler: leastconn                  # counts associations
    dicom:
      ae_title: MEDLB                     # the balancer's own AE title (checks, rejects)
      allowed_calling_aes: [CT1, MR1, WS*]   # optional; glob patterns; others get A-ASSOCIATE-RJ 1,1,3
      routes:                             # optional; first match wins; default pool otherwise
        - {called_ae: ARCHIVE, pool: archive}
        - {calling_ae: "CT*", pool: default}
    health: {type: dicom-echo, calling_ae: MEDLB, interval: 5s, timeout: 3s, rise: 2, fall: 2}
    servers:                              # the default pool
      - {name: pacs1, address: "pacs1.example:104", ae_title: PACS1}   # called AE rewritten to PACS1
      - {name: pacs2, address: "pacs2.example:104", ae_title: PACS2}
    pools:
      archive:
        servers: [{name: vna1, address: "vna1.example:11112", ae_title: VNA1}]
        backup: [{name: vna-dr, address: "vna-dr.example:11112", ae_title: VNADR}]
"""


def dicom_service(extra: str = "", mode: str = "dicom") -> str:
    return "services:\n  - name: pacs\n    mode: " + mode + "\n    listen: [\"0.0.0.0:104\"]\n" \
        "    servers: [{name: p1, address: \"10.0.0.1\", ae_title: PACS1}]\n" \
        + textwrap.indent(textwrap.dedent(extra).strip("\n"), "    ") + "\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return [str(p) for p in caught.value.problems]


def test_the_issue_example_runs_as_written():
    loaded = parse_config(ISSUE_EXAMPLE)

    assert loaded.warnings == []
    service = loaded.config.services[0]
    assert service.dicom.allowed_calling_aes == ["CT1", "MR1", "WS*"]
    assert [r.pool for r in service.dicom.routes] == ["archive", "default"]
    assert service.dicom.unrouted == "default"
    assert set(service.all_pools()) == {"default", "archive"}
    assert service.limits.associate_timeout == 30.0 and service.limits.max_associate_size == 256 * 1024


def test_a_dicom_service_without_a_dicom_section_uses_the_defaults():
    loaded = parse_config(dicom_service())
    assert loaded.warnings == [] and loaded.config.services[0].dicom is None


def test_dicom_tls_is_available_but_mllp_tls_is_still_refused():
    tls = "tls: {cert: /c.pem, key: /k.pem}\nbackend_tls: {verify: true}"
    assert parse_config(dicom_service(tls)).warnings == []
    loaded = parse_config(dicom_service(tls, mode="mllp"))
    assert [w.path for w in loaded.warnings] == ["services[0].tls", "services[0].backend_tls"]


def test_named_pools_draw_a_note_only_outside_the_dicom_mode():
    pools = "pools: {archive: {servers: [{name: v1, address: \"10.0.0.2\"}]}}"
    assert parse_config(dicom_service(pools)).warnings == []
    [note] = parse_config(dicom_service(pools, mode="tcp")).warnings
    assert note.path == "services[0].pools" and "mode tcp does not use them" in note.message


def test_dicom_checks_are_available_in_any_mode():
    for mode in ("dicom", "tcp"):
        loaded = parse_config(dicom_service("health: {type: dicom-find, query: {StudyDate: '20240101'}}", mode))
        assert loaded.warnings == []
    check = parse_config(dicom_service("health: dicom-echo")).config.services[0].health
    assert (check.calling_ae, check.called_ae) == (None, None)


def test_unrouted_reject_needs_routes():
    [problem] = problems(dicom_service("dicom: {unrouted: reject}"))
    assert problem.startswith("services[0] (pacs).dicom.unrouted") and "every association" in problem
    loaded = parse_config(dicom_service("dicom: {unrouted: reject, routes: [{called_ae: PACS, pool: default}]}"))
    assert loaded.config.services[0].dicom.unrouted == "reject"


def test_a_route_to_an_unknown_pool_is_an_error():
    [problem] = problems(dicom_service("dicom: {routes: [{called_ae: ARCHIVE, pool: archive}]}"))
    assert problem.startswith("services[0] (pacs).dicom.routes[0].pool") and "no pool named 'archive'" in problem


@pytest.mark.parametrize("pattern", ["", "   ", "CT\\\\1", "É*", "A" * 65])
def test_bad_ae_patterns_are_errors(pattern):
    found = problems(dicom_service(f"dicom: {{allowed_calling_aes: [{pattern!r}]}}"))
    assert found and found[0].startswith("services[0] (pacs).dicom.allowed_calling_aes[0]")


def test_find_query_keys_must_be_dicom_keywords():
    [problem] = problems(dicom_service("health: {type: dicom-find, query: {PatientId: X}}"))
    assert "'PatientId' is not a DICOM keyword" in problem
    [problem] = problems(dicom_service("health: {type: dicom-find, query: {QueryRetrieveLevel: PATIENT}}"))
    assert "STUDY level" in problem
    default = parse_config(dicom_service("health: dicom-find")).config.services[0].health
    assert default.query == {"PatientID": "MEDLB-HEALTHCHECK"}


def test_medlb_check_summarises_dicom_routing_and_server_ae_titles():
    from medlb.cli import summary

    text = summary(parse_config(ISSUE_EXAMPLE))

    assert "dicom: AE MEDLB; calling AEs CT1, MR1, WS*; routes called ARCHIVE -> archive, " \
           "calling CT* -> default; unrouted default" in text
    assert "pacs1=pacs1.example:104 AE PACS1" in text
    assert "pool archive: backup:  vna-dr=vna-dr.example:11112 AE VNADR" in text
