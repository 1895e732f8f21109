"""The HL7 delivery rules of `mllp` mode, as a sans-I/O engine: events in, actions out.

Each message a sender sends is a Delivery. Deliveries with the same ordering key (a
patient's PID-3, say) form a queue with at most one in flight, so a patient's A01, A02,
A03 reach the server in order; other keys proceed in parallel over persistent server
connections (links), each carrying one message at a time. A message is acknowledged to
its sender only by the ACK whose MSA-2 equals its MSH-10, relayed unchanged. If the
link dies or `ack_timeout` passes first, the message goes to another server, up to
`retries` times, still at the head of its key's queue; after that the sender gets an
AE from medlb. The engine never writes an AA itself: every reply it makes is an AE
built by `build_ack` with one of the NAK_* texts below.

The engine does no I/O and imports no asyncio or socket: `proxy/mllp.py` feeds it what
happened (a message from a sender, a link connected or lost, bytes from a server, a
timer) and carries out the actions it returns, in order (open a link, write a frame,
answer a sender, arm or cancel a timer, close a link, log a warning). So the rules are
tested in milliseconds with no socket (tests/unit/test_mllp_engine.py) and the I/O
against real peers (tests/integration/test_mllp_mode.py).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Callable, Union

from medlb.protocols import mllp
from medlb.protocols.hl7 import Header, HL7Error, build_ack, parse_ack
from medlb.runtime.events import Change
from medlb.runtime.model import Server, Service
from medlb.runtime.stats import MllpStats

NAK_NO_SERVER = "no server available"
NAK_NOT_ACKED = "no server acknowledged the message"
NAK_STOPPING = "medlb is stopping"

#: How often idle links are looked for, in seconds.
REAP_INTERVAL = 1.0


class Delivery:
    """One message from a sender, until its ACK (or medlb's AE) is on its way back."""

    __slots__ = ("payload", "header", "key", "type_label", "client", "attempts", "failures", "tried",
                 "received_at", "sent_at", "link", "server", "reply", "done")

    def __init__(self, payload: bytes, header: Header, key: bytes, client: Any, now: float = 0.0):
        self.payload = payload
        self.header = header
        self.key = key
        #: The sender's connection, opaque to the engine; None once the sender left.
        self.client: Any = client
        self.type_label = "unknown"
        self.attempts = 0  # times written to a server
        self.failures = 0  # links lost (or never connected) before its ACK
        self.tried: set[Server] = set()
        self.received_at = now
        self.sent_at = 0.0
        self.link: Link | None = None
        self.server: Server | None = None  # waiting for a free link to this server
        self.reply: bytes | None = None
        self.done = False


class Link:
    """The engine's view of one persistent connection to a server: one message at a
    time, or up to `mllp.pipeline` written before the first one's ACK."""

    __slots__ = ("server", "in_flight", "connected", "closed", "last_used", "close_reason", "io")

    def __init__(self, server: Server, now: float):
        self.server = server
        #: The messages on this link waiting for their ACK, oldest first.
        self.in_flight: collections.deque[Delivery] = collections.deque()
        self.connected = False
        self.closed = False
        self.last_used = now
        self.close_reason = "the connection closed before the ACK"
        #: The I/O layer's object for this link (a transport protocol); the engine never reads it.
        self.io: Any = None

    @property
    def delivery(self) -> Delivery | None:
        """The oldest message waiting for its ACK here; None when the link is idle."""
        return self.in_flight[0] if self.in_flight else None

    def holds_control_id(self, delivery: Delivery) -> bool:
        """Whether a message with `delivery`'s MSH-10 is already in flight here: two
        would make an ACK ambiguous, so the second waits or takes another link."""
        control_id = delivery.header.control_id
        return any(other.header.control_id == control_id for other in self.in_flight)


# --- actions --------------------------------------------------------------------------


@dataclass(slots=True)
class Connect:
    """Open a connection to `link.server`; report `link_connected` or `link_lost`."""

    link: Link


@dataclass(slots=True)
class Write:
    """Write `frame` (MLLP-framed) on a connected link."""

    link: Link
    frame: bytes


@dataclass(slots=True)
class ArmAckTimer:
    """Call `ack_timeout(link)` after `delay` seconds unless cancelled first; replaces
    the link's timer if one is armed (it then times the link's next oldest message)."""

    link: Link
    delay: float


@dataclass(slots=True)
class CancelAckTimer:
    link: Link


@dataclass(slots=True)
class CloseLink:
    """Abort the link's connection (or the connection being opened); `link_lost` follows
    if it was connected."""

    link: Link
    why: str


@dataclass(slots=True)
class Reply:
    """Answer the delivery's sender with `frame` (the server's ACK, or medlb's AE)."""

    delivery: Delivery
    frame: bytes


@dataclass(slots=True)
class ReapLater:
    """Call `reap()` after `delay` seconds."""

    delay: float


@dataclass(slots=True)
class Warn:
    """A warning to log: an event name and fields that never hold message content."""

    event: str
    fields: dict[str, Any]


Action = Union[Connect, Write, ArmAckTimer, CancelAckTimer, CloseLink, Reply, ReapLater, Warn]


class Engine:
    """Per-service delivery state shared by every sender: key queues, links, waiting messages.

    Every public method is an event and returns the actions it decided, in order.
    `current_service` returns the live Service (a reload replaces it); `clock` is
    monotonic seconds, injectable for tests.
    """

    def __init__(self, current_service: Callable[[], Service], clock: Callable[[], float] = time.monotonic):
        self._current_service = current_service
        self.clock = clock
        self.keys: dict[bytes, collections.deque[Delivery]] = {}
        self.links: dict[Server, list[Link]] = {}
        self.waiting: dict[Server, collections.deque[Delivery]] = {}
        # Key -> owning server, valid until any server of the service changes state or
        # health (or a reload): spares a hash per server for every message.
        self._owners: dict[bytes, Server] = {}
        self._owners_for: Service | None = None
        # The servers of the live Service (a reload builds a new one): whether a link's
        # server is still the service's, asked on every ACK, without a scan by name.
        self._members: frozenset[Server] = frozenset()
        self._members_for: Service | None = None
        self._type_labels: dict[bytes, str] = {}
        self._reaper_armed = False
        self.stopping = False
        self._actions: list[Action] = []

    @property
    def service(self) -> Service:
        return self._current_service()

    @property
    def name(self) -> str:
        return self.service.name

    # `config` and `stats` ask for the live Service themselves (not through `service`):
    # they are read several times per message.
    @property
    def config(self):  # type: ignore[no-untyped-def]
        return self._current_service().config.mllp

    @property
    def stats(self) -> MllpStats:
        stats = self._current_service().mllp_stats
        assert stats is not None
        return stats

    def _warn(self, event: str, **fields: Any) -> None:
        self._actions.append(Warn(event, fields))

    def _take(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def type_label(self, header: Header) -> str:
        """MSH-9 as a bounded metric label, computed once per distinct type."""
        label = self._type_labels.get(header.message_type)
        if label is None:
            label = self.stats.message_type(header.type_label())
            if len(self._type_labels) < 1024:
                self._type_labels[header.message_type] = label
        return label

    def delivery(self, payload: bytes, header: Header, key: bytes, client: Any) -> Delivery:
        """A Delivery for a message just read from `client`, ready for `submit`."""
        delivery = Delivery(payload, header, key, client, self.clock())
        delivery.type_label = self.type_label(header)
        return delivery

    # --- events from senders -----------------------------------------------------------

    def submit(self, delivery: Delivery) -> list[Action]:
        """A sender's message arrived: queue it behind its key's, send it if first."""
        queue = self.keys.get(delivery.key)
        if queue is None:
            queue = self.keys[delivery.key] = collections.deque()
        queue.append(delivery)
        self.stats.queued += 1
        if len(queue) == 1:
            self._dispatch(delivery)
        return self._take()

    def cancel(self, delivery: Delivery) -> list[Action]:
        """The sender left: drop its messages not yet sent (it will resend them, having
        no ACK); messages already on a link finish, their answers dropped."""
        delivery.client = None
        if delivery.done or delivery.link is not None:
            return self._take()
        if delivery.server is not None:
            waiting = self.waiting.get(delivery.server)
            if waiting is not None and delivery in waiting:
                waiting.remove(delivery)
        self._finish(delivery, None)
        return self._take()

    # --- events from links -------------------------------------------------------------

    def link_connected(self, link: Link) -> list[Action]:
        link.connected = True
        link.server.active += 1
        link.server.total += 1
        for delivery in link.in_flight:
            self._write(link, delivery)
        return self._take()

    def answer(self, link: Link, payload: bytes) -> list[Action]:
        """A whole frame from the server on `link`: relayed only if its MSA-2 is the
        MSH-10 of a message in flight there (no two on one link share an MSH-10)."""
        stats = self.stats
        try:
            ack = parse_ack(payload)
        except HL7Error:
            stats.mismatched_acks += 1
            self._warn("unreadable_answer", service=self.name, server=link.server.name)
            return self._take()
        delivery = None
        for candidate in link.in_flight:
            if candidate.sent_at and ack.acked_control_id == candidate.header.control_id:
                delivery = candidate
                break
        if delivery is None:
            # Never relay an answer as another message's ACK (a late or wrong MSA-2).
            stats.mismatched_acks += 1
            self._warn("mismatched_ack", service=self.name, server=link.server.name,
                       expected="msa2_equal_to_msh10" if link.in_flight else "none")
            return self._take()
        self._free(link, delivery)
        code = ack.code.decode("ascii", "replace")[:2] or "??"
        stats.acks[(link.server.name, code)] += 1
        if code not in ("AA", "CA"):  # the engine's own refusal, relayed as it is
            stats.last_failures.add(code=code, reason="answered by the engine", server=link.server.name)
        stats.ack_latency.observe(self.clock() - delivery.sent_at)
        link.server.bytes_to_client += len(payload) + 3
        self._finish(delivery, mllp.encode(payload))
        self._next_on_link(link)
        return self._take()

    def unusable_answer(self, link: Link, why: str, size: int) -> list[Action]:
        """The server sent a frame the decoder could not pass on whole."""
        self.stats.mismatched_acks += 1
        self._warn("unusable_answer", service=self.name, server=link.server.name, why=why, size=size)
        return self._take()

    def ack_timeout(self, link: Link) -> list[Action]:
        # The answer may still come; a late ACK on a reused link would be taken for the
        # next message's, so the link is dropped rather than reused.
        self._close(link, "no ACK within ack_timeout")
        return self._take()

    def link_lost(self, link: Link, why: str | None = None) -> list[Action]:
        """The link's connection closed, or never opened (`why` then says so)."""
        if link.connected:
            link.server.active -= 1
        link.connected = False
        self._lost(link, why or link.close_reason)
        return self._take()

    # --- events from the runtime and timers ---------------------------------------------

    def changes(self, changes: list[Change]) -> list[Action]:
        """A server that stops taking work: its waiting messages go elsewhere now."""
        name = self.name
        for change in changes:
            if change.service != name:
                continue
            self._owners.clear()  # any change (state, health, failover, failback) may move keys
            if change.kind not in ("state", "health"):
                continue
            for server in list(self.waiting):
                if server.name == change.subject and not server.available:
                    self._redispatch_waiting(server)
        return self._take()

    def reap(self) -> list[Action]:
        """Close links idle past idle_timeout, or to servers that no longer take work."""
        self._reaper_armed = False
        now = self.clock()
        service = self.service
        idle_timeout = service.config.limits.idle_timeout
        current = set(service.servers())
        for server, links in list(self.links.items()):
            for link in list(links):
                if not link.in_flight and (now - link.last_used > idle_timeout or not server.available
                                              or server not in current):
                    self._close(link, "idle")
        if any(self.links.values()):
            self._arm_reaper()
        return self._take()

    def stop(self) -> list[Action]:
        """medlb is stopping: close every link (messages still on one are answered AE)."""
        self.stopping = True
        for links in list(self.links.values()):
            for link in list(links):
                self._close(link, "medlb is stopping")
        return self._take()

    # --- routing ------------------------------------------------------------------------

    def _dispatch(self, delivery: Delivery) -> None:
        """Send the head of a key's queue to the server that owns the key."""
        service = self.service
        if delivery.tried:
            server = service.pick_for_key(delivery.key, delivery.tried)
            if server is None:
                server = service.pick_for_key(delivery.key)  # every server tried: any available one
        else:
            server = self._owner(delivery.key, service)
        if server is None:
            self._fail(delivery, NAK_NO_SERVER)
            return
        link = self._free_link(server, delivery)
        if link is None:
            delivery.server = server
            self.waiting.setdefault(server, collections.deque()).append(delivery)
            return
        self._send(link, delivery)

    def _owner(self, key: bytes, service: Service) -> Server | None:
        owners = self._owners
        if self._owners_for is not service or len(owners) > 65536:
            owners.clear()
            self._owners_for = service
        server = owners.get(key)
        if server is None:
            server = service.pick_for_key(key)
            if server is not None:
                owners[key] = server
        return server

    def _free_link(self, server: Server, delivery: Delivery) -> Link | None:
        """A link to `server` with room for `delivery` (the first, so that pipelined
        messages share a write), or a new one up to server_connections."""
        links = self.links.setdefault(server, [])
        config = self.config
        depth = config.pipeline
        for link in links:
            if len(link.in_flight) < depth and not link.closed and not (link.in_flight and
                                                                        link.holds_control_id(delivery)):
                return link
        if len(links) >= config.server_connections:
            return None
        link = Link(server, self.clock())
        links.append(link)
        self._actions.append(Connect(link))
        self._arm_reaper()
        return link

    def _send(self, link: Link, delivery: Delivery) -> None:
        # The callers found room: at most `pipeline` messages in flight per link.
        link.in_flight.append(delivery)
        delivery.server = None
        delivery.link = link
        if link.connected:
            self._write(link, delivery)

    def _write(self, link: Link, delivery: Delivery) -> None:
        frame = mllp.encode(delivery.payload)
        self._actions.append(Write(link, frame))
        delivery.sent_at = self.clock()
        delivery.attempts += 1
        server = link.server
        server.messages += 1
        server.in_flight += 1
        service = self._current_service()
        stats = service.mllp_stats
        stats.messages[(delivery.type_label, server.name)] += 1
        server.bytes_to_server += len(frame)
        stats.in_flight += 1
        if link.in_flight[0] is delivery:  # the timer times the oldest message on the link
            self._actions.append(ArmAckTimer(link, service.config.mllp.ack_timeout))

    def _free(self, link: Link, delivery: Delivery) -> None:
        """`delivery` is answered (or abandoned): off the link, which has room again."""
        was_oldest = link.in_flight[0] is delivery
        link.in_flight.remove(delivery)
        if delivery.sent_at:
            link.server.in_flight -= 1
            self.stats.in_flight -= 1
            if not link.in_flight:
                self._actions.append(CancelAckTimer(link))
        now = self.clock()
        link.last_used = now
        if was_oldest and link.in_flight and link.connected and not link.closed:
            # The next oldest was written with the one answered: it has what is left of its time.
            oldest = link.in_flight[0]
            self._actions.append(ArmAckTimer(link, max(0.0, oldest.sent_at + self.config.ack_timeout - now)))

    def _close(self, link: Link, why: str) -> None:
        if link.closed:
            return
        link.closed = True
        link.close_reason = why
        self._actions.append(CloseLink(link, why))
        if not link.connected:
            self._lost(link, why)  # still connecting: no connection to report its end

    def _lost(self, link: Link, why: str) -> None:
        link.closed = True
        links = self.links.get(link.server)
        if links is not None and link in links:
            links.remove(link)
        abandoned = list(link.in_flight)
        for delivery in abandoned:
            self._free(link, delivery)
        for delivery in abandoned:
            if delivery.done:
                continue
            delivery.link = None
            delivery.tried.add(link.server)
            delivery.failures += 1
            self._warn("message_not_acked", service=self.name, server=link.server.name, reason=why,
                       attempt=delivery.failures)
            if self.stopping:
                self._fail(delivery, NAK_STOPPING)
            elif delivery.failures > self.config.retries:
                self._fail(delivery, NAK_NOT_ACKED)
            else:
                self.stats.retries += 1
                self._dispatch(delivery)
        # Messages waiting for this server: if no link to it is left, send them elsewhere.
        if not self.links.get(link.server):
            waiting = self.waiting.pop(link.server, None)
            for waiter in waiting or ():
                waiter.server = None
                waiter.tried.add(link.server)
                self._dispatch(waiter)

    def _next_on_link(self, link: Link) -> None:
        """A link just got room: give it waiting messages, or close it if unwanted.
        (Finishing a message may already have handed the link its key's next one.)"""
        depth = self.config.pipeline
        if len(link.in_flight) >= depth or link.closed:
            return
        server = link.server
        waiting = self.waiting.get(server)
        if waiting:
            if server.available:
                while waiting and len(link.in_flight) < depth and not (link.in_flight and
                                                                       link.holds_control_id(waiting[0])):
                    self._send(link, waiting.popleft())
                if link.in_flight:
                    return
            else:
                self._redispatch_waiting(server)
        if link.in_flight:
            return  # still waiting for other ACKs: not closed under them
        if not server.available or not self._is_member(server):
            self._close(link, "the server no longer takes work")

    def _is_member(self, server: Server) -> bool:
        """Whether `server` is one of the live Service's own (not one a reload replaced)."""
        service = self.service
        if self._members_for is not service:
            self._members, self._members_for = frozenset(service.servers()), service
        return server in self._members

    def _redispatch_waiting(self, server: Server) -> None:
        for waiter in self.waiting.pop(server, None) or ():
            waiter.server = None
            self._dispatch(waiter)

    def _arm_reaper(self) -> None:
        if not self._reaper_armed:
            self._reaper_armed = True
            self._actions.append(ReapLater(REAP_INTERVAL))

    # --- completion ---------------------------------------------------------------------

    def _fail(self, delivery: Delivery, reason: str) -> None:
        """Answer AE from medlb itself: the only replies the engine ever writes."""
        self.stats.nak("AE", reason)
        text = reason if reason != NAK_NOT_ACKED else f"{reason} after {delivery.failures} attempt(s)"
        self._warn("negative_ack_sent", service=self.name, code="AE", reason=reason)
        self._finish(delivery, mllp.encode(build_ack(delivery.header, "AE", text)))

    def _finish(self, delivery: Delivery, reply: bytes | None) -> None:
        """Take the delivery off its key's queue, answer its sender, start the next."""
        delivery.done = True
        self.stats.queued -= 1
        queue = self.keys.get(delivery.key)
        was_head = bool(queue) and queue[0] is delivery  # type: ignore[index]
        if queue is not None:
            try:
                queue.remove(delivery)
            except ValueError:
                pass
            if not queue:
                del self.keys[delivery.key]
        if delivery.client is not None and reply is not None:
            self._actions.append(Reply(delivery, reply))
        if was_head and queue:
            self._dispatch(queue[0])
