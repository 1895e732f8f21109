"""The config loader: what validates, and every problem explained with its path and line."""

import textwrap

import pytest
from config_helpers import only_problem, problems, yaml

from medlb.config import ConfigError, Problem, parse_config
from medlb.config.units import HostPort

EXAMPLE = """\
admin:
  listen: 127.0.0.1:9443
  token: change-me-to-a-long-secret
state_dir: ./var
services:
  - name: vna
    mode: tcp
    listen: ["0.0.0.0:12000", "0.0.0.0:12100", "0.0.0.0:12300-12301"]
    scheduler: roundrobin
    persistence: {type: source-ip, timeout: 300s}
    health: {type: tcp, interval: 2s, timeout: 1s, rise: 2, fall: 3}
    failback: auto
    servers:
      - {name: vna1, address: "vna1.site-a.example", weight: 2}
      - {name: vna2, address: "vna2.site-a.example:12000"}
    backup:
      - {name: dr-vna1, address: "vna1.site-b.example"}
    limits: {max_connections: 10000, connect_timeout: 3s, idle_timeout: 1h}
"""




def service(body: str = "", name: str = "svc", listen: str = "0.0.0.0:104") -> str:
    """One service's YAML (indented as a list item under `services:`)."""
    head = f"  - name: {name}\n    listen: [\"{listen}\"]\n    servers: [{{name: s1, address: \"10.0.0.1\"}}]\n"
    return head + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + ("\n" if body else "")


def services(*items: str) -> str:
    return "services:\n" + "".join(items)


# --- the example ---------------------------------------------------------------------


def test_example_config_validates():
    loaded = parse_config(EXAMPLE)
    assert loaded.warnings == []
    vna = loaded.config.services[0]
    assert vna.name == "vna"
    assert [s.name for s in vna.servers] == ["vna1", "vna2"]
    assert [s.name for s in vna.backup] == ["dr-vna1"]


def test_example_listen_expands_to_four_addresses():
    vna = parse_config(EXAMPLE).config.services[0]
    assert vna.addresses == [HostPort("0.0.0.0", p) for p in (12000, 12100, 12300, 12301)]


def test_example_units_are_converted():
    vna = parse_config(EXAMPLE).config.services[0]
    assert vna.persistence.type == "source-ip"
    assert vna.persistence.timeout == 300.0
    assert (vna.health.interval, vna.health.timeout, vna.health.rise, vna.health.fall) == (2.0, 1.0, 2, 3)
    assert (vna.limits.connect_timeout, vna.limits.idle_timeout) == (3.0, 3600.0)
    assert vna.servers[0].weight == 2 and vna.servers[1].weight == 1
    assert vna.servers[0].address == HostPort("vna1.site-a.example", None)
    assert vna.servers[1].address == HostPort("vna2.site-a.example", 12000)


def test_example_admin_section():
    admin = parse_config(EXAMPLE).config.admin
    assert admin.listen == HostPort("127.0.0.1", 9443)
    assert admin.token == "change-me-to-a-long-secret"


# --- unknown keys, types, units ------------------------------------------------------


def test_unknown_key_is_an_error_with_path_and_line():
    text = EXAMPLE.replace("idle_timeout: 1h", "idle_timout: 1h")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    [problem] = caught.value.problems
    assert problem.path == "services[0].limits.idle_timout"
    assert problem.line == 18
    assert str(problem).startswith("services[0] (vna).limits.idle_timout (line 18): ")
    assert "unknown key" in problem.message


def test_unknown_top_level_key():
    problem = only_problem("servises: []\n")
    assert (problem.path, problem.line) == ("servises", 1)


def test_misspelled_section_in_a_service():
    problem = only_problem(services(service("helth: {type: tcp}")))
    assert (problem.path, problem.line) == ("services[0].helth", 5)


def test_wrong_type_weight():
    problem = only_problem("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"]
            servers:
              - {name: s1, address: "10.0.0.1"}
              - {name: s2, address: "10.0.0.2", weight: heavy}
        """)
    assert (problem.path, problem.line) == ("services[0].servers[1].weight", 6)


def test_wrong_type_services_not_a_list():
    problem = only_problem("services: {name: svc}\n")
    assert problem.path == "services"


def test_negative_weight_is_an_error():
    problem = only_problem("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"]
            servers: [{name: s1, address: "10.0.0.1", weight: -1}]
        """)
    assert problem.path == "services[0].servers[0].weight"


def test_bad_duration_is_an_error_with_the_expected_form():
    problem = only_problem(services(service("limits: {connect_timeout: 3x}")))
    assert (problem.path, problem.line) == ("services[0].limits.connect_timeout", 5)
    assert "expected a duration" in problem.message


