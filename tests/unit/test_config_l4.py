"""The kernel layer 4 modes in the config file: the `l4:` section, and every key that
means nothing when the kernel forwards, refused with its path, line and reason."""

from __future__ import annotations

import textwrap

import pytest
from config_helpers import only_problem, problems

from medlb.config import parse_config
from medlb.config.models import INTERFACE_PATTERN, Limits
from medlb.kernel import ruleset

from l4_helpers import ISSUE_EXAMPLE



def l4_service(body: str = "", mode: str = "l4-dr", listen: str = "198.18.0.100:104",
               servers: str = '[{name: s1, address: "198.18.0.11"}]', l4: str | None = "{interface: lb0}") -> str:
    """A whole file with one L4 service; `body` adds keys to the service."""
    text = f"services:\n  - name: svc\n    mode: {mode}\n    listen: [\"{listen}\"]\n    servers: {servers}\n"
    if l4 is not None:
        text += f"    l4: {l4}\n"
    return text + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + ("\n" if body else "")



# --- the section and its defaults -----------------------------------------------------


def test_the_example_of_issue_13_runs_as_written():
    loaded = parse_config(ISSUE_EXAMPLE)

    assert loaded.warnings == [] and loaded.advisories == []
    dr, nat = loaded.config.services
    assert (dr.scheduler, nat.scheduler) == ("maglev", "maglev")
    assert dr.l4 is not None and nat.l4 is not None
    assert (dr.l4.interface, dr.l4.source_nat, dr.l4.manage_vip, dr.l4.on_stop, dr.l4.pin_timeout) == \
        ("lb0", False, True, "remove", 7200.0)
    assert nat.l4.source_nat is True


def test_l4_keys_take_their_values():
    loaded = parse_config(l4_service(l4="{interface: eth0.12, manage_vip: false, on_stop: keep, pin_timeout: 1d}"))
    l4 = loaded.config.services[0].l4
    assert l4 is not None
    assert (l4.interface, l4.manage_vip, l4.on_stop, l4.pin_timeout) == ("eth0.12", False, "keep", 86400.0)


def test_an_l4_mode_without_an_l4_section_is_refused():
    problem = only_problem(l4_service(mode="l4-nat", l4=None))
    assert problem.path == "services[0]" and problem.line == 2
    assert "mode l4-nat needs an l4: section with at least interface" in problem.message


def test_the_interface_is_required():
    problem = only_problem(l4_service(l4="{source_nat: true}", mode="l4-nat"))
    assert problem.path == "services[0].l4.interface"
    assert problem.message == "this key is required"


@pytest.mark.parametrize("name", ["a" * 15, "lb0", "eth0.100", "br-lan_1"])
def test_interface_names_nftables_accepts(name):
    assert parse_config(l4_service(l4=f"{{interface: {name}}}")).config.services[0].l4.interface == name


@pytest.mark.parametrize("name", ["a" * 16, "eth 0", "eth0;x", '""', "eth/0"])
def test_interface_names_nftables_would_misread_are_refused(name):
    problem = only_problem(l4_service(l4=f"{{interface: {name!r}}}"))
    assert problem.path == "services[0].l4.interface"
    assert "not an interface name nftables accepts" in problem.message


def test_the_interface_pattern_is_the_renderers():
    assert INTERFACE_PATTERN == ruleset._INTERFACE.pattern


@pytest.mark.parametrize(("written", "seconds"), [("1s", 1.0), ("2h", 7200.0), ("30d", 30 * 86400.0)])
def test_pin_timeout_at_its_edges(written, seconds):
    loaded = parse_config(l4_service(l4=f"{{interface: lb0, pin_timeout: {written}}}"))
    assert loaded.config.services[0].l4.pin_timeout == seconds


@pytest.mark.parametrize("written", ["0", "500ms", "31d"])
def test_pin_timeout_outside_its_range_is_refused(written):
    problem = only_problem(l4_service(l4=f"{{interface: lb0, pin_timeout: {written}}}"))
    assert problem.path == "services[0].l4.pin_timeout"


def test_on_stop_is_remove_or_keep():
    problem = only_problem(l4_service(l4="{interface: lb0, on_stop: flush}"))
    assert problem.path == "services[0].l4.on_stop"


def test_an_l4_section_on_a_layer_7_mode_is_refused():
    problem = only_problem(l4_service(mode="tcp", servers='[{name: s1, address: "10.0.0.1:104"}]'))
    assert problem.path == "services[0].l4"
    assert problem.message == "the l4 section needs mode: l4-dr or mode: l4-nat"


# --- scheduler and persistence --------------------------------------------------------


def test_a_written_scheduler_is_kept_and_source_hashes_by_client_alone():
    assert parse_config(l4_service("scheduler: source")).config.services[0].scheduler == "source"
    assert parse_config(l4_service("scheduler: maglev")).config.services[0].scheduler == "maglev"


