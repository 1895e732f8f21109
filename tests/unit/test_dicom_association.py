"""The association's phases and its A-ABORT rule (protocols/dicom.py), with no socket.

The relay may write an A-ABORT to a peer only between two PDUs of the stream going to
that peer: written inside a P-DATA-TF it would be read as data set bytes. And the
phases move only along the transition table.
"""

from __future__ import annotations

import itertools

import pytest
from pynetdicom.tests import encoded_pdu_items as vectors

from medlb.protocols.dicom import TRANSITIONS, Association, IllegalTransition, Phase

P_DATA = vectors.p_data_tf


@pytest.mark.parametrize("towards_server", [True, False])
def test_an_a_abort_fits_only_at_a_pdu_boundary_of_the_stream_towards_that_side(towards_server):
    association = Association()
    stream = association.up if towards_server else association.down
    assert association.abort_fits(towards_server), "nothing relayed yet: a boundary"
    for cut in range(1, len(P_DATA)):  # a PDU's header or body half way through
        association = Association()
        stream = association.up if towards_server else association.down
        stream.feed(P_DATA[:cut])
        assert not association.abort_fits(towards_server), f"an A-ABORT would land {cut} bytes into a PDU"
        stream.feed(P_DATA[cut:])
        assert association.abort_fits(towards_server)


def test_the_other_directions_half_pdu_does_not_hold_back_an_abort():
    association = Association()
    association.up.feed(P_DATA[:9])  # the client is half way through a PDU to the server
    assert not association.abort_fits(towards_server=True)
    assert association.abort_fits(towards_server=False)


def test_no_a_abort_after_medlb_half_closed_towards_that_side():
    association = Association()
    association.eof_to_client = True
    assert not association.abort_fits(towards_server=False)
    assert association.abort_fits(towards_server=True)


def test_an_association_is_open_only_while_relaying_and_not_released_or_aborted():
    association = Association()
    assert not association.open
    association.move(Phase.NEGOTIATING)
    association.move(Phase.RELAYING)
    association.up.feed(P_DATA)
    assert association.open and not association.over
    association.up.feed(vectors.a_release_rq)
    assert association.over and not association.open
    aborted = Association()
    aborted.move(Phase.NEGOTIATING)
    aborted.move(Phase.RELAYING)
    aborted.aborted()
    assert aborted.over and not aborted.open


LEGAL = {(Phase.REQUEST, Phase.NEGOTIATING), (Phase.REQUEST, Phase.CLOSING),
         (Phase.NEGOTIATING, Phase.RELAYING), (Phase.NEGOTIATING, Phase.CLOSING)}


def test_the_transition_table_holds_exactly_the_legal_moves():
    assert {(a, b) for a, moves in TRANSITIONS.items() for b in moves} == LEGAL
    assert set(TRANSITIONS) == set(Phase)


def reach(phase: Phase) -> Association:
    association = Association()
    path = {Phase.REQUEST: [], Phase.NEGOTIATING: [Phase.NEGOTIATING], Phase.CLOSING: [Phase.CLOSING],
            Phase.RELAYING: [Phase.NEGOTIATING, Phase.RELAYING]}[phase]
    for step in path:
        association.move(step)
    return association


@pytest.mark.parametrize("start,to", list(itertools.product(Phase, Phase)))
def test_a_move_outside_the_table_is_refused_and_changes_nothing(start, to):
    association = reach(start)
    if (start, to) in LEGAL:
        association.move(to)
        assert association.phase is to
    else:
        with pytest.raises(IllegalTransition):
            association.move(to)
        assert association.phase is start
