"""Split brain as one node sees it (medlb.ha.splitbrain), from the events a real node
gets: its role changes and its peer's VRRP adverts, in either order."""

from __future__ import annotations

import pytest

from medlb.ha.splitbrain import Episode, SplitBrainWatch, told_by_peer

QUIET = 0.6  # 3 adverts of 200 ms
PEER = 150
TAKEOVER = 254


def watch(**options) -> SplitBrainWatch:
    sb = SplitBrainWatch(peer_priority=PEER, takeover_priority=TAKEOVER, quiet=QUIET, **options)
    sb.set_role("BACKUP", 0.0)
    return sb


def test_the_winner_sees_the_peers_adverts_while_active_and_the_episode_ends_with_the_last_one():
    sb = watch()
    sb.set_role("MASTER", 10.0)  # active long before the peer lost it
    for at in (50.0, 50.2):
        sb.peer_advert(PEER, at)
    assert sb.due(50.5) == []  # the peer may still think it is active
    [episode] = sb.due(50.9)
    assert (episode.start, episode.end, episode.kept_vips, episode.start_known) == (10.0, 50.2, True, False)
    assert episode.as_dict()["duration"] == 40.2
    assert sb.due(60.0) == []


@pytest.mark.parametrize("advert_first", [True, False])
def test_the_loser_yields_to_a_higher_advert_and_its_own_active_time_is_the_episode(advert_first):
    sb = watch()
    sb.set_role("MASTER", 20.0)  # it took over when it stopped hearing the peer
    if advert_first:
        sb.peer_advert(PEER, 35.0)
    sb.set_role("BACKUP", 35.01)
    if not advert_first:
        sb.peer_advert(PEER, 35.02)  # read after the FIFO: ignored, the role says enough
    [episode] = sb.due(36.0)
    assert (episode.start, episode.end, episode.kept_vips, episode.start_known) == (20.0, 35.01, False, True)


def test_the_peers_takeover_is_no_split_brain_whichever_is_read_first():
    for advert_first in (True, False):
        sb = watch()
        sb.set_role("MASTER", 20.0)
        if advert_first:
            sb.peer_advert(TAKEOVER, 30.0)
        sb.set_role("BACKUP", 30.01)
        if not advert_first:
            sb.peer_advert(TAKEOVER, 30.02)
        assert sb.due(40.0) == []


def test_this_nodes_own_release_and_takeover_open_nothing():
    sb = watch()
    sb.set_role("MASTER", 20.0)
    sb.handing_over(until=40.0)
    sb.peer_advert(PEER, 30.0)  # the peer's last advert while this node takes over
    sb.set_role("FAULT", 31.0)
    sb.set_role("BACKUP", 33.0)
    assert sb.due(45.0) == []


def test_a_priority_0_advert_and_an_election_settling_are_no_split_brain():
    sb = watch()
    sb.set_role("MASTER", 20.0)
    sb.peer_advert(0, 30.0)  # the peer leaving
    sb.peer_advert(PEER, 20.1)  # within QUIET of becoming active: the old active node's last advert
    assert sb.due(45.0) == []


def test_with_preempt_yielding_to_a_higher_peer_that_returns_is_no_split_brain():
    sb = watch(peer_preempts=True)
    sb.set_role("MASTER", 20.0)
    sb.set_role("BACKUP", 30.0)
    assert sb.due(45.0) == []


def test_a_winner_that_leaves_while_the_episode_is_open_did_not_keep_the_vips():
    sb = watch()
    sb.set_role("MASTER", 20.0)
    sb.peer_advert(PEER, 30.0)
    sb.set_role("FAULT", 30.1)
    [episode] = sb.due(30.2)
    assert episode.kept_vips is False and episode.end == 30.1


def test_the_winner_that_saw_the_peers_gratuitous_arps_knows_when_it_began():
    sb = watch()
    sb.set_role("MASTER", 10.0)
    sb.peer_claims_vip(40.0)  # the peer became active: its gratuitous ARPs
    assert sb.open
    sb.peer_claims_vip(41.0)
    sb.peer_claims_vip(45.5)  # its answer to this node's last probe before the heal
    [episode] = sb.due(47.0)
    assert (episode.start, episode.end, episode.kept_vips, episode.start_known) == (40.0, 45.5, True, True)
    assert not sb.open


def test_the_gratuitous_arps_of_the_peers_takeover_open_nothing():
    sb = watch()
    sb.set_role("MASTER", 10.0)
    sb.peer_advert(TAKEOVER, 40.0)
    sb.peer_claims_vip(40.01)
    sb.set_role("BACKUP", 40.02)
    assert sb.due(50.0) == []


# --- what the peer tells over the sync channel ------------------------------------------

def test_a_node_that_saw_nothing_takes_the_peers_episode_as_its_other_side():
    """The winner of a quick heal may hear nothing of the peer's short reign; the loser
    saw it surely and tells it. The winner then records it, as the one that kept the VIPs."""
    loser = watch()
    loser.set_role("MASTER", 20.0)
    loser.peer_advert(PEER, 23.0)
    loser.set_role("BACKUP", 23.01)
    [lost] = loser.due(24.0)

    told = told_by_peer(lost.as_dict(), own=None)

    assert told is not None
    assert (told.start, told.end, told.kept_vips, told.start_known, told.told_by_peer) == \
        (20.0, 23.01, True, True, True)
    assert told_by_peer(told.as_dict(), own=lost) is None  # and the loser does not take it back


def test_a_node_that_saw_the_episode_or_a_later_one_does_not_take_the_peers():
    own = Episode(10.0, 23.2, kept_vips=True, start_known=False)
    peer = Episode(20.0, 23.0, kept_vips=False, start_known=True).as_dict()
    assert told_by_peer(peer, own) is None
    older = Episode(1.0, 5.0, kept_vips=True, start_known=True)
    assert told_by_peer(peer, older) == Episode(20.0, 23.0, True, True, told_by_peer=True)


@pytest.mark.parametrize("told", [None, "x", {}, {"start": "a", "end": 1, "kept_vips": 0, "start_known": 1},
                                  {"start": 5.0, "end": 4.0, "kept_vips": False, "start_known": True}])
def test_what_is_not_an_episode_is_ignored(told):
    assert told_by_peer(told, None) is None


def test_an_episode_still_settling_here_makes_the_peers_wait():
    sb = watch()
    sb.set_role("MASTER", 10.0)
    sb.peer_advert(PEER, 50.0)
    assert sb.settling  # open: this node's own record is coming
    sb.due(51.0)
    assert not sb.settling
    sb.set_role("BACKUP", 60.0)
    assert sb.settling  # a loss being judged
