"""`mllp` mode: HL7 v2 balanced message by message, with a delivery guarantee.

Each message a sender sends is a Delivery. Deliveries with the same ordering key (a
patient's PID-3, say) form a queue with at most one in flight, so a patient's A01, A02,
A03 reach the server in order; other keys proceed in parallel over persistent server
connections (links), each carrying one message at a time. A message is acknowledged to
its sender only by the ACK whose MSA-2 equals its MSH-10, relayed unchanged. If the
link dies or `ack_timeout` passes first, the message goes to another server, up to
`retries` times, still at the head of its key's queue; after that the sender gets an
AE from medlb. medlb never writes an AA itself.

`balance: connection` skips all of this and relays whole connections like `tcp` mode.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING

from medlb.logs import get_logger
from medlb.protocols import mllp
from medlb.protocols.hl7 import Header, HL7Error, build_ack, field_value, parse_ack, parse_header
from medlb.runtime import Change, Server, Service
from medlb.runtime.stats import MllpStats
from medlb.tasks import spawn

from medlb.proxy.tcp import admit

if TYPE_CHECKING:
    from medlb.proxy.tcp import ServiceHandle

log = get_logger("medlb.mllp")

NAK_NO_SERVER = "no server available"
NAK_NOT_ACKED = "no server acknowledged the message"
NAK_OVERSIZED = "message exceeds max_message_size"
NAK_INTERRUPTED = "frame interrupted by a start byte"
NAK_OVER_BUDGET = "partial_frames_budget exhausted"
NAK_UNREADABLE = "no readable MSH segment"
NAK_STOPPING = "medlb is stopping"


class Delivery:
    """One message from a sender, until its ACK (or medlb's AE) is on its way back."""

    __slots__ = ("payload", "header", "key", "type_label", "client", "attempts", "failures", "tried",
                 "received_at", "sent_at", "link", "server", "reply", "done")

    def __init__(self, payload: bytes, header: Header, key: bytes, client: "MllpClient"):
        self.payload = payload
        self.header = header
        self.key = key
        self.client: MllpClient | None = client
        self.type_label = "unknown"
        self.attempts = 0  # times written to a server
        self.failures = 0  # links lost (or never connected) before its ACK
        self.tried: set[Server] = set()
        self.received_at = time.monotonic()
        self.sent_at = 0.0
        self.link: Link | None = None
        self.server: Server | None = None  # waiting for a free link to this server
        self.reply: bytes | None = None
        self.done = False


class Link(asyncio.Protocol):
    """One persistent connection to a server, carrying one message at a time."""

    def __init__(self, dispatcher: "Dispatcher", server: Server):
        self.dispatcher = dispatcher
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.decoder = mllp.FrameDecoder(dispatcher.config.max_message_size)
        self.delivery: Delivery | None = None
        self.connected = False
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        self.last_used = time.monotonic()
        self.close_reason = "the connection closed before the ACK"

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connected = True
        self.server.active += 1
        self.server.total += 1
        if self.delivery is not None:
            self._write(self.delivery)

    def data_received(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if isinstance(event, mllp.Frame):
                self.dispatcher.on_answer(self, event.payload)
            else:
                self.dispatcher.stats.mismatched_acks += 1
                log.warning("unusable_answer", service=self.dispatcher.name, server=self.server.name,
                            why="oversized" if isinstance(event, mllp.Oversized) else "interrupted by a start byte",
                            size=event.size)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connected:
            self.server.active -= 1
        self.connected = False
        self.dispatcher.on_link_lost(self, self.close_reason)

    # --- used by the dispatcher -------------------------------------------------------

    def send(self, delivery: Delivery) -> None:
        assert self.delivery is None, "one message in flight per link"
        self.delivery = delivery
        delivery.server = None
        delivery.link = self
        if self.connected:
            self._write(delivery)

    def _write(self, delivery: Delivery) -> None:
        assert self.transport is not None
        frame = mllp.encode(delivery.payload)
        self.transport.write(frame)
        delivery.sent_at = time.monotonic()
        delivery.attempts += 1
        self.server.messages += 1
        self.server.in_flight += 1
        self.dispatcher.stats.messages[(delivery.type_label, self.server.name)] += 1
        self.server.bytes_to_server += len(frame)
        self.dispatcher.stats.in_flight += 1
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.dispatcher.config.ack_timeout, self._ack_timeout)

    def finish(self) -> Delivery | None:
        """The in-flight delivery is answered (or abandoned): the link is free again."""
        delivery, self.delivery = self.delivery, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if delivery is not None and delivery.sent_at:
            self.server.in_flight -= 1
            self.dispatcher.stats.in_flight -= 1
        self.last_used = time.monotonic()
        return delivery

    def _ack_timeout(self) -> None:
        self._timer = None
        # The answer may still come; a late ACK on a reused link would be taken for the
        # next message's, so the link is dropped rather than reused.
        self.close("no ACK within ack_timeout")

    def close(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = why
        if self.transport is not None:
            self.transport.abort()
        else:
            self.dispatcher.on_link_lost(self, why)


class Dispatcher:
    """Per-service state shared by every sender: key queues, links, waiting messages."""

    def __init__(self, handle: "ServiceHandle"):
        self.handle = handle
        self.keys: dict[bytes, collections.deque[Delivery]] = {}
        self.links: dict[Server, list[Link]] = {}
        self.waiting: dict[Server, collections.deque[Delivery]] = {}
        # Key -> owning server, valid until any server of the service changes state or
        # health (or a reload): spares a hash per server for every message.
        self._owners: dict[bytes, Server] = {}
        self._owners_for: Service | None = None
        self._type_labels: dict[bytes, str] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self.stopping = False
        #: Unfinished frames of all the service's senders in this process.
        self.budget = mllp.Budget(self.config.partial_frames_budget)
        self._runtime = handle.runtime
        self._runtime.subscribe(self._on_changes)

    def detach(self) -> None:
        """Stop following the runtime's changes: the service is gone (a reload removed
        it) or medlb stops. Senders still connected are served to the end."""
        self._runtime.unsubscribe(self._on_changes)

    @property
    def service(self) -> Service:
        return self.handle.service

    @property
    def name(self) -> str:
        return self.handle.service.name

    @property
    def config(self):  # type: ignore[no-untyped-def]
        return self.handle.service.config.mllp

    @property
    def stats(self) -> MllpStats:
        stats = self.handle.service.mllp_stats
        assert stats is not None
        return stats

    # --- from senders -----------------------------------------------------------------

    def submit(self, delivery: Delivery) -> None:
        queue = self.keys.get(delivery.key)
        if queue is None:
            queue = self.keys[delivery.key] = collections.deque()
        queue.append(delivery)
        self.stats.queued += 1
        if len(queue) == 1:
            self._dispatch(delivery)

    def cancel(self, delivery: Delivery) -> None:
        """The sender left: drop its messages not yet sent (it will resend them, having
        no ACK); messages already on a link finish, their answers dropped."""
        delivery.client = None
        if delivery.done or delivery.link is not None:
            return
        if delivery.server is not None:
            waiting = self.waiting.get(delivery.server)
            if waiting is not None and delivery in waiting:
                waiting.remove(delivery)
        self._finish(delivery, None)

    # --- routing ------------------------------------------------------------------------

    def _dispatch(self, delivery: Delivery) -> None:
        """Send the head of a key's queue to the server that owns the key."""
        service = self.service
        if delivery.tried:
            server = service.pick_for_key(delivery.key, delivery.tried)
            if server is None:
                server = service.pick_for_key(delivery.key)  # every server tried: any available one
        else:
            server = self._owner(delivery.key)
        if server is None:
            self._fail(delivery, NAK_NO_SERVER)
            return
        link = self._free_link(server)
        if link is None:
            delivery.server = server
            self.waiting.setdefault(server, collections.deque()).append(delivery)
            return
        link.send(delivery)

    def _owner(self, key: bytes) -> Server | None:
        owners = self._owners
        if self._owners_for is not self.service or len(owners) > 65536:
            owners.clear()
            self._owners_for = self.service
        server = owners.get(key)
        if server is None:
            server = self.service.pick_for_key(key)
            if server is not None:
                owners[key] = server
        return server

    def type_label(self, header: Header) -> str:
        """MSH-9 as a bounded metric label, computed once per distinct type."""
        label = self._type_labels.get(header.message_type)
        if label is None:
            label = self.stats.message_type(header.type_label())
            if len(self._type_labels) < 1024:
                self._type_labels[header.message_type] = label
        return label

    def _free_link(self, server: Server) -> Link | None:
        links = self.links.setdefault(server, [])
        for link in links:
            if link.delivery is None and not link.closed:
                return link
        if len(links) >= self.config.server_connections:
            return None
        link = Link(self, server)
        links.append(link)
        loop = asyncio.get_running_loop()
        host, port = server.address_for(self.service.config.addresses[0].port or 0)
        limits = self.service.config.limits

        async def connect() -> None:
            try:
                async with asyncio.timeout(limits.connect_timeout):  # no extra task, unlike wait_for
                    transport, _ = await loop.create_connection(lambda: link, host, port)
            except (OSError, asyncio.TimeoutError):
                server.connect_failures += 1
                link.closed = True
                self.on_link_lost(link, "connect failed")
                return
            if link.closed:  # closed while connecting
                transport.abort()

        spawn(connect())
        self._arm_reaper()
        return link

    # --- from links ---------------------------------------------------------------------

    def on_answer(self, link: Link, payload: bytes) -> None:
        delivery = link.delivery
        stats = self.stats
        try:
            ack = parse_ack(payload)
        except HL7Error:
            stats.mismatched_acks += 1
            log.warning("unreadable_answer", service=self.name, server=link.server.name)
            return
        if delivery is None or not delivery.sent_at or ack.acked_control_id != delivery.header.control_id:
            # Never relay an answer as another message's ACK (a late or wrong MSA-2).
            stats.mismatched_acks += 1
            log.warning("mismatched_ack", service=self.name, server=link.server.name,
                        expected="none" if delivery is None else "msa2_equal_to_msh10")
            return
        link.finish()
        code = ack.code.decode("ascii", "replace")[:2] or "??"
        stats.acks[(link.server.name, code)] += 1
        stats.ack_latency.observe(time.monotonic() - delivery.sent_at)
        link.server.bytes_to_client += len(payload) + 3
        self._finish(delivery, mllp.encode(payload))
        self._next_on_link(link)

    def on_link_lost(self, link: Link, why: str) -> None:
        link.closed = True
        links = self.links.get(link.server)
        if links is not None and link in links:
            links.remove(link)
        delivery = link.finish()
        if delivery is not None and not delivery.done:
            delivery.link = None
            delivery.tried.add(link.server)
            delivery.failures += 1
            log.warning("message_not_acked", service=self.name, server=link.server.name, reason=why,
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
        """A link just came free: give it a waiting message, or close it if unwanted.
        (Finishing a message may already have handed the link its key's next one.)"""
        if link.delivery is not None or link.closed:
            return
        server = link.server
        waiting = self.waiting.get(server)
        if waiting:
            if server.available:
                link.send(waiting.popleft())
                return
            self._redispatch_waiting(server)
        if not server.available or self.service.server(server.name) is not server:
            link.close("the server no longer takes work")

    def _redispatch_waiting(self, server: Server) -> None:
        for waiter in self.waiting.pop(server, None) or ():
            waiter.server = None
            self._dispatch(waiter)

    # --- completion ---------------------------------------------------------------------

    def _fail(self, delivery: Delivery, reason: str) -> None:
        self.stats.naks[reason] += 1
        text = reason if reason != NAK_NOT_ACKED else f"{reason} after {delivery.failures} attempt(s)"
        log.warning("negative_ack_sent", service=self.name, code="AE", reason=reason)
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
            delivery.client.answer(delivery, reply)
        if was_head and queue:
            self._dispatch(queue[0])

    # --- upkeep ---------------------------------------------------------------------------

    def _on_changes(self, changes: list[Change]) -> None:
        """A server that stops taking work: its waiting messages go elsewhere now."""
        for change in changes:
            if change.service != self.name:
                continue
            self._owners.clear()  # any change (state, health, failover, failback) may move keys
            if change.kind not in ("state", "health"):
                continue
            for server in list(self.waiting):
                if server.name == change.subject and not server.available:
                    self._redispatch_waiting(server)

    def close_all(self) -> None:
        """medlb is stopping: close every link (messages still on one are answered AE)."""
        self.stopping = True
        self.detach()
        for links in list(self.links.values()):
            for link in list(links):
                link.close("medlb is stopping")

    def _arm_reaper(self) -> None:
        if self._reaper is None:
            loop = asyncio.get_running_loop()
            self._reaper = loop.call_later(1.0, self._reap)

    def _reap(self) -> None:
        """Close links idle past idle_timeout, or to servers that no longer take work."""
        self._reaper = None
        now = time.monotonic()
        idle_timeout = self.service.config.limits.idle_timeout
        current = set(self.service.servers())
        for server, links in list(self.links.items()):
            for link in list(links):
                if link.delivery is None and (now - link.last_used > idle_timeout or not server.available
                                              or server not in current):
                    link.close("idle")
        if any(self.links.values()):
            self._arm_reaper()


class MllpClient(asyncio.Protocol):
    """One sender's connection: frames in, ACKs out in the sender's own order."""

    def __init__(self, handle: "ServiceHandle", local_port: int):
        self.handle = handle
        self.service = handle.service
        self.local_port = local_port
        dispatcher = handle.dispatcher
        if dispatcher is None:
            dispatcher = handle.dispatcher = Dispatcher(handle)
        self.dispatcher: Dispatcher = dispatcher
        #: Always None: a sender's messages go to many servers over the dispatcher's
        #: links, so a halted server's on_halt: close leaves the sender connected.
        self.server: Server | None = None
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.pending: collections.deque[Delivery] = collections.deque()
        self.pending_bytes = 0
        config = handle.service.config.mllp
        assert config is not None
        budget = dispatcher.budget
        budget.limit = config.partial_frames_budget  # after a reload, from its first new connection
        self.decoder = mllp.FrameDecoder(config.max_message_size, budget=budget)
        self.counted = False
        self.paused = False
        self.closed = False
        self.stopping = False
        self._activity = 0
        self._idle_mark = 0
        self._idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not admit(self.service):
            self.closed = True
            transport.close()  # accepted and closed at once, no byte sent
            return
        self.counted = True
        self.handle.connections.add(self)
        self._idle_since = asyncio.get_running_loop().time()

    def data_received(self, data: bytes) -> None:
        self._activity += 1
        stats = self.service.mllp_stats
        assert stats is not None
        config = self.service.config.mllp
        assert config is not None
        junk_before = self.decoder.junk_bytes
        for event in self.decoder.feed(data):
            if isinstance(event, mllp.Refused):
                self._refuse_frame(event, config.max_message_size)
                continue
            try:
                header = parse_header(event.payload)
                key = self._key(event.payload, header, config.ordering_key)
            except HL7Error:
                stats.unreadable += 1
                self._refuse(event.payload[:4096], "AR", NAK_UNREADABLE, NAK_UNREADABLE)
                continue
            delivery = Delivery(event.payload, header, key, self)
            delivery.type_label = self.dispatcher.type_label(header)
            self.pending.append(delivery)
            self.pending_bytes += len(event.payload)
            self.dispatcher.submit(delivery)
        stats.junk_bytes += self.decoder.junk_bytes - junk_before
        stats.partial_frame_bytes = self.dispatcher.budget.held
        if (len(self.pending) >= config.max_queued or self.pending_bytes >= config.max_queued_bytes) \
                and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def _key(self, payload: bytes, header: Header, path: str) -> bytes:
        if path == "connection":
            return b"conn:%d" % id(self)
        value = field_value(payload, path, header)
        # A message without the key field is ordered with the sender's other keyless ones.
        return b"key:" + value if value else b"conn:%d" % id(self)

    def _refuse_frame(self, event: mllp.Refused, max_message_size: int) -> None:
        """AR for a frame the decoder did not pass on whole."""
        if isinstance(event, mllp.Oversized):
            self.service.mllp_stats.oversized += 1  # type: ignore[union-attr]
            self._refuse(event.head, "AR", f"{NAK_OVERSIZED}: {event.size} bytes, limit {max_message_size}",
                         NAK_OVERSIZED)
        elif isinstance(event, mllp.Interrupted):
            self._refuse(event.head, "AR", f"{NAK_INTERRUPTED} (0x0B) before its end; the message after it is read "
                         "on its own", NAK_INTERRUPTED)
        else:
            self._refuse(event.head, "AR", f"{NAK_OVER_BUDGET}: this message does not fit in medlb's "
                         f"{self.dispatcher.budget.limit} bytes for unfinished messages now; send it again later",
                         NAK_OVER_BUDGET)

    def _refuse(self, head: bytes, code: str, text: str, reason: str) -> None:
        """Answer a message medlb will not forward; the connection stays usable."""
        try:
            header: Header | None = parse_header(head)
        except HL7Error:
            header = None
        self.service.mllp_stats.naks[reason] += 1  # type: ignore[union-attr]
        log.warning("negative_ack_sent", service=self.service.name, code=code, reason=reason)
        reply = mllp.encode(build_ack(header, code, text, error_code="207"))
        placeholder = Delivery(b"", header, b"", self)  # type: ignore[arg-type]
        placeholder.done = True
        self.pending.append(placeholder)
        self.answer(placeholder, reply)

    def answer(self, delivery: Delivery, reply: bytes) -> None:
        """Write answers in the order the sender sent the messages."""
        delivery.reply = reply
        pending = self.pending
        while pending and pending[0].reply is not None:
            done = pending.popleft()
            self.pending_bytes -= len(done.payload)
            if not self.closed:
                self.transport.write(done.reply)  # type: ignore[arg-type]
        if self.stopping:
            if not pending:
                self.close()
            return
        config = self.service.config.mllp
        if self.paused and config is not None and len(pending) < config.max_queued // 2 \
                and self.pending_bytes < config.max_queued_bytes // 2 and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.decoder.close()
        self.dispatcher.stats.partial_frame_bytes = self.dispatcher.budget.held
        for delivery in list(self.pending):
            if not delivery.done:
                self.dispatcher.cancel(delivery)
        self.pending.clear()
        if self.counted:
            self.counted = False
            self.service.active -= 1
            self.handle.connections.discard(self)

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    def close(self) -> None:
        self.closed = True
        self.transport.close()

    def shutdown(self) -> None:
        """medlb is stopping: read no more messages, close once every answer is out."""
        self.stopping = True
        if not self.closed:
            self.transport.pause_reading()
            if not self.pending:
                self.close()

    def idle_check(self, now: float) -> None:
        """Called by the listeners' sweep: close after idle_timeout without a message
        either way; a connection waiting for an ACK is not idle."""
        if self.closed:
            return
        if self._activity != self._idle_mark or self.pending:
            self._idle_mark, self._idle_since = self._activity, now
        elif now - self._idle_since >= self.service.config.limits.idle_timeout:
            self.close()


def mllp_factory(handle: "ServiceHandle", local_port: int) -> asyncio.Protocol:
    config = handle.service.config.mllp
    if config is not None and config.balance == "connection":
        from medlb.proxy.tcp import TcpClient

        return TcpClient(handle, local_port)
    return MllpClient(handle, local_port)
