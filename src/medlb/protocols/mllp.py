"""MLLP framing, sans-I/O: bytes in, frames out.

A frame is `0x0B` + message + `0x1C 0x0D`. Bytes between frames are not HL7 and are
counted and dropped (a sender's stray newline must not corrupt the next message). A
frame longer than `max_size` is not buffered: its first `head_size` bytes are kept so
the caller can answer with a negative ACK built from the MSH, the rest is skipped up to
the frame's end, and the stream stays in step for the next message.
"""

from __future__ import annotations

from dataclasses import dataclass

START = 0x0B
START_BYTE = b"\x0b"
END = b"\x1c\x0d"


@dataclass(frozen=True)
class Frame:
    payload: bytes


@dataclass(frozen=True)
class Oversized:
    """A frame over the limit: its first bytes and its total payload size."""

    head: bytes
    size: int


Event = Frame | Oversized


def encode(payload: bytes) -> bytes:
    return START_BYTE + payload + END


class FrameDecoder:
    """Feed bytes, get complete frames. One decoder per connection direction."""

    def __init__(self, max_size: int, head_size: int = 4096):
        self.max_size = max_size
        self.head_size = head_size
        self.junk_bytes = 0
        self._buffer = bytearray()
        self._inside = False
        self._skipping = False  # inside an oversized frame, dropping its bytes
        self._head = b""
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

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        buffer = self._buffer
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
            if self._skipping:
                end = buffer.find(END)
                if end < 0:
                    # Keep the last byte: it may be the 0x1C of END.
                    self._skipped += len(buffer) - 1
                    del buffer[:-1]
                    break
                events.append(Oversized(self._head, self._skipped + end))
                del buffer[: end + 2]
                self._inside = self._skipping = False
                continue
            end = buffer.find(END, self._scan_from)
            if end < 0:
                if len(buffer) > self.max_size + 1:
                    self._head = bytes(buffer[: min(self.head_size, len(buffer) - 1)])
                    self._skipped = len(buffer) - 1
                    del buffer[:-1]
                    self._skipping = True
                else:
                    self._scan_from = max(0, len(buffer) - 1)
                break
            if end > self.max_size:
                events.append(Oversized(bytes(buffer[: min(self.head_size, end)]), end))
            else:
                events.append(Frame(bytes(buffer[:end])))
            del buffer[: end + 2]
            self._inside = False
        return events
