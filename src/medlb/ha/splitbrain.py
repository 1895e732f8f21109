"""Split brain as one node sees it: both nodes active at once, and when it ended.

Sans-I/O: fed this node's role changes (keepalived's notify FIFO), the VRRP adverts
its peer sends (medlb.ha.adverts), and this node's own hand-overs (release,
takeover); `due(now)` returns the episodes that have ended. No clocks are read here.

What one node can know, and the rules that follow from it. In VRRP only the active
node sends adverts, so an advert from the peer with a priority above 0 means the
peer holds itself active. Two nodes that could not hear each other both become
active; when they hear each other again, the higher priority keeps the VIPs
(keepalived's election, whatever `preempt` says) and the other leaves for BACKUP.

- The node that keeps the VIPs (the winner) is active and sees the peer's advert:
  the episode is open; it ends with the peer's last advert (the peer has yielded
  when no advert came for `quiet` seconds).
- The node that yields (the loser) leaves MASTER for BACKUP. That happens only when
  an advert of a higher priority arrives, so it too was active beside the peer,
  unless the advert was the peer's takeover: those carry
  keepalived.TAKEOVER_PRIORITY, not the peer's configured priority (a peer whose
  own priority is 254 cannot be told apart, and its takeover counts as an episode).
  The decision waits `quiet` seconds for that advert, since the FIFO and the
  advert socket are read in no fixed order.
- This node's own release and takeover open no episode while they run, nor does an
  advert within `quiet` seconds of this node becoming active (an election settling:
  the old active node's last advert was on its way).
- With `preempt: true` a peer of higher priority takes the VIPs back whenever it
  returns, so this node yielding to it is no episode (a split brain healing looks
  the same to this node; the peer, the winner, still records it).

The start: the loser usually is the node that became active while it could not hear
the peer, so its own MASTER-since is when the episode began (`start_known`). The
winner was active before and cannot know when the peer began (adverts say nothing
of it): it reports its own MASTER-since, an upper bound of the duration, with
`start_known` false, until the peer's status (the pair's sync channel) says more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration": round(self.duration, 3)}


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
        self._open_since: float | None = None  # the winner's open episode: its start
        self._last_peer_advert = 0.0
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
        if self._open_since is not None:  # the peer's advert came first: we yield
            self._end(self._open_since, at, kept=False, start_known=True)
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
        if self.role != "MASTER" or at <= self._handing_over_until or self.master_since is None \
                or at - self.master_since < self.quiet:
            return
        self._last_peer_advert = at
        if self._open_since is None:
            self._open_since = self.master_since

    def due(self, now: float) -> list[Episode]:
        """Episodes that ended by `now` (each returned once)."""
        if self._pending_loss is not None and now - self._pending_loss[1] >= self.quiet:
            since, left = self._pending_loss
            self._pending_loss = None
            if left - self._peer_takeover_at > self.quiet:
                self._end(since, left, kept=False, start_known=True)
        if self._open_since is not None and now - self._last_peer_advert >= self.quiet:
            self._end(self._open_since, self._last_peer_advert, kept=True, start_known=False)
        ended, self._ended = self._ended, []
        return ended

    def _end(self, start: float, end: float, kept: bool, start_known: bool) -> None:
        self._open_since = None
        self._ended.append(Episode(start, end, kept, start_known))