@pytest.mark.parametrize("scheduler", ["leastconn", "roundrobin"])
def test_schedulers_the_kernel_cannot_run_are_refused(scheduler):
    problem = only_problem(l4_service(f"scheduler: {scheduler}"))
    assert problem.path == "services[0].scheduler" and problem.line == 7
    assert "the kernel picks by Maglev hashing" in problem.message
    if scheduler == "leastconn":
        assert "leastconn needs connection counts the kernel path does not keep" in problem.message


def test_maglev_on_a_layer_7_mode_is_refused():
    text = 'services:\n  - name: svc\n    listen: ["0.0.0.0:104"]\n    scheduler: maglev\n' \
           '    servers: [{name: s1, address: "10.0.0.1"}]\n'
    problem = only_problem(text)
    assert problem.path == "services[0].scheduler"
    assert "maglev is for the kernel layer 4 modes" in problem.message


@pytest.mark.parametrize("mode", ["l4-dr", "l4-nat"])
def test_source_ip_persistence_is_allowed(mode):
    loaded = parse_config(l4_service("persistence: source-ip", mode=mode))
    assert loaded.config.services[0].persistence.type == "source-ip"
    assert loaded.warnings == []


@pytest.mark.parametrize("key", ["timeout: 5m", "max_entries: 10", "ipv4_prefix: 24"])
def test_source_ip_persistence_settings_the_kernel_ignores_are_refused(key):
    problem = only_problem(l4_service(f"persistence: {{type: source-ip, {key}}}"))
    assert problem.path == f"services[0].persistence.{key.split(':')[0]}"
    assert "means nothing for a kernel layer 4 service" in problem.message


def test_cookie_persistence_is_refused():
    problem = only_problem(l4_service("persistence: cookie"))
    assert problem.path == "services[0].persistence.type"


# --- sections and limits that mean nothing in the kernel ------------------------------


@pytest.mark.parametrize(("section", "body"), [
    ("dicom", "dicom: {ae_title: PACS}"),
    ("mllp", "mllp: {balance: connection}"),
    ("http", "http: {}"),
    ("tls", "tls: {cert: a.pem, key: a.key}"),
    ("backend_tls", "backend_tls: {verify: false}"),
    ("pools", 'pools: {other: {servers: [{name: o1, address: "198.18.0.31"}]}}'),
])
@pytest.mark.parametrize("mode", ["l4-dr", "l4-nat"])
def test_layer_7_sections_are_refused(mode, section, body):
    problem = only_problem(l4_service(body, mode=mode))
    assert problem.path == f"services[0].{section}" and problem.line == 7
    assert problem.message.startswith(f"{section} means nothing for a kernel layer 4 service: ")


@pytest.mark.parametrize("key", sorted(Limits.model_fields))
def test_every_limit_written_is_refused(key):
    value = Limits().model_dump()[key]
    problem = only_problem(l4_service(f"limits: {{{key}: {value}}}"))
    assert problem.path == f"services[0].limits.{key}"
    assert problem.message == (f"limits.{key} means nothing for a kernel layer 4 service "
                               "(the kernel forwards; medlb holds no connection)")


def test_an_empty_limits_section_is_no_problem():
    parse_config(l4_service("limits: {}"))


def test_l4_services_do_not_count_towards_the_connection_ceiling():
    """The open-file advisory adds up max_connections of relayed connections; a kernel
    service holds none, so a tight limit draws no advisory for it."""
    loaded = parse_config(ISSUE_EXAMPLE, open_files=256)
    assert loaded.advisories == []


@pytest.mark.parametrize("check", [
    "tcp", "http", "https", "none", "mllp", "dicom-echo", "dicom-find", "fhir", "dicomweb", "xds",
    "{type: script, command: /bin/true}", "{type: http, port: 8080, path: /health}",
])
def test_every_health_check_type_is_allowed(check):
    loaded = parse_config(l4_service(f"health: {check}"))
    assert loaded.warnings == []


# --- addresses ------------------------------------------------------------------------


@pytest.mark.parametrize(("listen", "message"), [
    ("[2001:db8::100]:104", "2001:db8::100: IPv4 only in this release for l4 modes"),
    ("0.0.0.0:104", "0.0.0.0 (every address) cannot be a VIP"),
    ("vip.hospital.example:104", "'vip.hospital.example': the VIP of mode l4-dr is an IPv4 address, not a host name"),
    ("127.0.0.1:104", "127.0.0.1 cannot be a VIP"),
])
def test_vips_the_kernel_cannot_forward_are_refused(listen, message):
    problem = only_problem(l4_service(listen=listen))
    assert problem.path == "services[0].listen[0]" and problem.line == 4
    assert message in problem.message


