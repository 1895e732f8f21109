"""HL7 load: N senders, each one message in flight (send, wait for the ACK, repeat).

  python hl7_load.py PORT --senders 10 --seconds 3 --max-messages 200000

Prints JSON: messages acknowledged per second and the per-message round trip p50/p99
in milliseconds. Bounded by time and by count.
"""

import argparse
import asyncio
import json
import time

import uvloop

from medlb.protocols import mllp
from medlb.protocols.hl7 import parse_ack

MESSAGE = ("MSH|^~\\&|LOAD|HOSP|ENG|HOSP|20261123120000||ADT^A08^ADT_A01|{id}|P|2.5.1\r"
           "EVN|A08|20261123120000\rPID|1||{patient}^^^HOSP^MR||DOE^JANE||19700101|F\r"
           "PV1|1|I|WARD^101^1\r")


async def sender(port: int, index: int, deadline: float, budget: list[int], latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder = mllp.FrameDecoder(1 << 20)
    done = 0
    n = 0
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        n += 1
        control_id = f"L{index}-{n}"
        started = time.perf_counter()
        writer.write(mllp.encode(MESSAGE.format(id=control_id, patient=f"P{index}-{n % 50}").encode()))
        answer = None
        while answer is None:
            data = await reader.read(65536)
            if not data:
                raise SystemExit("connection closed")
            for event in decoder.feed(data):
                answer = event.payload  # type: ignore[union-attr]
        ack = parse_ack(answer)
        if ack.code != b"AA" or ack.acked_control_id != control_id.encode():
            raise SystemExit(f"bad ACK {ack}")
        latencies.append(time.perf_counter() - started)
        done += 1
    writer.close()
    return done


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-messages", type=int, default=200_000)
    args = parser.parse_args()
    latencies: list[float] = []
    budget = [args.max_messages]
    started = time.monotonic()
    deadline = started + args.seconds
    counts = await asyncio.gather(*(sender(args.port, i, deadline, budget, latencies) for i in range(args.senders)))
    elapsed = time.monotonic() - started
    latencies.sort()
    pick = lambda f: latencies[min(len(latencies) - 1, int(f * len(latencies)))] * 1000 if latencies else 0.0  # noqa
    print(json.dumps({"rate": sum(counts) / elapsed, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                      "messages": sum(counts)}))


uvloop.run(main())