def test_bad_duration_in_health_check_path_skips_the_union_tag():
    problem = only_problem(services(service("health: {type: tcp, interval: soon}")))
    assert problem.path == "services[0].health.interval"


def test_bad_server_address():
    problem = only_problem("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"]
            servers:
              - {name: s1, address: "10.0.0.1:99999"}
        """)
    assert (problem.path, problem.line) == ("services[0].servers[0].address", 5)
    assert "1-65535" in problem.message


def test_bad_listen_range():
    problem = only_problem(services(service(listen="0.0.0.0:12301-12300")))
    assert problem.path == "services[0].listen[0]"
    assert "backwards" in problem.message


def test_unknown_mode_lists_the_allowed_ones():
    problem = only_problem(services(service("mode: dicomm")))
    assert problem.path == "services[0].mode"
    assert "'dicomm'" in problem.message and "'dicom'" in problem.message


def test_health_timeout_longer_than_interval_is_an_error():
    problem = only_problem(services(service("health: {type: tcp, interval: 1s, timeout: 2s}")))
    assert problem.path == "services[0].health.timeout"


@pytest.mark.parametrize("interval,timeout", [("1s", 1.0), ("500ms", 0.5), ("2s", 2.0), ("10s", 2.0)])
def test_an_unwritten_health_timeout_is_the_smaller_of_2s_and_the_interval(interval, timeout):
    loaded = parse_config(yaml(services(service(f"health: {{type: tcp, interval: {interval}}}"))))

    assert loaded.config.services[0].health.timeout == timeout
    assert not loaded.warnings


def test_a_written_health_timeout_is_kept_even_under_2s_and_the_interval():
    loaded = parse_config(yaml(services(service("health: {type: tcp, interval: 1s, timeout: 300ms}"))))

    assert loaded.config.services[0].health.timeout == 0.3


# --- uniqueness and conflicts --------------------------------------------------------


def test_duplicate_service_names():
    problem = only_problem(services(service(name="vna", listen="0.0.0.0:104"),
                                    service(name="vna", listen="0.0.0.0:105")))
    assert (problem.path, problem.line) == ("services[1].name", 5)  # the second "- name:" line
    assert "services[0]" in problem.message


def test_two_services_on_one_listen_address():
    problem = only_problem(services(service(name="a", listen="10.0.0.9:104"),
                                    service(name="b", listen="10.0.0.9:104")))
    assert problem.path == "services[1].listen[0]"
    assert "services[0]" in problem.message


def test_wildcard_listen_overlaps_a_specific_address_of_another_service():
    problem = only_problem(services(service(name="a", listen="0.0.0.0:104"),
                                    service(name="b", listen="127.0.0.1:104")))
    assert problem.path == "services[1].listen[0]"


def test_listen_range_overlapping_another_service():
    problem = only_problem(services(service(name="a", listen="0.0.0.0:12300-12310"),
                                    service(name="b", listen="10.0.0.9:12305")))
    assert problem.path == "services[1].listen[0]"


def test_same_port_on_different_addresses_is_fine():
    parse_config(yaml(services(service(name="a", listen="10.0.0.8:104"),
                               service(name="b", listen="10.0.0.9:104"))))


def test_same_address_listed_twice_in_one_service():
    text = services(service(listen="0.0.0.0:104")).replace('["0.0.0.0:104"]', '["0.0.0.0:104", "0.0.0.0:104"]')
    problem = only_problem(text)
    assert problem.path == "services[0].listen[1]"


def test_duplicate_server_names_in_servers():
    problem = only_problem("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"]
            servers:
              - {name: s1, address: "10.0.0.1"}
              - {name: s1, address: "10.0.0.2"}
        """)
    assert (problem.path, problem.line) == ("services[0].servers[1].name", 6)


def test_duplicate_server_names_across_servers_and_backup():
    problem = only_problem("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"]
            servers: [{name: s1, address: "10.0.0.1"}]
            backup: [{name: s1, address: "10.0.1.1"}]
        """)
    assert problem.path == "services[0].backup[0].name"
    assert "services[0] (svc).servers[0] (s1)" in problem.message


def test_same_server_name_in_two_services_is_fine():
    parse_config(yaml(services(service(name="a", listen="0.0.0.0:104"),
                               service(name="b", listen="0.0.0.0:105"))))


def test_admin_listen_overlapping_a_service_is_an_error():
    text = EXAMPLE.replace('"0.0.0.0:12000"', '"0.0.0.0:9443"')
    with pytest.raises(ConfigError):
        parse_config(text)


# --- YAML itself ---------------------------------------------------------------------


def test_duplicate_yaml_key_is_an_error_with_line():
    problem = only_problem("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"]
            servers: [{name: s1, address: "10.0.0.1"}]
            listen: ["0.0.0.0:105"]
        """)
    assert (problem.path, problem.line) == ("services[0].listen", 5)
    assert "twice" in problem.message


