"""A naive HTTP/1.1 server that frames request bodies by Content-Length only, as many
embedded and legacy servers do: it never looks at Transfer-Encoding. Behind a proxy
that forwards both headers, a chunk can carry a whole second request that this server
then answers on the same (pooled) connection: the request-smuggling desync.

  python length_http_server.py --name A --port 18001 --log requests.log

Keep-alive; every request (pipelined ones too) is answered `200` with the body
`<name> <METHOD> <path>` and logged as `METHOD path` to --log. It prints `ready` on
stdout once listening.
"""

import argparse
import asyncio
import signal


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    log = open(args.log, "a", buffering=1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    break
                lines = head.lstrip(b"\r\n").split(b"\r\n")
                method, path = (lines[0].split(b" ") + [b"", b""])[:2]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip() or b"0")
                        break
                if length:
                    await reader.readexactly(length)
                log.write(f"{method.decode('latin-1')} {path.decode('latin-1')}\n")
                body = args.name.encode() + b" " + method + b" " + path
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, args.host, args.port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


asyncio.run(main())
