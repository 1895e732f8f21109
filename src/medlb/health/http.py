"""`http` and `https`: one request, an expected status and optionally a body substring.

The response is parsed with h11 (chunked bodies included) and read up to `max_body`
bytes, so a server that streams forever cannot hold the check. A service with
`backend_tls` checks over TLS with the same settings (CA, verification, server name,
client certificate) as its traffic; `https` without backend_tls uses the check's own
`verify`/`ca`. `fhir`, `dicomweb` and `xds` reuse `request()`.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

import h11

from medlb.config.models import HttpCheck
from medlb.health.base import CheckTarget, Outcome
from medlb.tls import check_context


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class NotHttp(Exception):
    pass


async def request(target: CheckTarget, method: str, path: str, *, host: str | None = None,
                  tls: ssl.SSLContext | None = None, headers: list[tuple[str, str]] | None = None,
                  body: bytes = b"", max_body: int = 65536, read_body: bool = True) -> Answer:
    """One HTTP/1.1 request on a fresh connection; the status, headers and up to
    max_body bytes of the body. Raises OSError (and ssl errors) or NotHttp."""
    tls = tls if tls is not None else target.ssl_context()
    server_name = (host or target.server_name) if tls is not None else None
    reader, writer = await asyncio.open_connection(target.host, target.port, ssl=tls,
                                                   server_hostname=server_name.split(":")[0] if server_name else None)
    try:
        conn = h11.Connection(h11.CLIENT)
        host_header = host or (target.host if target.port in (80, 443) else f"{target.host}:{target.port}")
        all_headers = [("Host", host_header), ("User-Agent", "medlb-health"), ("Connection", "close"),
                       *(headers or [])]
        if body:
            all_headers.append(("Content-Length", str(len(body))))
        writer.write(conn.send(h11.Request(method=method, target=path, headers=all_headers)))
        if body:
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        answer: Answer | None = None
        received = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                answer = Answer(event.status_code,
                                {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers})
                if not read_body:
                    break
            elif isinstance(event, h11.Data):
                received += event.data
                if len(received) >= max_body:
                    break
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
    except h11.RemoteProtocolError as exc:
        raise NotHttp(f"not a valid HTTP response: {exc}") from None
    finally:
        writer.close()
    if answer is None:
        raise NotHttp("no HTTP response")
    answer.body = bytes(received[:max_body])
    return answer


async def check(target: CheckTarget, config: HttpCheck) -> Outcome:
    tls = None
    if target.backend_tls is None and config.type == "https":
        tls = check_context(config.ca, config.verify, target.base_dir)
    try:
        answer = await request(target, config.method, config.path, host=config.host, tls=tls,
                               max_body=config.max_body, read_body=config.expect_body is not None)
    except NotHttp as exc:
        return Outcome(False, str(exc))
    status = answer.status
    if status not in config.expect_status:
        expected = ", ".join(map(str, config.expect_status))
        return Outcome(False, f"status {status}, expected {expected}")
    if config.expect_body is not None and config.expect_body.encode() not in answer.body:
        return Outcome(False, f"status {status} but the body lacks the expected text")
    return Outcome(True, f"status {status}")