def test_yaml_merge_key_with_override_is_accepted():
    loaded = parse_config(yaml("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"]
            servers:
              - &srv {name: s1, address: "10.0.0.1", weight: 2}
              - <<: *srv
                name: s2
                address: "10.0.0.2"
        """))
    s2 = loaded.config.services[0].servers[1]
    assert (s2.name, s2.address, s2.weight) == ("s2", HostPort("10.0.0.2"), 2)


def test_invalid_yaml_gives_a_line_number():
    problem = only_problem("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"
            servers: []
        """)
    assert problem.line in (3, 4)
    assert "not valid YAML" in problem.message


def test_invalid_yaml_bad_indentation_gives_a_line_number():
    problem = only_problem("services:\n  - name: svc\n   listen: x\n")
    assert problem.line == 3


def test_file_that_is_not_a_mapping():
    problem = only_problem("- just\n- a list\n")
    assert "mapping" in problem.message


# --- required keys -------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["name", "listen", "servers"])
def test_missing_required_service_key(missing):
    lines = {"name": "    name: svc\n", "listen": "    listen: [\"0.0.0.0:104\"]\n",
             "servers": "    servers: [{name: s1, address: \"10.0.0.1\"}]\n"}
    body = "".join(line for key, line in lines.items() if key != missing)
    problem = only_problem("services:\n  - mode: tcp\n" + body)
    assert problem.path == f"services[0].{missing}"
    assert problem.line == 2  # the line of the service that lacks it
    assert "required" in problem.message


def test_missing_server_address():
    problem = only_problem("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"]
            servers:
              - {name: s1}
        """)
    assert (problem.path, problem.line) == ("services[0].servers[0].address", 5)


def test_empty_servers_list_is_an_error():
    problem = only_problem("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"]
            servers: []
        """)
    assert problem.path == "services[0].servers"


# --- admin ---------------------------------------------------------------------------


def test_admin_without_token_is_an_error():
    problem = only_problem("""
        admin:
          listen: 127.0.0.1:9443
        services: []
        """)
    assert (problem.path, problem.line) == ("admin", 1)
    assert "token" in problem.message


def test_short_admin_token_is_an_error():
    problem = only_problem("""
        admin:
          token: short
        """)
    assert (problem.path, problem.line) == ("admin.token", 2)


def test_short_named_token_is_an_error():
    problem = only_problem("""
        admin:
          tokens:
            - {name: ops, token: "fifteen-chars!!"}
        """)
    assert problem.path == "admin.tokens[0].token"


def test_sixteen_char_token_is_accepted():
    parse_config("admin: {token: sixteen-chars-ok}\n")


def test_named_token_needs_token_or_token_file():
    problem = only_problem("""
        admin:
          tokens:
            - {name: ops}
        """)
    assert problem.path == "admin.tokens[0]"


# --- not yet available, shorthands --------------------------------------------------


def test_the_meditech_api_example_of_issue_5_runs_as_written():
    loaded = parse_config("""
services:
  - name: meditech-api
    mode: http
    listen: ["0.0.0.0:443"]
    tls: {cert: /etc/medlb/api.pem, key: /etc/medlb/api.key}      # offload
    backend_tls: {verify: true, ca: /etc/medlb/backend-ca.pem}     # add this for bridging
    persistence: {type: cookie, name: MEDLBSRV}                    # or source-ip
    health: {type: http, path: /health, expect_status: 200, interval: 5s, timeout: 2s, rise: 2, fall: 3}
    servers:
      - {name: api1, address: "api1.example:8443"}
      - {name: api2, address: "api2.example:8443"}
""")
    assert loaded.warnings == []
    service = loaded.config.services[0]
    assert service.http is not None and service.http.redirect_http is False


def test_tls_on_a_mode_without_it_is_refused_to_run():
    loaded = parse_config("""
services:
  - name: adt
    mode: mllp
    listen: ["127.0.0.1:2575"]
    tls: {cert: a.pem, key: a.key}
    servers: [{name: a, address: "10.0.0.1:2575"}]
""")
    [warning] = loaded.warnings
    assert warning.path == "services[0].tls"


def test_http_mode_needs_ports_on_servers():
    problem = only_problem(services(service("mode: http")))
    assert problem.path == "services[0].servers[0].address"


def test_persistence_shorthand():
    loaded = parse_config(yaml(services(service("persistence: source-ip"))))
    persistence = loaded.config.services[0].persistence
    assert persistence.type == "source-ip"
    assert persistence.timeout == 300.0


