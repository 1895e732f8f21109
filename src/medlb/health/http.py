"""`http` and `https`: one request, an expected status and optionally a body substring.

The response is parsed with h11 (chunked bodies included) and read up to `max_body`
bytes, so a server that streams forever cannot hold the check.
"""

from __future__ import annotations

import asyncio
import ssl

import h11

from medlb.config.models import HttpCheck
from medlb.health.base import CheckTarget, Outcome


def _tls_context(config: HttpCheck) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca)
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def check(target: CheckTarget, config: HttpCheck) -> Outcome:
    tls = _tls_context(config) if config.type == "https" else None
    reader, writer = await asyncio.open_connection(
        target.host, target.port, ssl=tls, server_hostname=(config.host or target.host) if tls else None)
    try:
        conn = h11.Connection(h11.CLIENT)
        host = config.host or (target.host if target.port in (80, 443) else f"{target.host}:{target.port}")
        request = h11.Request(method=config.method, target=config.path, headers=[
            ("Host", host), ("User-Agent", "medlb-health"), ("Connection", "close")])
        writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
        await writer.drain()
        status: int | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                if config.expect_body is None:
                    break
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) >= config.max_body:
                    break
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
    except h11.RemoteProtocolError as exc:
        return Outcome(False, f"not a valid HTTP response: {exc}")
    finally:
        writer.close()
    if status is None:
        return Outcome(False, "no HTTP response")
    if status not in config.expect_status:
        expected = ", ".join(map(str, config.expect_status))
        return Outcome(False, f"status {status}, expected {expected}")
    if config.expect_body is not None and config.expect_body.encode() not in body[: config.max_body]:
        return Outcome(False, f"status {status} but the body lacks the expected text")
    return Outcome(True, f"status {status}")
