"""The pipe between the control process and one worker: framed messages with descriptors.

A message is a pickled dict behind a 4-byte length; listen sockets travel with it as
SCM_RIGHTS ancillary data. Both ends are medlb processes the control process started
over a socketpair nobody else holds, so pickle's trust model fits; nothing from the
network is ever unpickled.

Descriptors can be lost on the way: a receiver at its descriptor limit gets the bytes
but not the sockets (MSG_CTRUNC). The message that carried them is then handed over
with `None` for its descriptors, so the receiver can say so rather than serve with
fewer sockets than it was sent.
"""

from __future__ import annotations

import array
import asyncio
import collections
import os
import pickle
import socket
import struct
from typing import Any, Sequence

_HEADER = struct.Struct("!I")
#: A config with thousands of servers pickles to a few MB; anything bigger is a bug.
MAX_MESSAGE = 64 * 1024 * 1024
_MAX_FDS = 512


class ChannelClosed(Exception):
    """The other process closed its end (it exited or is exiting)."""


class Channel:
    """One end of the socketpair, used from an asyncio loop."""

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self.sock = sock
        self._buffer = bytearray()
        #: Descriptors received, one batch per message that carried some (one read never
        #: returns two messages' descriptors), and whether the kernel cut the batch short.
        self._batches: collections.deque[tuple[list[int], bool]] = collections.deque()
        self._readable = asyncio.Event()
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._send_lock = asyncio.Lock()

    def _on_readable(self) -> None:
        self._readable.set()

    def _read_some(self) -> bool:
        """Read what the socket has now; False if there was nothing yet."""
        fds = array.array("i")
        try:
            data, ancillary, flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_LEN(_MAX_FDS * fds.itemsize))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data, ancillary, flags = b"", [], 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        if fds or flags & socket.MSG_CTRUNC:
            self._batches.append((list(fds), bool(flags & socket.MSG_CTRUNC)))
        if not data:
            self._closed = True
        self._buffer += data
        return True

    def _next_message(self) -> tuple[dict[str, Any], list[int] | None] | None:
        if len(self._buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buffer)
        if size > MAX_MESSAGE:
            raise ChannelClosed(f"message of {size} bytes is over {MAX_MESSAGE}")
        if len(self._buffer) < _HEADER.size + size:
            return None
        body = bytes(self._buffer[_HEADER.size:_HEADER.size + size])
        del self._buffer[:_HEADER.size + size]
        message = pickle.loads(body)
        count = message.get("fds", 0)
        if not count:
            return message, []
        taken, cut = self._batches.popleft() if self._batches else ([], True)
        if cut or len(taken) != count:
            for fd in taken:
                os.close(fd)
            return message, None
        return message, taken

    async def receive(self) -> tuple[dict[str, Any], list[int] | None]:
        """The next message and the file descriptors that came with it (as many as it
        names), or None for them if they were lost on the way (see above)."""
        while True:
            found = self._next_message()
            if found is not None:
                return found
            if self._closed:
                raise ChannelClosed("the other process closed the channel")
            self._readable.clear()
            if not self._read_some():
                await self._readable.wait()

    async def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        body = pickle.dumps({**message, "fds": len(fds)}, protocol=pickle.HIGHEST_PROTOCOL)
        data = memoryview(_HEADER.pack(len(body)) + body)
        async with self._send_lock:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            while data:
                try:
                    sent = self.sock.sendmsg([data], ancillary)
                except (BlockingIOError, InterruptedError):
                    await self._writable()
                    continue
                except OSError as exc:
                    raise ChannelClosed(f"cannot send: {exc.strerror}") from None
                ancillary = []  # the descriptors went with the first bytes
                data = data[sent:]

    async def _writable(self) -> None:
        ready = self._loop.create_future()
        self._loop.add_writer(self.sock.fileno(), lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            self._loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
        for batch, _ in self._batches:
            for fd in batch:
                os.close(fd)
        self._batches.clear()
