"""A real TCP backend for tests: says its name, then echoes, or sends a bulk stream.

  python tcp_server.py --name A --port 18001 [--host 127.0.0.1] [--bulk BYTES]

On connect it writes `NAME\n`. Then it echoes every byte back until the client closes
its side, and closes its own. With --bulk it writes BYTES bytes after the name (as fast
as the client takes them) and closes. It prints `ready` on stdout once listening.
"""

import argparse
import asyncio
import signal

CHUNK = b"x" * (1 << 20)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, action="append")
    parser.add_argument("--bulk", type=int, default=0)
    args = parser.parse_args()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(args.name.encode() + b"\n")
            if args.bulk:
                left = args.bulk
                while left > 0:
                    piece = CHUNK[: min(left, len(CHUNK))]
                    writer.write(piece)
                    left -= len(piece)
                    await writer.drain()
            else:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    servers = [await asyncio.start_server(handle, args.host, port) for port in args.port]
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


asyncio.run(main())
