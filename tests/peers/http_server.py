"""A real HTTP(S) backend for tests, on uvicorn: keep-alive, streaming both ways.

  python http_server.py --name A --port 18001 [--cert C --key K [--client-ca CA]] [--health 200]

  GET  /name              -> the name (text)
  GET  /health            -> status --health (POST /control/health/<status> changes it)
  GET  /headers           -> the request headers as JSON, plus the name and the peer address
  POST|PUT /upload        -> reads the body as it streams: {"bytes": N, "sha256": ..., "name": ...}
  GET  /download/<bytes>  -> that many bytes, streamed in 1 MB pieces (chunked)
  GET  /slow/<seconds>    -> answers after sleeping
  GET  anything else      -> "<name> <path>"

It prints `ready` on stdout once listening.
"""

import argparse
import asyncio
import hashlib
import json
import signal

import uvicorn

PIECE = b"d" * (1 << 20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--health", type=int, default=200)
    parser.add_argument("--client-ca", help="require client certificates from this CA (mutual TLS)")
    args = parser.parse_args()
    state = {"health": args.health}
    name = args.name.encode()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]

        async def answer(status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                                    (b"x-server", name)]})
            await send({"type": "http.response.body", "body": body})

        if path == "/upload":
            digest, size = hashlib.sha256(), 0
            while True:
                message = await receive()
                chunk = message.get("body", b"")
                digest.update(chunk)
                size += len(chunk)
                if not message.get("more_body"):
                    break
            await answer(200, json.dumps({"bytes": size, "sha256": digest.hexdigest(), "name": args.name}).encode(),
                         b"application/json")
        elif path.startswith("/download/"):
            left = int(path.rsplit("/", 1)[1])
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream"), (b"x-server", name)]})
            while left > 0:
                piece = PIECE[: min(left, len(PIECE))]
                left -= len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": left > 0})
        elif path == "/health":
            await answer(state["health"], b"health\n")
        elif path.startswith("/control/health/"):
            state["health"] = int(path.rsplit("/", 1)[1])
            await answer(200, b"ok\n")
        elif path == "/headers":
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            await answer(200, json.dumps({"name": args.name, "headers": headers,
                                           "client": (scope.get("client") or ("", 0))[0]}).encode(), b"application/json")
        elif path.startswith("/slow/"):
            await asyncio.sleep(float(path.rsplit("/", 1)[1]))
            await answer(200, name)
        elif path == "/name":
            await answer(200, name)
        else:
            await answer(200, name + b" " + path.encode())

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            ssl_certfile=args.cert, ssl_keyfile=args.key, timeout_keep_alive=30,
                            ssl_ca_certs=args.client_ca, ssl_cert_reqs=2 if args.client_ca else 0,
                            lifespan="on")
    server = uvicorn.Server(config)

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
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    main()
