"""systemd's service notifications (sd_notify(3)), for a `Type=notify` unit.

systemd gives the service the address of a datagram socket in NOTIFY_SOCKET; each
message is one datagram of KEY=VALUE lines. READY=1 tells systemd (and whatever waits
on `systemctl start`) that medlb serves: every listener bound and the first health
checks run, so a server that is down is already known to be. STATUS= is the line
`systemctl status medlb` shows: services, servers up, pools on their backup cluster,
and the outcome of the last reload, so a refused reload is seen there as well as in
the journal. Without NOTIFY_SOCKET (not started by systemd) nothing is sent.

No library: the protocol is a few lines over an AF_UNIX datagram socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from medlb.control import Control
from medlb.logs import get_logger
from medlb.runtime import Service
from medlb.tasks import spawn

log = get_logger("medlb.notify")

#: How long READY waits for the first checks beyond the longest check timeout (the
#: first checks are spread over up to a quarter of a second, see medlb.health).
FIRST_CHECKS_MARGIN = 1.0

#: Change kinds that alter the STATUS line.
STATUS_CHANGES = frozenset({"health", "state", "pool"})


def send(**fields: str) -> bool:
    """One notification; False if there is no systemd to tell or it could not be told.
    Never blocks: a message systemd has no room for is dropped, as sd_notify does."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # the abstract namespace
        address = "\0" + address[1:]
    payload = "\n".join(f"{key}={one_line(value)}" for key, value in fields.items()).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sock.send(payload)
    except OSError as exc:
        log.warning("notify_failed", socket=os.environ.get("NOTIFY_SOCKET"), error=exc.strerror or str(exc))
        return False
    return True


def one_line(value: str) -> str:
    return " ".join(value.split())


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else words or word + 's'}"


def summary(services: Mapping[str, Service]) -> str:
    """`2 services on 3 addresses; 3 of 4 servers up; on backup: vna/default`."""
    addresses = sum(len(service.config.addresses) for service in services.values())
    servers = [server for service in services.values() for server in service.servers()]
    up = sum(1 for server in servers if server.health == "up")
    parts = [f"{plural(len(services), 'service')} on {plural(addresses, 'address', 'addresses')}",
             f"{up} of {plural(len(servers), 'server')} up"]
    not_online = sum(1 for server in servers if server.state != "online")
    if not_online:
        parts[-1] += f" ({not_online} drained or halted)"
    for tier, label in (("backup", "on backup"), ("none", "no server for")):
        pools = [f"{service.name}/{pool.name}" for service in services.values() for pool in service.pools.values()
                 if pool.active == tier]
        if pools:
            parts.append(f"{label}: {', '.join(pools)}")
    return "; ".join(parts)


class Notifier:
    """What medlb has told systemd; the last reload's outcome stays in STATUS until
    the next reload, so later health changes do not hide a refusal."""

    def __init__(self) -> None:
        self.control: Control | None = None
        self.last_reload = ""

    def status(self) -> str:
        assert self.control is not None
        return summary(self.control.services) + (f"; {self.last_reload}" if self.last_reload else "")

    def started(self, control: Control) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        self.control = control
        spawn(self._ready(control), name="sd_notify ready")

    async def _ready(self, control: Control) -> None:
        """READY=1 once every server has had its first check, or when the longest check
        should have answered (a check medlb cannot make must not hold the start)."""
        services = control.services.values()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_CHECKS_MARGIN + max(
            (service.config.health.timeout for service in services), default=0.0)
        while loop.time() < deadline and not all(server.checked for service in control.services.values()
                                                 for server in service.servers()):
            await asyncio.sleep(0.05)
        send(READY="1", STATUS=self.status(), MAINPID=str(os.getpid()))
        control.subscribe(self._on_message)

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") == "change" and message.get("kind") in STATUS_CHANGES:
            send(STATUS=self.status())

    def reloaded(self) -> None:
        if self.control is None:
            return
        self.last_reload = f"reloaded at {time.strftime('%H:%M:%S')}"
        send(STATUS=self.status())

    def reload_refused(self, problems: Sequence[object]) -> None:
        if self.control is None:
            return
        first = f": {problems[0]}" if problems else ""
        self.last_reload = (f"reload refused at {time.strftime('%H:%M:%S')}, running the previous config "
                            f"({plural(len(problems), 'problem')}{first}; medlb check FILE lists them all)")
        send(STATUS=self.status())


#: The one notifier of this process (systemd watches one main process).
notifier = Notifier()