def test_unknown_persistence_type_is_an_error():
    problem = only_problem(services(service("persistence: sticky")))
    assert problem.path == "services[0].persistence"
    assert "'sticky'" in problem.message


def test_expect_status_single_number_becomes_a_list():
    loaded = parse_config(yaml(services(service("health: {type: http, path: /healthz, expect_status: 200}"))))
    assert loaded.config.services[0].health.expect_status == [200]


def test_expect_status_list_is_kept():
    loaded = parse_config(yaml(services(service("health: {type: http, expect_status: [200, 204]}"))))
    assert loaded.config.services[0].health.expect_status == [200, 204]


def test_health_check_path_must_be_absolute():
    problem = only_problem(services(service("health: {type: http, path: healthz}")))
    assert problem.path == "services[0].health.path"


# --- many problems at once, and how they print --------------------------------------


def test_several_problems_are_reported_at_once():
    found = problems("""
        services:
          - name: svc
            listen: ["0.0.0.0:0"]
            servers:
              - {name: s1, address: "10.0.0.1", wieght: 2}
              - {name: s2, address: "bad host"}
            limits: {idle_timeout: forever}
        """)
    paths = {p.path for p in found}
    assert paths == {
        "services[0].listen[0]",
        "services[0].servers[0].wieght",
        "services[0].servers[1].address",
        "services[0].limits.idle_timeout",
    }


def test_cross_service_problems_are_reported_together():
    found = problems("""
        admin: {listen: "127.0.0.1:9443"}
        services:
          - name: a
            listen: ["0.0.0.0:104"]
            servers: [{name: s1, address: "10.0.0.1"}, {name: s1, address: "10.0.0.2"}]
          - name: a
            listen: ["0.0.0.0:104"]
            servers: [{name: s1, address: "10.0.0.1"}]
        """)
    assert {p.path for p in found} == {
        "admin", "services[0].servers[1].name", "services[1].name", "services[1].listen[0]",
    }


def test_config_error_message_lists_every_problem():
    with pytest.raises(ConfigError) as caught:
        parse_config(EXAMPLE.replace("weight: 2", "weight: two").replace("idle_timeout: 1h", "idle_timeout: 1y"),
                     source="medlb.yaml")
    text = str(caught.value)
    assert text.startswith("medlb.yaml: 2 problem(s)")
    assert "services[0] (vna).servers[0] (vna1).weight (line 14): " in text
    assert "services[0] (vna).limits.idle_timeout (line 18): " in text


def test_problem_str_format():
    assert str(Problem("services[2].servers[0].address", 7, "bad port")) == \
        "services[2].servers[0].address (line 7): bad port"
    assert str(Problem("", None, "cannot read the file")) == "(top level): cannot read the file"


def test_the_same_token_value_twice_is_an_error():
    text = """
admin:
  token: the-same-secret-value-1234
  tokens:
    - {name: noc, token: the-same-secret-value-1234, role: operator}
services: []
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert [p.path for p in caught.value.problems] == ["admin.tokens[0].token"]


# --- mllp: the budget for unfinished messages ----------------------------------------


def test_partial_frames_budget_defaults_to_256_mib_and_may_equal_max_message_size():
    loaded = parse_config(yaml(services(service("mode: mllp"))))
    assert loaded.config.services[0].mllp.partial_frames_budget == 256 * 1024 * 1024
    edge = parse_config(yaml(services(service("mode: mllp\nmllp: {max_message_size: 1MiB, partial_frames_budget: 1MiB}"))))
    assert edge.config.services[0].mllp.partial_frames_budget == 1024 * 1024


def test_a_partial_frames_budget_below_max_message_size_is_refused_with_its_path():
    problem = only_problem(services(service("mode: mllp\nmllp: {max_message_size: 1MiB, partial_frames_budget: 512KiB}")))
    assert problem.path == "services[0].mllp.partial_frames_budget"
    assert "max_message_size" in problem.message


# --- mllp: messages in flight per server connection -----------------------------------


def test_pipeline_defaults_to_one_message_at_a_time_and_takes_1_to_64():
    assert parse_config(yaml(services(service("mode: mllp")))).config.services[0].mllp.pipeline == 1
    for edge in (1, 64):
        loaded = parse_config(yaml(services(service(f"mode: mllp\nmllp: {{pipeline: {edge}}}"))))
        assert loaded.config.services[0].mllp.pipeline == edge
    for outside in (0, 65):
        problem = only_problem(services(service(f"mode: mllp\nmllp: {{pipeline: {outside}}}")))
        assert problem.path == "services[0].mllp.pipeline"
