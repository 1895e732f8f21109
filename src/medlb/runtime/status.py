"""Each server's status in one word and in the operator's words, as the scheduler sees it.

"Online and up" is not "takes work": a backup server waits while a primary serves, and
primaries that came back wait for a manual failback. The page and `medlb ctl` show
what the pick would do with the server now, so these follow `Service.pick`'s rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medlb.config.models import L4_MODES

if TYPE_CHECKING:
    from medlb.runtime.model import Server, Service

#: Statuses in which a server is ready but idle by design (the pool serves without it).
IDLE = ("standby", "waiting_for_failback")


def server_status(service: Service, server: Server) -> tuple[str, str]:
    """(code, words): takes_work, standby, waiting_for_failback, draining, halted, down."""
    if server.state == "halt":
        return "halted", "halted"
    if server.health != "up":
        return "down", f"down: {server.health_reason}"
    if server.state == "drain":
        if service.mode in L4_MODES:
            return "draining", "draining"  # the kernel's flow table gives no count per server
        left = server.active
        return "draining", f"draining ({left} connection{'' if left == 1 else 's'} left)"
    if server.weight <= 0:
        return "standby", "standby (weight 0)"
    pool = service.pools[server.pool]
    tier = "backup" if server.backup else "primary"
    if pool.active == tier:
        return "takes_work", "takes work"
    if server.backup:
        return "standby", "standby (backup cluster)"
    return "waiting_for_failback", "ready: waiting for failback"


def service_counts(service: Service) -> dict[str, int]:
    """Servers taking work, ready but idle (standby), and out (halted, down, draining)."""
    counts = {"taking_work": 0, "standby": 0, "out": 0}
    for server in service.servers():
        code = server_status(service, server)[0]
        counts["taking_work" if code == "takes_work" else "standby" if code in IDLE else "out"] += 1
    return counts
