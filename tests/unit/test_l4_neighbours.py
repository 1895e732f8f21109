"""The DR servers' MACs as the kernel data plane reads them from /proc/net/arp."""

from pathlib import Path

from medlb.kernel.system import neighbours

ARP = """\
IP address       HW type     Flags       HW address            Mask     Device
198.18.0.11      0x1         0x2         4E:D1:0F:7C:1C:F2     *        eth0
198.18.0.12      0x1         0x0         00:00:00:00:00:00     *        eth0
198.18.0.13      0x1         0x6         72:df:18:53:12:99     *        lb0
198.18.0.14      0x1         0x2         66:15:38:99:b1:fc     *        eth1
"""


def test_only_complete_entries_count_and_macs_are_lower_case(tmp_path: Path):
    path = tmp_path / "arp"
    path.write_text(ARP)
    found = neighbours(path)
    # .12 is incomplete (flags 0, no MAC): a DR server there has no MAC and takes no flow.
    assert found == {("198.18.0.11", "eth0"): "4e:d1:0f:7c:1c:f2",
                     ("198.18.0.13", "lb0"): "72:df:18:53:12:99",
                     ("198.18.0.14", "eth1"): "66:15:38:99:b1:fc"}
