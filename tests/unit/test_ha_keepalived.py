"""keepalived's configuration for each node of the pair, against kept fixtures.

Each fixture is the exact text one `ha:` section renders to for one node, read by a
person once and kept; tests/netns/test_ha_vrrp.py runs real keepalived on the
same rendering. After a deliberate change of the rendering,
MEDLB_REGENERATE_FIXTURES=1 rewrites them: read the diff before committing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import matches_fixture

from medlb.config import parse_config
from medlb.config.models import HaConfig
from medlb.ha import keepalived

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "ha"
FILES = keepalived.NodeFiles.under(Path("/var/lib/medlb"))
CHECK = keepalived.alive_command(["/usr/bin/medlb"], FILES)


def example(**changes: object) -> HaConfig:
    ha = parse_config((ROOT / "examples" / "ha.yaml").read_text()).config.ha
    assert ha is not None
    return ha.model_copy(update=changes)


def check_fixture(name: str, text: str) -> None:
    matches_fixture(FIXTURES / name, text)


@pytest.mark.parametrize("node", ["lb-a", "lb-b"])
def test_the_issue_example_renders_for_each_node(node):
    check_fixture(f"{node}.conf", keepalived.render(example(), node, FILES, CHECK))


def test_preempt_a_slow_advert_and_two_vips():
    ha = parse_config((ROOT / "examples" / "ha.yaml").read_text()
                      .replace("preempt: false", "preempt: true")
                      .replace("advert_interval: 500ms", "advert_interval: 2.5s")
                      .replace('vips: ["198.18.0.100/24"]', 'vips: ["198.18.0.100/24", "203.0.113.7/32"]')).config.ha
    assert ha is not None

    check_fixture("lb-a-preempt.conf", keepalived.render(ha, "lb-a", FILES, CHECK))


def test_the_two_nodes_differ_only_in_their_identity():
    """One file for both nodes: each node's rendering swaps source and peer, priority and names."""
    a = keepalived.render(example(), "lb-a", FILES, CHECK).splitlines()
    b = keepalived.render(example(), "lb-b", FILES, CHECK).splitlines()

    differing = [(left.strip(), right.strip()) for left, right in zip(a, b) if left != right]
    assert len(a) == len(b)
    assert differing == [
        ("# Node lb-a, peer lb-b.", "# Node lb-b, peer lb-a."),
        ("instance medlb-lb-a", "instance medlb-lb-b"),
        ("router_id lb-a", "router_id lb-b"),
        ("priority 150", "priority 100"),
        ("unicast_src_ip 198.18.0.4", "unicast_src_ip 198.18.0.5"),
        ("198.18.0.5", "198.18.0.4"),
    ]


@pytest.mark.parametrize("advert, rendered, check_every", [
    ("10ms", "0.01", 1), ("70ms", "0.07", 1), ("500ms", "0.5", 1), ("1s", "1", 1), ("1.25s", "1.25", 2),
    ("40950ms", "40.95", 41)])
def test_advert_int_is_the_exact_decimal_and_the_check_runs_every_whole_second_at_least(advert, rendered, check_every):
    ha = parse_config((ROOT / "examples" / "ha.yaml").read_text()
                      .replace("advert_interval: 500ms", f"advert_interval: {advert}")).config.ha
    assert ha is not None

    text = keepalived.render(ha, "lb-a", FILES, CHECK)

    assert f"    advert_int {rendered}\n" in text
    assert f"    interval {check_every}\n    timeout {check_every}\n" in text


def test_every_file_is_under_the_state_directory_and_the_argv_names_them():
    assert keepalived.argv(FILES) == [
        "keepalived", "-P", "-n", "-l", "-f", "/var/lib/medlb/ha/keepalived.conf",
        "-p", "/var/lib/medlb/ha/keepalived.pid", "-r", "/var/lib/medlb/ha/keepalived_vrrp.pid"]
    assert FILES.notify_fifo == Path("/var/lib/medlb/ha/notify.fifo")
    assert CHECK == ["/usr/bin/medlb", "ha-alive", "--state-dir", "/var/lib/medlb"]


def test_an_unknown_node_name_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"no node named 'lb-c' in ha.nodes \(known: lb-a, lb-b\)"):
        keepalived.render(example(), "lb-c", FILES, CHECK)


@pytest.mark.parametrize("state_dir", ["/var/lib/med lb", '/var/lib/"medlb"', "/var/lib/medlb}\nvrrp_strict",
                                       "/var/lib/medlb#x", "/var/lib/médlb"])
def test_a_state_directory_that_could_inject_is_refused(state_dir):
    with pytest.raises(ValueError, match="cannot be written into keepalived's config"):
        keepalived.NodeFiles.under(Path(state_dir))


def test_a_relative_state_directory_is_refused():
    with pytest.raises(ValueError, match="must be absolute"):
        keepalived.NodeFiles.under(Path("var"))


@pytest.mark.parametrize("word", ["/usr/bin/medlb check", 'x"y', "a}", "#", "!x", ""])
def test_a_track_script_word_that_could_inject_is_refused(word):
    with pytest.raises(ValueError, match="cannot be written into keepalived's config"):
        keepalived.render(example(), "lb-a", FILES, ["/usr/bin/medlb", word])


def test_names_the_config_refused_never_reach_the_text():
    """model_copy skips validation: the renderer checks the names it writes itself too."""
    with pytest.raises(ValueError, match="cannot be written into keepalived's config"):
        keepalived.render(example(interface="lb0 }"), "lb-a", FILES, CHECK)


def test_a_node_becoming_active_sends_gratuitous_arps_then_again_and_refreshes_them_while_active():
    text = keepalived.render(example(), "lb-b", FILES, CHECK)
    assert "    garp_master_repeat 3\n    garp_master_delay 1\n    garp_master_refresh 30\n" in text


def test_a_takeover_preempts_with_the_takeover_priority_and_the_normal_rendering_does_not():
    normal = keepalived.render(example(), "lb-b", FILES, CHECK)
    taking = keepalived.render(example(), "lb-b", FILES, CHECK, takeover=True)
    assert "    priority 100\n" in normal and "    nopreempt\n" in normal
    assert f"    priority {keepalived.TAKEOVER_PRIORITY}\n" in taking and "nopreempt" not in taking
    assert "Taking over" in taking
    assert [line for line in taking.splitlines() if "priority" not in line and not line.startswith("#")] == \
        [line for line in normal.splitlines() if "priority" not in line and "nopreempt" not in line
         and not line.startswith("#")]
