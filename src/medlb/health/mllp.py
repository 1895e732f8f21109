"""`mllp`: send a test message, expect the ACK whose MSA-2 matches.

HL7 v2 has no ping, and an open port says nothing about an interface engine whose
channel is stopped. The default message is a minimal ADT^A01 with MSH-11 = T (test),
so receivers that honour the processing ID do not file it, and a fresh MSH-10 each
time, so receivers that de-duplicate do not drop it. `expect: any` treats AE and AR as
alive: the application answered, it only disliked the test message.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from medlb.config.models import MllpCheck
from medlb.health.base import CheckTarget, Outcome
from medlb.protocols import mllp
from medlb.protocols.hl7 import HL7Error, parse_ack, parse_header

_sequence = itertools.count(1)


def _control_id() -> str:
    return f"MEDLBCHK{int(time.time())}{next(_sequence)}"


def _message(config: MllpCheck, target: CheckTarget, control_id: str) -> bytes:
    from medlb.protocols.hl7 import make_test_message

    if config.message is None:
        return make_test_message(control_id, receiver=target.server)
    # A configured message: its lines are segments; MSH-10 is replaced by a fresh ID.
    segments = config.message.replace("\r\n", "\n").replace("\r", "\n").strip("\n").split("\n")
    sep = segments[0][3:4]
    fields = segments[0].split(sep)
    while len(fields) < 10:
        fields.append("")
    fields[9] = control_id
    segments[0] = sep.join(fields)
    return ("\r".join(segments) + "\r").encode()


async def check(target: CheckTarget, config: MllpCheck) -> Outcome:
    control_id = _control_id()
    message = _message(config, target, control_id)
    sent_id = parse_header(message).control_id
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(mllp.encode(message))
        await writer.drain()
        decoder = mllp.FrameDecoder(1024 * 1024)
        while True:
            data = await reader.read(65536)
            if not data:
                return Outcome(False, "the connection closed without an ACK")
            for event in decoder.feed(data):
                if isinstance(event, mllp.Interrupted):
                    continue  # a frame cut short by a start byte: not our ACK, which may follow
                if not isinstance(event, mllp.Frame):
                    return Outcome(False, "the answer is larger than 1 MiB")
                try:
                    ack = parse_ack(event.payload)
                except HL7Error as exc:
                    return Outcome(False, f"unreadable answer: {exc}")
                if ack.acked_control_id != sent_id:
                    continue  # someone else's late ACK; keep waiting for ours
                code = ack.code.decode("ascii", "replace")
                if code in ("AA", "CA") or config.expect == "any":
                    return Outcome(True, f"ACK {code}")
                return Outcome(False, f"ACK {code}, expected AA")
    finally:
        writer.close()
