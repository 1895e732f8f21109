"""Mode mllp's message path without sockets, as bench.hl7_message_cost drives it: a
sender's connection fed whole frames (the decoder's one-frame shortcut) and the engine
link fed its ACKs. Pins what the per-message shortcuts must keep: the engine gets each
message byte for byte, the sender gets each engine ACK byte for byte, in its order,
and an ACK for another message is never relayed."""

from __future__ import annotations

import asyncio

from bench.hl7_message_cost import ACK, MESSAGE, sender_and_links
from medlb.protocols import mllp
from test_http_exchange import Recording


def test_each_message_reaches_the_engine_and_each_ack_its_sender_byte_for_byte() -> None:
    async def run() -> None:
        client, links = sender_and_links(Recording)
        for n in range(3):
            message = MESSAGE.format(id=f"L{n}", patient="P7").encode()
            client.data_received(mllp.encode(message))
            engine = links[-1].transport
            assert engine.written.endswith(mllp.encode(message))  # type: ignore[union-attr]
            ack = mllp.encode(ACK.format(id=f"L{n}").encode())
            links[-1].data_received(ack)
            assert client.transport.written.endswith(ack)  # type: ignore[attr-defined]
        acks = b"".join(mllp.encode(ACK.format(id=f"L{n}").encode()) for n in range(3))
        assert client.transport.written == acks  # type: ignore[attr-defined]

    asyncio.run(run())


def test_an_ack_for_another_message_is_not_relayed() -> None:
    async def run() -> None:
        client, links = sender_and_links(Recording)
        client.data_received(mllp.encode(MESSAGE.format(id="L1", patient="P7").encode()))
        links[-1].data_received(mllp.encode(ACK.format(id="L2").encode()))
        assert client.transport.written == b""  # type: ignore[attr-defined]
        assert client.service.mllp_stats.mismatched_acks == 1  # type: ignore[union-attr]
        links[-1].data_received(mllp.encode(ACK.format(id="L1").encode()))
        assert client.transport.written == mllp.encode(ACK.format(id="L1").encode())  # type: ignore[attr-defined]

    asyncio.run(run())
