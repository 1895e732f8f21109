"""Admin request bodies are refused before they are read, never after.

A pure ASGI middleware in front of every route, so that no route can forget it. A
request that carries a body is first judged on its headers: a caller who may not use
the route is refused (401, 403) before a byte of the body is read. Then the body is
read against a cap: a Content-Length over it is refused with 413 at once, and a
chunked body is counted as it arrives and refused at the cap. The route gets the body
whole; the caps (`admin.max_body`, `admin.max_config_body`) keep that small. An answer
given here closes the connection, so the rest of the body is never read.
"""

from __future__ import annotations

from typing import Callable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medlb.config.models import AdminConfig

#: The routes that take a whole config file (the last: with its files, from the pair's
#: other node); every other body is a few fields.
CONFIG_PATHS = ("/api/v1/config/validate", "/api/v1/config/apply", "/api/v1/ha/sync/config/prepare")


def body_cap(path: str, admin: AdminConfig) -> tuple[int, str]:
    """The largest body the route takes, and the config key that sets it."""
    if path in CONFIG_PATHS:
        return admin.max_config_body, "admin.max_config_body"
    return admin.max_body, "admin.max_body"


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length, 0 for a request without a body, None for a chunked one."""
    length = 0
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None  # uvicorn refuses it first; if not, the body is counted as it comes
    return length


def too_large(cap: int, key: str) -> Response:
    return JSONResponse({"error": f"the request body is larger than {key} ({cap} bytes)"}, status_code=413,
                        headers={"Connection": "close"})


class BodyGate:
    def __init__(self, app: ASGIApp, admin: Callable[[], AdminConfig],
                 refuse: Callable[[Scope], Response | None]):
        """`admin`: the running admin config (a reload changes the caps at once).
        `refuse`: the answer for a caller who may not use the route, from the headers."""
        self.app, self.admin, self.refuse = app, admin, refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope["headers"])
        if declared == 0:
            await self.app(scope, receive, send)
            return
        refusal = self.refuse(scope)
        if refusal is not None:
            refusal.headers["Connection"] = "close"
            await refusal(scope, receive, send)
            return
        cap, key = body_cap(scope["path"], self.admin())
        if declared is not None and declared > cap:
            await too_large(cap, key)(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: no one to answer
            body += message.get("body", b"")
            if len(body) > cap:
                await too_large(cap, key)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then whatever the server says next (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
