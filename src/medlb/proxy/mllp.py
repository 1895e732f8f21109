"""`mllp` mode's I/O: sender and server sockets, timers, fed to the delivery engine.

The delivery rules (order per ordering key, retry on another server, ACK correlation
by MSA-2 = MSH-10, medlb's own AE, never an invented AA) live in the sans-I/O
`medlb.runtime.mllp.Engine`. Here the senders' connections decode frames and answer
in each sender's order, `Link` carries one server connection, and the `Dispatcher`
feeds the engine its events and carries out the actions it returns.

`balance: connection` skips all of this and relays whole connections like `tcp` mode.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

from medlb.logs import get_logger
from medlb.protocols import mllp
from medlb.protocols.hl7 import Header, HL7Error, build_ack, field_value, parse_header
from medlb.runtime import Change, Server, Service
from medlb.runtime import mllp as engine
from medlb.runtime.mllp import Delivery
from medlb.runtime.stats import MllpStats
from medlb.tasks import spawn

from medlb.proxy.tcp import admit

if TYPE_CHECKING:
    from medlb.proxy.tcp import ServiceHandle

log = get_logger("medlb.mllp")

NAK_OVERSIZED = "message exceeds max_message_size"
NAK_INTERRUPTED = "frame interrupted by a start byte"
NAK_OVER_BUDGET = "partial_frames_budget exhausted"
NAK_UNREADABLE = "no readable MSH segment"


class Link(asyncio.Protocol):
    """One persistent connection to a server; the engine's `engine.Link` holds its state."""

    __slots__ = ("dispatcher", "state", "transport", "decoder", "timer")

    def __init__(self, dispatcher: "Dispatcher", state: engine.Link):
        self.dispatcher = dispatcher
        self.state = state
        state.io = self
        self.transport: asyncio.Transport | None = None
        self.decoder = mllp.FrameDecoder(dispatcher.config.max_message_size)
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.dispatcher.run(self.dispatcher.engine.link_connected(self.state))

    def data_received(self, data: bytes) -> None:
        dispatcher = self.dispatcher
        for event in self.decoder.feed(data):
            if isinstance(event, mllp.Frame):
                dispatcher.run(dispatcher.engine.answer(self.state, event.payload))
            else:
                why = "oversized" if isinstance(event, mllp.Oversized) else "interrupted by a start byte"
                dispatcher.run(dispatcher.engine.unusable_answer(self.state, why, event.size))

    def connection_lost(self, exc: Exception | None) -> None:
        self.dispatcher.run(self.dispatcher.engine.link_lost(self.state))

    def ack_timeout(self) -> None:
        self.timer = None
        self.dispatcher.run(self.dispatcher.engine.ack_timeout(self.state))


