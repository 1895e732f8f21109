"""Reading what the kernel counts: conntrack's summary line."""

from __future__ import annotations

import pytest

from medlb.kernel import system


@pytest.mark.parametrize("stderr, count", [
    ("conntrack v1.4.7 (conntrack-tools): 12 flow entries have been shown.\n", 12),
    ("conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n", 3),
    ("conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\n", 0),
    ("", 0),
])
def test_conntrack_summary_lines_give_the_count(stderr, count):
    assert system._flow_count(stderr) == count

