"""`medlb check` reads every file the config names, as `medlb run` will, and refuses a
server that is one of medlb's own listen addresses."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from config_helpers import ha_config, one_service, only_problem, problems
from tlscerts import TestCA

from medlb.config import ConfigError, load_config, parse_config


def load_problems(tmp_path: Path, text: str) -> list[str]:
    """Every problem of a config file written into tmp_path, as `medlb check` prints them."""
    path = tmp_path / "medlb.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(problem) for problem in caught.value.problems]


def tls_service(tls: str) -> str:
    return one_service(f"tls: {tls}", name="pacs")


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


def test_a_missing_certificate_names_the_key_and_the_file(tmp_path):
    (tmp_path / "pacs.key").write_text("")
    found = load_problems(tmp_path, tls_service("{cert: pacs.pem, key: pacs.key}"))
    assert found[0].startswith("services[0] (pacs).tls.cert (line 5): cannot read ")
    assert f"{tmp_path / 'pacs.pem'}: No such file or directory" in found[0]
    assert any(p.startswith("services[0] (pacs).tls.key") and "holds no PEM private key" in p for p in found)


def test_a_file_that_is_not_pem_is_named(tmp_path, ca):
    issued = ca.issue("pacs")
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    found = load_problems(tmp_path, tls_service(f"{{cert: garbage.pem, key: {issued.key}}}"))
    assert found == [f"services[0] (pacs).tls.cert (line 5): {tmp_path / 'garbage.pem'} holds no PEM certificate "
                     "(a -----BEGIN CERTIFICATE----- block)"]


def test_a_key_that_does_not_match_its_certificate_is_refused(tmp_path, ca):
    pacs, other = ca.issue("pacs"), ca.issue("other")
    found = load_problems(tmp_path, tls_service(f"{{cert: {pacs.cert}, key: {other.key}}}"))
    assert len(found) == 1
    assert found[0].startswith(f"services[0] (pacs).tls.key (line 5): the key in {other.key} does not match "
                               f"the certificate in {pacs.cert}")


def test_a_matching_pair_and_a_ca_pass(tmp_path, ca):
    pacs = ca.issue("pacs")
    path = tmp_path / "medlb.yaml"
    path.write_text(textwrap.dedent(tls_service(
        f"{{cert: {pacs.cert}, key: {pacs.key}, client_ca: {ca.path}, verify_client: required}}")))
    assert load_config(path).config.services[0].tls is not None


def test_every_named_file_is_read_and_each_failure_reported_in_one_pass(tmp_path, ca):
    pacs = ca.issue("pacs")
    (tmp_path / "empty-token").write_text("\n")
    found = load_problems(tmp_path, f"""
        admin:
          token_file: missing-token
          tokens:
            - {{name: noc, token_file: empty-token}}
          tls: {{cert: {pacs.cert}, key: {ca.path}}}
        services:
          - name: pacs
            listen: 127.0.0.1:11112
            servers: [{{name: p1, address: "10.0.0.1:104"}}]
            backend_tls: {{ca: {pacs.key}}}
            health: {{type: https, ca: nowhere.pem}}
        """)
    assert [problem.split(":")[0] for problem in found] == [
        "admin.token_file (line 2)",
        "admin.tokens[0] (noc).token_file (line 4)",
        "admin.tls.key (line 5)",
        "services[0] (pacs).backend_tls.ca (line 10)",
        "services[0] (pacs).health.ca (line 11)",
    ]
    assert "missing-token: No such file" in found[0]
    assert "empty-token is empty" in found[1]
    assert "holds no PEM private key" in found[2]
    assert "holds no PEM CA certificate" in found[3]
    assert "nowhere.pem: No such file" in found[4]


def test_the_files_are_read_only_when_asked_so_an_uploaded_text_can_be_checked_alone():
    parse_config(textwrap.dedent(tls_service("{cert: pacs.pem, key: pacs.key}")))


@pytest.mark.parametrize(("tls", "path", "words"), [
    ("{cert: a.pem}", "services[0].tls.cert", "tls.cert needs tls.key"),
    ("{key: a.key}", "services[0].tls.key", "tls.key needs tls.cert"),
    ("{policy: modern}", "services[0].tls", "tls needs cert and key, or certificates"),
    ("{cert: a.pem, key: a.key, verify_client: required}", "services[0].tls.verify_client", "needs client_ca"),
])
def test_a_tls_section_medlb_could_not_load_is_refused_by_check(tls, path, words):
    problem = only_problem(tls_service(tls))
    assert problem.path == path and words in problem.message


# --- medlb's own listen addresses ----------------------------------------------------


def loop_problem(listen: str, server: str, extra: str = "") -> str:
    found = problems(f"""
        services:
          - name: ris
            listen: {listen}
            servers: [{{name: r1, address: "{server}"}}]
        {extra}""")
    assert [p.path for p in found] == ["services[0].servers[0].address"], found
    return found[0].message


@pytest.mark.parametrize(("listen", "server"), [
    ("127.0.0.1:11104", "127.0.0.1:11104"),
    ("0.0.0.0:11104", "127.0.0.1:11104"),
    ("0.0.0.0:11104", "localhost:11104"),
    ('"[::]:11104"', "[::1]:11104"),
    ("127.0.0.1:11104-11105", "127.0.0.1"),
])
def test_a_server_that_is_medlbs_own_listen_address_is_refused(listen, server):
    message = loop_problem(listen, server)
    assert "is medlb's own listen address (services[0] (ris).listen[0])" in message
    assert "loop back into medlb" in message


def test_a_server_that_is_another_services_listen_address_is_refused():
    message = loop_problem("127.0.0.1:11104", "127.0.0.1:11200", """
          - name: pacs
            listen: 127.0.0.1:11200
            servers: [{name: p1, address: "10.0.0.1:104"}]
        """)
    assert "services[1] (pacs).listen[0]" in message


@pytest.mark.parametrize(("listen", "server"), [
    ("127.0.0.1:11104", "127.0.0.1:11105"),
    ("127.0.0.1:11104", "127.0.0.2:11104"),
    ("0.0.0.0:11104", "10.0.0.1"),
    ("127.0.0.2:11104", "localhost:11104"),
])
def test_a_server_on_another_port_or_host_is_no_loop(listen, server):
    parse_config(textwrap.dedent(f"""
        services:
          - name: ris
            listen: {listen}
            servers: [{{name: r1, address: "{server}"}}]
        """))


def test_a_server_at_this_hosts_own_address_behind_a_wildcard_listen_is_refused():
    text = textwrap.dedent("""
        services:
          - name: ris
            listen: 0.0.0.0:11104
            servers: [{name: r1, address: "192.0.2.7:11104"}]
        """)
    parse_config(text)  # another host's address, as far as the loader knows

    with pytest.raises(ConfigError) as caught:
        parse_config(text, local_hosts={"192.0.2.7"})

    [problem] = caught.value.problems
    assert problem.path == "services[0].servers[0].address" and "medlb's own listen address" in problem.message


@pytest.mark.parametrize("operator", ["token_file: ops-token", "tokens: [{name: noc, token_file: ops-token}]",
                                      "token: 0123456789abcdef-shared"])
def test_a_sync_token_that_is_also_an_operators_token_is_refused(tmp_path, operator):
    """The sync API takes a whole config and decisions as the peer's: with one secret for
    both, an operator's token would act as the peer (and the sync API refuses operators)."""
    (tmp_path / "ops-token").write_text("0123456789abcdef-shared\n")
    (tmp_path / "ha-token").write_text("0123456789abcdef-shared\n")
    found = load_problems(tmp_path, ha_config(admin=f'  listen: "0.0.0.0:9443"\n  {operator}\n',
                                              sync_token_file="ha-token"))
    assert len(found) == 1 and found[0].startswith("ha.sync_token_file (line "), found
    assert "ha-token holds an admin token of this config: give the pair a secret of its own" in found[0]
    assert "0123456789abcdef" not in found[0]  # a secret is never printed


def test_a_sync_token_of_its_own_passes(tmp_path):
    (tmp_path / "ops-token").write_text("0123456789abcdef-operator\n")
    (tmp_path / "ha-token").write_text("0123456789abcdef-the-pair\n")
    path = tmp_path / "medlb.yaml"
    path.write_text(ha_config(admin='  listen: "0.0.0.0:9443"\n  token_file: ops-token\n',
                              sync_token_file="ha-token"))
    assert load_config(path).config.ha is not None