class Dispatcher:
    """Per-service I/O shared by every sender: the engine, its links and timers."""

    def __init__(self, handle: "ServiceHandle"):
        self.handle = handle
        self.engine = engine.Engine(lambda: handle.service)
        self._reaper: asyncio.TimerHandle | None = None
        # Made by a sender's connection, so in the loop. Kept: on Python 3.11 each
        # asyncio.get_running_loop() is a getpid system call, once per message here.
        self._loop = asyncio.get_running_loop()
        #: With `pipeline` > 1: frames for each link, written together once the loop has
        #: run every callback of this pass (several senders' messages, one write).
        self._writes: dict[Link, list[bytes]] = {}
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

    def submit(self, delivery: Delivery) -> None:
        self.run(self.engine.submit(delivery))

    def cancel(self, delivery: Delivery) -> None:
        self.run(self.engine.cancel(delivery))

    def _on_changes(self, changes: list[Change]) -> None:
        self.run(self.engine.changes(changes))

    def close_all(self) -> None:
        """medlb is stopping: close every link (messages still on one are answered AE)."""
        self.detach()
        self.run(self.engine.stop())

    def _reap(self) -> None:
        self._reaper = None
        self.run(self.engine.reap())

    # --- carrying out the engine's actions -------------------------------------------------

    def run(self, actions: list[engine.Action]) -> None:
        """Carry out the engine's actions in its order (the commonest first)."""
        for action in actions:
            if isinstance(action, engine.Write):
                if self.config.pipeline > 1:
                    self._write_soon(action.link.io, action.frame)
                else:
                    transport = action.link.io.transport
                    assert transport is not None
                    transport.write(action.frame)
            elif isinstance(action, engine.ArmAckTimer):
                link: Link = action.link.io
                if link.timer is not None:
                    link.timer.cancel()
                link.timer = self._loop.call_later(action.delay, link.ack_timeout)
            elif isinstance(action, engine.CancelAckTimer):
                link = action.link.io
                if link.timer is not None:
                    link.timer.cancel()
                    link.timer = None
            elif isinstance(action, engine.Reply):
                client = action.delivery.client
                if client is not None:
                    client.answer(action.delivery, action.frame)
            elif isinstance(action, engine.Connect):
                self._connect(action.link)
            elif isinstance(action, engine.CloseLink):
                link = action.link.io
                if link.transport is not None:
                    link.transport.abort()
                # else still connecting: _connect aborts what it gets, the link being closed
            elif isinstance(action, engine.ReapLater):
                if self._reaper is None:
                    self._reaper = self._loop.call_later(action.delay, self._reap)
            elif isinstance(action, engine.Warn):
                log.warning(action.event, **action.fields)

    def _write_soon(self, link: Link, frame: bytes) -> None:
        if not self._writes:
            self._loop.call_soon(self._flush_writes)
        frames = self._writes.get(link)
        if frames is None:
            self._writes[link] = [frame]
        else:
            frames.append(frame)

    def _flush_writes(self) -> None:
        """One write per link for the frames of this pass. A link aborted meanwhile
        drops its frames: the engine hears `link_lost` and sends them elsewhere."""
        writes, self._writes = self._writes, {}
        for link, frames in writes.items():
            transport = link.transport
            if transport is not None and not transport.is_closing():
                transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _connect(self, state: engine.Link) -> None:
        link = Link(self, state)
        server = state.server
        loop = self._loop
        host, port = server.address_for(self.service.config.addresses[0].port or 0)
        limits = self.service.config.limits

        async def connect() -> None:
            try:
                async with asyncio.timeout(limits.connect_timeout):  # no extra task, unlike wait_for
                    transport, _ = await loop.create_connection(lambda: link, host, port)
            except (OSError, asyncio.TimeoutError):
                server.connect_failures += 1
                self.run(self.engine.link_lost(state, "connect failed"))
                return
            if state.closed:  # closed while connecting
                transport.abort()

        spawn(connect())


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
            delivery = self.dispatcher.engine.delivery(event.payload, header, key, self)
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
        self.service.mllp_stats.nak(code, reason)  # type: ignore[union-attr]
        log.warning("negative_ack_sent", service=self.service.name, code=code, reason=reason)
        reply = mllp.encode(build_ack(header, code, text, error_code="207"))
        placeholder = Delivery(b"", header, b"", self)  # type: ignore[arg-type]
        placeholder.done = True
        self.pending.append(placeholder)
        self.answer(placeholder, reply)

    def answer(self, delivery: Delivery, reply: bytes) -> None:
        """Write answers in the order the sender sent the messages.

        The answers ready now go out in one write: when an earlier message's ACK
        releases later ones that were already answered, a pipelining sender gets
        them all in one segment rather than one system call each."""
        delivery.reply = reply
        pending = self.pending
        if not pending or pending[0] is not delivery:
            return  # an earlier message is still waiting for its answer
        ready: list[bytes] = []
        while pending and pending[0].reply is not None:
            done = pending.popleft()
            self.pending_bytes -= len(done.payload)
            ready.append(done.reply)  # type: ignore[arg-type]
        if not self.closed:
            self.transport.write(ready[0] if len(ready) == 1 else b"".join(ready))
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
