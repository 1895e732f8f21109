"""An operator moves the VIPs: `release` gives them to the peer, `takeover` takes them.

Neither needs the peer's cooperation, only keepalived's own behaviour (Debian's
2.2, VRRPv3):

- release: the track script hears "released" (medlb.ha.supervisor.RELEASED), so
  after `fall` failed checks keepalived moves to FAULT, removes the VIPs and sends a
  priority-0 advert, on which the peer becomes active at once. When the peer's
  adverts arrive (it is active), the flag is cleared: after `rise` good checks this
  node leaves FAULT for BACKUP, hears the peer and stays passive (`nopreempt`; with
  `preempt: true` and the higher priority it would take the VIPs straight back, so
  that release is refused). A peer that never advertises means no one took the
  VIPs: the flag is cleared all the same, and this node becomes active again.
- takeover: keepalived's config is rendered with keepalived.TAKEOVER_PRIORITY and
  without `nopreempt` and read again (SIGHUP): this node preempts the active peer,
  which yields to the higher advert. Once this node is active the normal config is
  rendered and read back; keepalived keeps its role over a reload, and the peer,
  with `nopreempt`, stays passive beside a lower priority.

`refusal` says why one would do nothing or cannot run now (the caller answers 409,
nothing changed).
The answer says what happened and the role this node settled in, or that it did
not settle within the wait.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from medlb import logs
from medlb.ha import keepalived
from medlb.ha.supervisor import ROLE_WORDS, PairNode

log = logs.get_logger("medlb.ha")

#: Seconds of slack added to each wait for keepalived (a loaded host runs the track
#: script late).
SLACK = 3.0


@dataclass
class Outcome:
    action: str
    #: Whether it did what was asked (release: this node passive and the peer active;
    #: takeover: this node active).
    done: bool
    role: str
    text: str

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "role_text": ROLE_WORDS.get(self.role, self.role)}


def _check_seconds(node: PairNode) -> float:
    """How long keepalived takes to act on the track script: `fall` (or `rise`)
    checks, each every advert interval rounded up to a second, plus one."""
    every = max(1, math.ceil(node.ha.advert_centiseconds / 100))
    return (keepalived.ALIVE_FALL + 1) * every + SLACK


def _adverts_seconds(node: PairNode) -> float:
    """How long the peer takes to become active after a priority-0 advert or a silence."""
    return 3 * node.ha.advert_centiseconds / 100 + SLACK


def refusal(node: PairNode, action: str) -> str | None:
    """Why `action` would do nothing or cannot be done now, or None."""
    if node.handover_lock.locked():
        return "a release or takeover is under way on this node; wait for its answer"
    if not node.keepalived_running():
        return "keepalived is not running on this node; see `medlb ctl ha status` and its log"
    role = node.role
    if action == "release":
        if role != "MASTER":
            return f"this node is not active (it is {role}, {ROLE_WORDS.get(role, role)}): it holds no VIPs to release"
        if node.ha.preempt and node.node.priority > node.peer.priority:
            return (f"preempt is on and this node has the higher priority ({node.node.priority} over "
                    f"{node.peer.priority}): it would take the VIPs straight back; stop it, or take over on "
                    f"{node.peer.name}")
        return None
    if role == "MASTER":
        return "this node is already active: it holds the VIPs"
    if role != "BACKUP":
        return (f"this node is {role} ({ROLE_WORDS.get(role, role)}), not passive: it cannot hold the VIPs now; "
                "see `medlb ctl ha status`")
    return None


async def release(node: PairNode) -> Outcome:
    """Give the VIPs to the peer and stay passive (see the module's docstring)."""
    async with node.handover_lock:
        asked = time.monotonic()
        node.split_brain.handing_over(time.time() + 2 * _check_seconds(node) + _adverts_seconds(node))
        node.released = True
        log.event("ha_release_started", node=node.node.name)
        try:
            faulted = await node.wait_for(lambda: node.role == "FAULT", _check_seconds(node))
            peer_active = faulted and await node.wait_for(lambda: node.peer_advert_at > asked,
                                                           _adverts_seconds(node))
        finally:
            node.released = False
        if not faulted:
            return Outcome("release", False, node.role, f"keepalived did not give the VIPs up within "
                           f"{_check_seconds(node):g} s; this node is {node.role}")
        settled = await node.wait_for(lambda: node.role in ("BACKUP", "MASTER"), _check_seconds(node))
        if not peer_active:
            return Outcome("release", False, node.role,
                           f"{node.peer.name} did not become active within {_adverts_seconds(node):g} s "
                           f"(no advert from it): this node is {node.role} again"
                           + ("" if settled else f", not settled within {_check_seconds(node):g} s"))
        if not settled:
            return Outcome("release", node.role != "MASTER", node.role,
                           f"{node.peer.name} holds the VIPs; this node did not settle within "
                           f"{_check_seconds(node):g} s: it is {node.role}")
        took = time.monotonic() - asked
        return Outcome("release", node.role == "BACKUP", node.role,
                       f"{node.peer.name} holds the VIPs; this node is {node.role} "
                       f"({ROLE_WORDS[node.role]}) after {took:.1f} s")


async def takeover(node: PairNode) -> Outcome:
    """Make this node active even with `preempt: false` (see the module's docstring)."""
    async with node.handover_lock:
        asked = time.monotonic()
        wait = _adverts_seconds(node) + SLACK
        node.split_brain.handing_over(time.time() + wait + _adverts_seconds(node))
        log.event("ha_takeover_started", node=node.node.name)
        try:
            if not node.reload_keepalived(takeover=True):
                return Outcome("takeover", False, node.role, "keepalived is not running on this node")
            active = await node.wait_for(lambda: node.role == "MASTER", wait)
        finally:
            node.reload_keepalived(takeover=False)
        if not active:
            return Outcome("takeover", False, node.role,
                           f"this node did not become active within {wait:g} s: it is {node.role}")
        return Outcome("takeover", True, node.role, f"this node holds the VIPs after "
                       f"{time.monotonic() - asked:.1f} s; {node.peer.name} yields to it")
