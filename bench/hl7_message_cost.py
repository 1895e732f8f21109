"""Python's share of one HL7 message through `mllp` mode, without sockets:

  PYTHONPATH=src python -m bench.hl7_message_cost [messages]

A sender's connection (MllpClient) is fed framed ADT messages, one at a time as the
bench's senders send them, and the engine link it is written to is fed the engine's
ACK; transports only count writes. Prints the best of five runs in CPU microseconds
per message (time.process_time): the system calls and the event loop are left out, so
a change to the per-message Python shows here even on a machine too loaded for
`make bench` to separate two trees.
"""
from __future__ import annotations

import sys
import time

from bench.http_exchange_cost import CountingTransport, service_handle
from medlb.protocols import mllp
from medlb.proxy import mllp as proxy

MESSAGE = ("MSH|^~\\&|LOAD|HOSP|ENG|HOSP|20261123120000||ADT^A08^ADT_A01|{id}|P|2.5.1\r"
           "EVN|A08|20261123120000\rPID|1||{patient}^^^HOSP^MR||DOE^JANE||19700101|F\r"
           "PV1|1|I|WARD^101^1\r")
ACK = "MSH|^~\\&|ENG|HOSP|LOAD|HOSP|20261123120000||ACK^A08^ACK|A{id}|P|2.5.1\rMSA|AA|{id}\r"


def sender_and_links(transport: type[CountingTransport] = CountingTransport
                     ) -> tuple[proxy.MllpClient, list[proxy.Link]]:
    """A sender's connection to a one-engine mllp service, and the engine links the
    service opens for it, each connected at once to a `transport` (no socket). Called
    in a running loop: the service's dispatcher keeps it."""
    handle = service_handle("mllp", 2575)
    client = proxy.MllpClient(handle, 2575)
    client.connection_made(transport(("127.0.0.1", 5555)))  # type: ignore[arg-type]
    dispatcher = handle.dispatcher
    assert dispatcher is not None
    links: list[proxy.Link] = []

    def connect(state):  # type: ignore[no-untyped-def]
        link = proxy.Link(dispatcher, state)
        links.append(link)
        link.connection_made(transport(("127.0.0.1", 9)))  # type: ignore[arg-type]

    dispatcher._connect = connect  # type: ignore[method-assign]
    return client, links


async def main(messages: int) -> None:
    client, links = sender_and_links()
    dispatcher = client.dispatcher
    frames = [mllp.encode(MESSAGE.format(id=f"L{n}", patient=f"P{n % 50}").encode()) for n in range(messages)]
    acks = [mllp.encode(ACK.format(id=f"L{n}").encode()) for n in range(messages)]
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for frame, ack in zip(frames, acks):
            client.data_received(frame)
            links[-1].data_received(ack)
        best = min(best, (time.process_time() - started) / messages * 1e6)
        dispatcher.engine._owners.clear()  # each round routes its keys afresh, as the first did
    writes = client.transport.writes  # type: ignore[attr-defined]
    assert writes == 5 * messages, f"{writes} ACKs reached the sender for {5 * messages} messages"
    print(f"{best:.2f} us per message")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
