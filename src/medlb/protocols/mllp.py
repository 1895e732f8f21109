"""MLLP framing, sans-I/O: bytes in, frames out.

A frame is `0x0B` + message + `0x1C 0x0D`. Bytes between frames are not HL7 and are
counted and dropped (a sender's stray newline must not corrupt the next message).

Frames that are not passed on whole are reported as `Refused` events carrying their
first `head_size` bytes, so the caller can answer with a negative ACK built from the
MSH, and the stream stays in step for the next message:

- `Oversized`: longer than `max_size`. It is not buffered: the rest is skipped up to
  the frame's end.
- `Interrupted`: a start byte came before the end (of a frame not yet over max_size;
  one already over it is `Oversized`, whatever cut it). MLLP forbids 0x0B inside a message,
  and a receiver that restarts framing there would take the bytes after it for another
  message, so the frame is cut at the start byte, refused, and a new frame begins
  there. (A start byte right after another one is counted as junk: no message came
  before it to answer.)
- `OverBudget`: the bytes held for unfinished frames, over every decoder that shares a
  `Budget`, would pass its limit. Like an oversized frame it is skipped, not held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

START = 0x0B
START_BYTE = b"\x0b"
END = b"\x1c\x0d"


class Frame(NamedTuple):
    """A whole message (one is made per message each way: a named tuple is the cheapest)."""

    payload: bytes


@dataclass(frozen=True)
class Refused:
    """A frame not passed on: its first bytes and its payload size (up to where it was
    cut, for Interrupted)."""

    head: bytes
    size: int


class Oversized(Refused):
    """Longer than max_size."""


class Interrupted(Refused):
    """Cut short by a start byte before its end."""


class OverBudget(Refused):
    """Did not fit in the budget shared with the other decoders' unfinished frames."""


Event = Frame | Refused


@dataclass
class Budget:
    """Bytes of unfinished frames that all the decoders sharing it may hold together.

    Every byte a decoder keeps for a frame whose end has not arrived is counted in
    `held` until the frame ends, is refused or the decoder is closed, so one `limit`
    bounds what many slow or stalled senders can make the process hold."""

    limit: int
    held: int = 0


def encode(payload: bytes) -> bytes:
    return START_BYTE + payload + END


class FrameDecoder:
    """Feed bytes, get complete frames. One decoder per connection direction.

    Inside a frame the buffer holds only that frame's bytes; while a refused frame is
    skipped it holds at most one byte (a 0x1C that may begin the end), so a decoder
    holds about max_size, or what its budget allows, whichever is less."""

    def __init__(self, max_size: int, head_size: int = 4096, budget: Budget | None = None):
        self.max_size = max_size
        self.head_size = head_size
        self.budget = budget
        self.junk_bytes = 0
        #: Bytes of the current frame counted in the budget.
        self.charged = 0
        self._buffer = bytearray()
        self._inside = False
        self._skipping: type[Refused] | None = None  # inside a refused frame, dropping its bytes
        self._head = bytearray()
        self._skipped = 0
        self._scan_from = 0

    @property
    def buffered(self) -> int:
        """Bytes held now; never much more than max_size."""
        return len(self._buffer)

    @property
    def idle(self) -> bool:
        """True between frames: no partial message is held."""
        return not self._inside

    def close(self) -> None:
        """The connection ended: give what the unfinished frame held back to the budget."""
        self._release()
        self._buffer.clear()
        self._inside = False
        self._skipping = None

    def _release(self) -> None:
        if self.charged:
            assert self.budget is not None
            self.budget.held -= self.charged
            self.charged = 0

    def _fits(self, size: int) -> bool:
        """Charge the budget for the current frame's first `size` bytes, if they fit."""
        budget = self.budget
        if budget is None:
            return True
        more = size - self.charged
        if budget.held + more > budget.limit:
            return False
        budget.held += more
        self.charged = size
        return True

    def _skip(self, kind: type[Refused]) -> None:
        """Refuse the current frame: keep its head, hold none of it from here on."""
        self._release()
        self._skipping = kind
        self._head = bytearray()
        self._skipped = 0

    def _drop(self, count: int) -> None:
        """Skip the first `count` bytes of the buffer, keeping what the head still lacks."""
        buffer = self._buffer
        wanted = self.head_size - len(self._head)
        if wanted > 0:
            self._head += buffer[:min(wanted, count)]
        self._skipped += count
        del buffer[:count]

    def feed(self, data: bytes) -> list[Event]:
        buffer = self._buffer
        if not buffer and not self._inside and data[:1] == START_BYTE:
            # The common read: one whole frame and nothing else, taken without the buffer.
            end = data.find(END, 1)
            if 0 < end == len(data) - 2 and end - 1 <= self.max_size and data.find(START_BYTE, 1) < 0 and (
                    self.budget is None or self.budget.held + end - 1 <= self.budget.limit):
                return [Frame(data[1:end])]
        events: list[Event] = []
        buffer += data
        while buffer:
            if not self._inside:
                start = buffer.find(START_BYTE)
                if start < 0:
                    self.junk_bytes += len(buffer)
                    buffer.clear()
                    break
                self.junk_bytes += start
                del buffer[: start + 1]
                self._inside, self._scan_from = True, 0
                continue
            if self._skipping is not None:
                end = buffer.find(END)
                start = buffer.find(START_BYTE, 0, len(buffer) if end < 0 else end)
                if end < 0 and start < 0:
                    # Keep the last byte: it may be the 0x1C of END.
                    self._drop(len(buffer) - 1)
                    break
                stop = start if start >= 0 else end
                self._drop(stop)
                events.append(self._skipping(bytes(self._head), self._skipped))
                if start < 0:
                    del buffer[:2]
                self._inside, self._skipping = False, None
                continue
            end = buffer.find(END, self._scan_from)
            start = buffer.find(START_BYTE, self._scan_from, len(buffer) if end < 0 else end)
            if start >= 0:
                # A new frame begins before this one ended: refuse what came before.
                self._release()
                if start:
                    # Past max_size it was oversized before it was cut, however the
                    # bytes arrived (in pieces, the skip began before the start byte came).
                    kind = Oversized if start > self.max_size else Interrupted
                    events.append(kind(bytes(buffer[:min(self.head_size, start)]), start))
                else:
                    self.junk_bytes += 1  # the first of two start bytes
                del buffer[:start]
                self._inside = False
                continue
            if end < 0:
                size = len(buffer)
                if size > self.max_size + 1:
                    self._skip(Oversized)
                elif not self._fits(size):
                    self._skip(OverBudget)
                else:
                    self._scan_from = max(0, size - 1)
                    break
                self._drop(size - 1)
                break
            # The common case, a whole frame, inlined: it runs once per message.
            budget, charged = self.budget, self.charged
            if end > self.max_size:
                events.append(Oversized(bytes(buffer[: min(self.head_size, end)]), end))
            elif budget is not None and budget.held - charged + end > budget.limit:
                events.append(OverBudget(bytes(buffer[: min(self.head_size, end)]), end))
            else:
                events.append(Frame(bytes(buffer[:end])))
            if charged:
                self._release()
            del buffer[: end + 2]
            self._inside = False
        return events