@pytest.mark.parametrize(("address", "message"), [
    ("pacs1.hospital.example", "a server of mode l4-dr is an IPv4 address, not a host name"),
    ("[2001:db8::11]", "2001:db8::11: IPv4 only in this release for l4 modes"),
    ("127.0.0.1", "127.0.0.1 cannot be a server of mode l4-dr: the kernel forwards only to another host"),
    ("0.0.0.0", "0.0.0.0 cannot be a server of mode l4-dr"),
])
def test_server_addresses_are_ipv4_literals(address, message):
    servers = f'[{{name: s1, address: "198.18.0.11"}}, {{name: s2, address: "{address}"}}]'
    problem = only_problem(l4_service(servers=servers))
    assert problem.path == "services[0].servers[1].address"
    assert message in problem.message


def test_backup_server_addresses_are_ipv4_literals_too():
    problem = only_problem(l4_service('backup: [{name: b1, address: "dr.hospital.example"}]'))
    assert problem.path == "services[0].backup[0].address"


# --- ports: DR --------------------------------------------------------------------------


def test_dr_server_port_equal_to_the_vip_port_is_accepted():
    parse_config(l4_service(servers='[{name: s1, address: "198.18.0.11:104"}]'))
    parse_config(l4_service(listen='198.18.0.100:104", "198.18.0.101:104',
                            servers='[{name: s1, address: "198.18.0.11:104"}]'))


def test_dr_server_port_other_than_the_vip_port_is_refused():
    problem = only_problem(l4_service(servers='[{name: s1, address: "198.18.0.11:11112"}]'))
    assert problem.path == "services[0].servers[0].address" and problem.line == 5
    assert problem.message.startswith("DR does not rewrite the packet: the server must listen on the VIP port (104)")


def test_dr_servers_of_a_multi_port_vip_take_no_port():
    servers = '[{name: s1, address: "198.18.0.11"}, {name: s2, address: "198.18.0.12:104"}]'
    problem = only_problem(l4_service(listen="198.18.0.100:104-105", servers=servers))
    assert problem.path == "services[0].servers[1].address"
    assert "DR does not rewrite the packet: the server must listen on every VIP port (104, 105)" in problem.message


def test_source_nat_on_dr_is_refused():
    problem = only_problem(l4_service(l4="{interface: lb0, source_nat: true}"))
    assert problem.path == "services[0].l4.source_nat"
    assert "source_nat is for l4-nat" in problem.message


# --- ports: NAT -------------------------------------------------------------------------


def test_nat_servers_all_with_a_port_or_all_without():
    both = '[{name: s1, address: "198.18.0.11:8104"}, {name: s2, address: "198.18.0.12:9104"}]'
    neither = '[{name: s1, address: "198.18.0.11"}, {name: s2, address: "198.18.0.12"}]'
    parse_config(l4_service(mode="l4-nat", servers=both))
    parse_config(l4_service(mode="l4-nat", listen="198.18.0.100:104-105", servers=neither))


@pytest.mark.parametrize(("servers", "where", "says"), [
    ('[{name: s1, address: "198.18.0.11:8104"}, {name: s2, address: "198.18.0.12"}]', "servers[1]",
     "servers[0] has one, this one has none"),
    ('[{name: s1, address: "198.18.0.11"}, {name: s2, address: "198.18.0.12:8104"}]', "servers[1]",
     "servers[0] has none, this one has one"),
])
def test_nat_servers_mixing_ports_are_refused(servers, where, says):
    problem = only_problem(l4_service(mode="l4-nat", servers=servers))
    assert problem.path == f"services[0].{where}.address"
    assert "either every server of an l4-nat service has a port or none has" in problem.message
    assert says in problem.message


def test_nat_server_port_on_a_multi_port_vip_is_refused():
    problem = only_problem(l4_service(mode="l4-nat", listen="198.18.0.100:12000-12001",
                                      servers='[{name: s1, address: "198.18.0.11:12000"}]'))
    assert problem.path == "services[0].servers[0].address"
    assert "would send every VIP port to that one port" in problem.message


def test_pin_timeout_on_nat_is_refused():
    problem = only_problem(l4_service(mode="l4-nat", l4="{interface: lb0, pin_timeout: 1h}"))
    assert problem.path == "services[0].l4.pin_timeout"
    assert "pin_timeout is for l4-dr" in problem.message


def test_every_problem_of_a_service_is_reported_at_once():
    text = l4_service("scheduler: leastconn\nlimits: {idle_timeout: 1h}\ntls: {cert: a, key: b}",
                      listen="[::1]:104", servers='[{name: s1, address: "pacs1.example"}]')
    paths = sorted(problem.path for problem in problems(text))
    assert paths == ["services[0].limits.idle_timeout", "services[0].listen[0]", "services[0].scheduler",
                     "services[0].servers[0].address", "services[0].tls"]
