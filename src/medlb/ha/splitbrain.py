"""Split brain as one node sees it: both nodes active at once, and when it ended.

Sans-I/O: fed this node's role changes (keepalived's notify FIFO), the evidence that
the peer holds itself active (medlb.ha.adverts: its VRRP adverts, and ARP from
another MAC for a VIP: its gratuitous ARPs on becoming active, its answers to this
node's probes while it holds the VIPs) and this node's own hand-overs (release,
takeover); `due(now)` returns the episodes that have ended. No clocks are read here.

Two nodes that cannot hear each other's adverts both become active; when they hear
each other again, the higher priority keeps the VIPs (keepalived's election,
whatever `preempt` says) and the other leaves for BACKUP. The rules:

- The node that yields (the loser) leaves MASTER for BACKUP. keepalived does that
  only on an advert of a higher priority, so it was active beside the peer, unless
  the advert was the peer's takeover: those carry keepalived.TAKEOVER_PRIORITY, not
  the peer's configured priority (a peer whose own priority is 254 cannot be told
  apart). The decision waits `quiet` seconds for that advert, since the FIFO and the
  sockets are read in no fixed order. The loser usually is the node that became
  active while it could not hear the peer, so its own MASTER-since is the start
  (`start_known`).
- The node that keeps the VIPs (the winner) is active and sees the peer's evidence:
  the episode is open from the first evidence (the peer's gratuitous ARPs when it
  became active, if they crossed; else its advert at the heal, and then the start is
  only this node's own MASTER-since, `start_known` false, an upper bound of the
  duration) and ends with the last evidence, `quiet` seconds later. Adverts alone
  are not enough: at the heal the winner's advert often reaches the loser first, and
  the loser yields without a word.
- Either node may miss what the other saw (a gratuitous ARP that did not cross, a
  heal so quick that the winner heard nothing from the peer's short reign). Each
  node tells its last episode in its sync status, and a node with no record of it
  takes it as the other side of the same episode (`told_by_peer`): both nodes then
  show and audit it, as the loser, who saw it surely, lived it.
- No episode: this node's own release and takeover, evidence within `quiet` seconds
  of this node becoming active (an election settling), the peer's takeover, and,
  with `preempt: true`, a peer of higher priority (it takes the VIPs back whenever
  it returns, which looks the same here; the peer, the winner, records it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Episode:
    """Both nodes active from `start` to `end` (Unix times), as this node saw it."""

    start: float
    end: float
    #: Whether this node kept the VIPs when it ended.
    kept_vips: bool
    #: False when `start` is only when this node became active (the winner's view).
    start_known: bool
    #: This node saw nothing of it; the peer told it over the sync channel.
    told_by_peer: bool = False

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration": round(self.duration, 3)}

    @classmethod
    def from_dict(cls, saved: Any) -> "Episode":
        """An episode from its `as_dict` (a file, the peer's status); raises KeyError,
        TypeError or ValueError for anything else."""
        return cls(float(saved["start"]), float(saved["end"]), bool(saved["kept_vips"]),
                   bool(saved["start_known"]), bool(saved.get("told_by_peer")))


def told_by_peer(told: Any, own: Episode | None) -> Episode | None:
    """The peer's last episode (its `as_dict`) as this node lived it, when this node
    has no record of it: its own last episode ended before the peer's began. None
    when it has, or when what the peer sent is not an episode."""
    if not isinstance(told, dict) or told.get("told_by_peer"):  # never pass on what we told
        return None
    try:
        episode = Episode.from_dict(told)
    except (KeyError, TypeError, ValueError):
        return None
    if episode.end < episode.start or (own is not None and own.end >= episode.start):
        return None
    return replace(episode, kept_vips=not episode.kept_vips, told_by_peer=True)


class SplitBrainWatch:
    """Turns this node's roles and its peer's adverts into split-brain episodes."""

    def __init__(self, peer_priority: int, takeover_priority: int, quiet: float, peer_preempts: bool = False):
        self.peer_priority = peer_priority
        self.takeover_priority = takeover_priority
        #: `preempt: true` and the peer's priority is above this node's.
        self.peer_preempts = peer_preempts
        #: Seconds without a peer advert after which the peer has yielded, and the
        #: wait before a MASTER->BACKUP is judged.
        self.quiet = quiet
        self.role = "UNKNOWN"
        self.master_since: float | None = None
        self._handing_over_until = 0.0
        self._open: tuple[float, bool] | None = None  # the winner's open episode: (start, start_known)
        self._last_evidence = 0.0
        self._peer_takeover_at = float("-inf")
        self._pending_loss: tuple[float, float] | None = None  # (master since, left at)
        self._ended: list[Episode] = []

    def handing_over(self, until: float) -> None:
        """This node releases or takes over until then: no episode is opened."""
        self._handing_over_until = until

    def set_role(self, role: str, at: float) -> None:
        old, self.role = self.role, role
        if role == old:
            return
        if role == "MASTER":
            self.master_since = at
            return
        if old != "MASTER":
            return
        if self._open is not None:  # the peer's evidence came first: we yield
            if at - self._peer_takeover_at > self.quiet:
                self._end(self.master_since or self._open[0], at, kept=False, start_known=True)
            self._open = None
        elif role == "BACKUP" and at > self._handing_over_until and self.master_since is not None \
                and not self.peer_preempts:
            self._pending_loss = (self.master_since, at)
        self.master_since = None

    def peer_advert(self, priority: int, at: float) -> None:
        if priority == 0:  # the peer is leaving: it gives the VIPs up
            return
        if priority == self.takeover_priority and priority != self.peer_priority:
            self._peer_takeover_at = at
            self._pending_loss = None
            return
        self._evidence(at, claim=False)

    def peer_claims_vip(self, at: float) -> None:
        """ARP for a VIP from the peer's MAC: it holds (or just took) the VIPs."""
        self._evidence(at, claim=True)

    def _evidence(self, at: float, claim: bool) -> None:
        if self.role != "MASTER" or self.peer_preempts or at <= self._handing_over_until \
                or self.master_since is None or at - self.master_since < self.quiet \
                or at - self._peer_takeover_at < self.quiet:
            return
        self._last_evidence = at
        if self._open is None:
            self._open = (at, True) if claim else (self.master_since, False)

    @property
    def open(self) -> bool:
        """An episode is open: this node probes whether the peer still holds the VIPs."""
        return self._open is not None

    @property
    def settling(self) -> bool:
        """An episode of this node's own may still end: what the peer tells waits."""
        return self._open is not None or self._pending_loss is not None

    def due(self, now: float) -> list[Episode]:
        """Episodes that ended by `now` (each returned once)."""
        if self._pending_loss is not None and now - self._pending_loss[1] >= self.quiet:
            since, left = self._pending_loss
            self._pending_loss = None
            if left - self._peer_takeover_at > self.quiet:
                self._end(since, left, kept=False, start_known=True)
        if self._open is not None and now - self._last_evidence >= self.quiet:
            self._end(self._open[0], self._last_evidence, kept=True, start_known=self._open[1])
        ended, self._ended = self._ended, []
        return ended

    def _end(self, start: float, end: float, kept: bool, start_known: bool) -> None:
        self._open = None
        self._ended.append(Episode(start, end, kept, start_known))
