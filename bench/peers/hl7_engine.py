"""A fast MLLP receiver for benchmarks: answers every message with AA at once (uvloop)."""

import asyncio
import sys

import uvloop

from medlb.protocols import mllp
from medlb.protocols.hl7 import build_ack, parse_header


async def main(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = mllp.FrameDecoder(64 * 1024 * 1024)
        try:
            while data := await reader.read(262144):
                for event in decoder.feed(data):
                    if isinstance(event, mllp.Frame):
                        writer.write(mllp.encode(build_ack(parse_header(event.payload), "AA", "", "0", "ok")))
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


uvloop.run(main(int(sys.argv[1])))
