"""How the dicom proxy reads a server's answer to a request: relay, reject or move on."""

from __future__ import annotations

import pytest
from pynetdicom.tests.encoded_pdu_items import a_associate_ac, a_associate_rj, a_p_abort

from medlb.protocols import dicom as pdu
from medlb.proxy.dicom import _classify


@pytest.mark.parametrize("answer, verdict", [
    ((a_associate_ac, b""), "accepted"),
    ((a_associate_rj, b""), "rejected"),                            # 1,1,1: permanent, relayed
    ((pdu.associate_rj(2, 3, 2), b""), "failed"),                   # transient: the next server
    ((a_p_abort, b""), "failed"),
    ((a_associate_ac[:40], b""), "failed"),                         # too short to restore the AE into
    ((a_associate_rj + b"x", b""), "failed"),                       # an RJ of the wrong length
    ((b"\x07\x00\x00\x00\x00\x02\x00\x00", b""), "failed"),         # an A-ABORT of the wrong length
    ("connection lost before answering", "failed"),
])
def test_answers_are_classified_without_raising(answer, verdict):
    found, why = _classify(answer)
    assert found == verdict
    assert verdict == "accepted" or why
