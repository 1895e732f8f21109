"""An HTTP stub that answers every request with one canned response (FHIR, XDS and
DICOMweb check tests), and logs `METHOD PATH` and the body's first line to --log.

  python canned_http.py --port P --status 200 --body-file F [--content-type T] [--log L]

It prints `ready` on stdout once listening.
"""

import argparse
import asyncio
from pathlib import Path

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--log")
    args = parser.parse_args()
    body = Path(args.body_file).read_bytes()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        received = b""
        while True:
            message = await receive()
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        if args.log:
            with open(args.log, "a") as log:
                query = scope["query_string"].decode()
                log.write(f"{scope['method']} {scope['path']}{'?' + query if query else ''} "
                          f"{dict((k.decode(), v.decode()) for k, v in scope['headers']).get('content-type', '')} "
                          f"{len(received)}\n")
        await send({"type": "http.response.start", "status": args.status,
                    "headers": [(b"content-type", args.content_type.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           access_log=False, lifespan="off"))

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.02)
        print("ready", flush=True)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
