"""`medlb check` finds every problem in one pass: the checks that span keys run next to
the key errors, problems come sorted by line with the names along the path, YAML
errors say line and column, and each numeric or enum key explains itself in words."""

from __future__ import annotations

import pytest
from config_helpers import one_service, only_problem, problems

from medlb.config import Problem


def test_cross_checks_run_even_when_other_keys_are_wrong():
    found = problems("""
        services:
          - name: vna
            listen: 127.0.0.1:11104
            servers:
              - {name: a, address: "10.0.0.1", weight: -1}
              - {name: a, address: "10.0.0.2"}
          - name: vna
            listen: 127.0.0.1:11104
            helth: {type: tcp}
            servers:
              - {name: b, address: "10.0.0.3"}
        """)
    assert {p.path for p in found} == {
        "services[0].servers[0].weight",   # a key error
        "services[0].servers[1].name",     # a server name used twice
        "services[1].name",                # a service name used twice
        "services[1].listen[0]",           # a port used twice
        "services[1].helth",               # a key error
    }


def test_the_checks_of_a_valid_service_run_next_to_an_invalid_one():
    found = problems("""
        services:
          - name: broken
            listen: 127.0.0.1:11104
            mode: teleport
            servers: [{name: a, address: "10.0.0.1"}]
          - name: web
            mode: http
            listen: 127.0.0.1:11105
            servers: [{name: b, address: "10.0.0.2"}]
        """)
    assert {p.path for p in found} == {"services[0].mode", "services[1].servers[0].address"}


def test_problems_are_sorted_by_line():
    found = problems("""
        services:
          - name: vna
            listen: 127.0.0.1:11104
            servers:
              - {name: a, address: "10.0.0.1"}
              - {name: a, address: "10.0.0.2"}
            limits: {idle_timeout: forever}
          - name: ris
            listen: 127.0.0.1:11104
            servers: [{name: b, address: "10.0.0.3", weight: heavy}]
        """)
    assert [p.line for p in found] == sorted(p.line for p in found)
    assert [p.path for p in found] == ["services[0].servers[1].name", "services[0].limits.idle_timeout",
                                       "services[1].listen[0]", "services[1].servers[0].weight"]


def test_the_path_shows_the_name_of_each_list_item_beside_its_index():
    problem = only_problem("""
        services:
          - name: pacs
            listen: 127.0.0.1:11104
            servers: [{name: p1, address: "10.0.0.1"}]
          - name: vna
            listen: 127.0.0.1:11105
            servers:
              - {name: vna1, address: "10.0.0.1:99999"}
        """)
    assert problem.path == "services[1].servers[0].address"
    assert str(problem).startswith("services[1] (vna).servers[0] (vna1).address (line 8): ")


def test_a_problem_that_names_another_item_names_it_too():
    problem = only_problem("""
        services:
          - name: pacs
            listen: 127.0.0.1:11104
            servers: [{name: p1, address: "10.0.0.1"}]
          - name: ris
            listen: 127.0.0.1:11104
            servers: [{name: r1, address: "10.0.0.2"}]
        """)
    assert "already a listen address of services[0] (pacs)" in problem.message


def test_a_yaml_syntax_error_gives_line_and_column():
    problem = only_problem("""
        services:
          - name: svc
            listen: ["0.0.0.0:104"
            servers: []
        """)
    assert "not valid YAML" in problem.message
    assert (problem.line, problem.column) == (4, 5)
    assert str(problem).startswith("(top level) (line 4, column 5): not valid YAML")


def test_a_problem_without_a_column_prints_as_before():
    assert str(Problem("services[0].mode", 3, "bad")) == "services[0].mode (line 3): bad"


def one_server(extra: str) -> str:
    return f"""
        services:
          - name: svc
            listen: 127.0.0.1:11104
            servers: [{{name: s1, address: "10.0.0.1"{extra}}}]
        """


@pytest.mark.parametrize(("text", "words"), [
    (one_server(", weight: -1"), "a weight is 0 (no new work) to 1000, not -1"),
    (one_server(", weight: 1001"), "a weight is 0 (no new work) to 1000, not 1001"),
    (one_server(", weight: heavy"), "a weight is a whole number, not 'heavy'"),
    (one_service("health: {type: tcp, port: 0}"), "a port is 1 to 65535, not 0"),
    (one_service("health: {type: tcp, rise: 0}"), "rise (checks passed in a row before a server counts as up) "
                                                  "is 1 to 100, not 0"),
    (one_service("health: {type: http, verify: maybe}"), "verify is true or false, not 'maybe'"),
    (one_service("health: {type: tcp, interval: 0s}"), "interval is a duration of at least 10ms"),
    (one_service("limits: {buffer_size: 1KiB}"), "buffer_size is a size from 4KiB to 64MiB, not 1KiB"),
    (one_service("limits: {max_connections: 0}"), "max_connections is 1 to 1000000, not 0"),
    (one_service("mode: teleport"), "mode is one of 'tcp', 'dicom', 'mllp', 'http', 'l4-nat' or 'l4-dr', "
                                    "not 'teleport'"),
    (one_service("failback: sometimes"), "failback is one of 'auto' or 'manual', not 'sometimes'"),
    ("services:\n  - name: svc\n    listen: 127.0.0.1:11104\n    servers: []\n", "a service needs at least one server"),
    (one_service("backup: {name: b}"), "backup is a list (one '- ' item a line, or [a, b]), not a mapping"),
    ("services:\n  - name: 'two words'\n    listen: 127.0.0.1:11104\n    servers: [{name: s1, address: x}]\n",
     "a name is 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit; 'two words' is not"),
    (one_service("backup: [5]"), "each entry of backup is a section of keys (key: value), not 5"),
    ("workers: 0\n", "workers is 1 to 64, not 0"),
    ("ha: {nodes: [{name: a, address: foo, priority: 1}, {name: b, address: 198.18.0.5, priority: 2}], "
     "interface: eth0, virtual_router_id: 1, vips: [198.18.0.100/24], sync_token_file: t}\n",
     "address is an IPv4 address such as 198.18.0.4, not 'foo'"),
    ("admin: {token: short}\n", "a token has at least 16 characters"),
    ("admin: 5\n", "admin is a section of keys (key: value), not 5"),
])
def test_common_mistakes_are_explained_in_words(text, words):
    problem = only_problem(text)
    assert words in problem.message
    assert "Input should" not in problem.message


def test_a_key_written_twice_does_not_hide_the_other_problems():
    found = problems("""
        services:
          - name: vna
            listen: 127.0.0.1:11104
            listen: 127.0.0.1:11105
            servers: [{name: a, address: "10.0.0.1", weight: -1}]
            [x]: 1
        """)
    assert [(p.path, p.line, p.message.split(" (")[0].split(",")[0]) for p in found] == [
        ("services[0].listen", 4, "this key appears twice"),
        ("services[0].servers[0].weight", 5, "a weight is 0"),
        ("services[0]", 6, "keys must be plain words"),
    ]
