"""The pair's sync channel: each node's admin API, called by the other node over HTTPS.

Why its own routes and its own secret: the nodes sync configs and operator decisions
with each other, and neither an operator's token nor a session may do that in their
name, nor the pair's secret do what an operator does. So the routes under
`/api/v1/ha/sync/` take only `Authorization: Bearer <ha.sync_token_file>` (compared in
constant time); an operator's token or session is refused there (403), the sync token
is refused on every operator route (admin/api.py), and a wrong token is refused (401),
audited and logged without the token.

Why a small client of its own rather than httpx (a test dependency only): the peer's
admin certificate is self-signed, so it is pinned by its SHA-256 fingerprint on first
contact (trust on first use) into `STATE/ha/peer-cert.sha256`. The fingerprint must
be checked after the TLS handshake and before the token is sent, which needs the
connection in hand; asyncio's streams give it, in a few lines. A changed certificate
is refused (PeerUnreachable naming both fingerprints) until the operator removes the
pin file (docs/ha.md).

Other modules add sync routes with `@sync_routes` (a function given the router and
the Control) and are named in SYNC_MODULES, so the router imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request

from medlb.atomic import write_atomically
from medlb import __version__, logs
from medlb.config import ConfigError, LoadedConfig, Problem
from medlb.config.loader import read_secret
from medlb.config.models import HaNode
from medlb.tasks import cancel

if TYPE_CHECKING:
    from medlb.control import Control

log = logs.get_logger("medlb.ha")

SYNC_PREFIX = "/api/v1/ha/sync"
#: The pinned fingerprint of the peer's admin certificate, under STATE/ha/.
PIN_NAME = "peer-cert.sha256"
#: The largest answer the client reads from the peer (a config with its files).
MAX_ANSWER = 64 * 2**20
#: Modules that add sync routes with @sync_routes; the router imports them.
SYNC_MODULES: tuple[str, ...] = ("medlb.ha.configsync", "medlb.ha.decisions", "medlb.ha.sticky")
OPERATOR_ON_SYNC = "the sync API takes the pair's sync token, not an operator's"
SYNC_ON_OPERATOR = f"the pair's sync token opens only {SYNC_PREFIX}/...; send an operator's token"


class PeerUnreachable(Exception):
    """The peer did not answer, or cannot be trusted; the message says which and why."""

    @classmethod
    def answered(cls, peer: str, status: int, answer: Any) -> "PeerUnreachable":
        """The peer answered, but not as asked (its status and its error, in its words)."""
        said = answer.get("error") if isinstance(answer, dict) else answer
        return cls(f"the peer {peer} answered {status}: {said}")


class SyncRefused(Exception):
    """A sync request refused on its credentials (the API answers it as JSON)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def fingerprint_der(der: bytes) -> str:
    """The SHA-256 fingerprint as the admin log prints it (`AB:CD:...`)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def read_sync_token(loaded: LoadedConfig) -> str:
    """The pair's secret; raises ConfigError (refusing a start or reload) if unreadable."""
    assert loaded.config.ha is not None
    try:
        return read_secret(loaded.config.ha.sync_token_file, loaded.base_dir)
    except (OSError, ValueError, IndexError) as exc:
        why = getattr(exc, "strerror", None) or ("the file is empty" if isinstance(exc, IndexError) else exc)
        raise ConfigError(loaded.source, [Problem("ha.sync_token_file", None,
                                                  f"cannot read the pair's sync token: {why}")]) from None


# --- the client --------------------------------------------------------------------


class PeerClient:
    """Calls the peer's sync API: HTTPS, its certificate pinned, one request a connection."""

    def __init__(self, peer: HaNode, port: int, token: Callable[[], str], pin_file: Path):
        self.peer, self.port, self.token, self.pin_file = peer, port, token, pin_file
        #: The fingerprint the peer presented last (shown on the page, pinned or not).
        self.fingerprint: str | None = None

    def pinned(self) -> str | None:
        try:
            return self.pin_file.read_text().strip() or None
        except OSError:
            return None

    def _pin(self, seen: str) -> None:
        pinned = self.pinned()
        if pinned is None:
            write_atomically(self.pin_file, seen + "\n")
            log.event("ha_peer_pinned", peer=self.peer.name, sha256_fingerprint=seen, pin=str(self.pin_file))
        elif not hmac.compare_digest(pinned, seen):
            raise PeerUnreachable(f"the peer {self.peer.name}'s admin certificate changed: pinned {pinned}, now "
                                  f"{seen}; if it was replaced on purpose, remove {self.pin_file} on this node")

    async def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """(status, the JSON answer) of `method SYNC_PREFIX+path`; raises PeerUnreachable."""
        where = f"{self.peer.name} ({self.peer.address}:{self.port})"
        try:
            async with asyncio.timeout(timeout):
                return await self._call(method, path, body)
        except TimeoutError:
            raise PeerUnreachable(f"the peer {where} did not answer within {timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise PeerUnreachable(f"cannot reach the peer {where}: {getattr(exc, 'strerror', None) or exc}") from None

    async def _call(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pin below is the check
        reader, writer = await asyncio.open_connection(str(self.peer.address), self.port, ssl=context)
        try:
            tls = writer.get_extra_info("ssl_object")
            der = tls.getpeercert(binary_form=True) if tls is not None else None
            if not der:
                raise PeerUnreachable(f"the peer {self.peer.name} presented no certificate")
            self.fingerprint = fingerprint_der(der)
            self._pin(self.fingerprint)  # before the token leaves this node
            payload = b"" if body is None else json.dumps(body).encode()
            head = (f"{method} {SYNC_PREFIX}{path} HTTP/1.1\r\nHost: {self.peer.address}:{self.port}\r\n"
                    f"Authorization: Bearer {self.token()}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + payload)
            await writer.drain()
            answer = await reader.read(MAX_ANSWER + 1)
            while len(answer) <= MAX_ANSWER:
                more = await reader.read(MAX_ANSWER + 1 - len(answer))
                if not more:
                    break
                answer += more
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        if len(answer) > MAX_ANSWER:
            raise PeerUnreachable(f"the peer {self.peer.name}'s answer is larger than {MAX_ANSWER} bytes")
        return parse_answer(answer, self.peer.name)


def parse_answer(answer: bytes, peer: str) -> tuple[int, Any]:
    """(status, JSON body) of a whole HTTP/1.1 answer read to the end of the connection."""
    head, separator, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if not separator or len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise PeerUnreachable(f"the peer {peer} answered something that is not HTTP")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _unchunk(body)
    elif headers.get("content-length", "").isdigit():
        body = body[: int(headers["content-length"])]
    try:
        return int(parts[1]), json.loads(body) if body else None
    except ValueError:
        raise PeerUnreachable(f"the peer {peer} answered {parts[1]} without JSON") from None


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return bytes(out)


# --- watching the peer ---------------------------------------------------------------


@dataclass
class PeerState:
    """What this node last heard from its peer."""

    up: bool = False
    role: str = "UNKNOWN"
    generation: int | None = None
    hash: str | None = None
    version: str | None = None
    last_seen: float | None = None
    error: str | None = None
    #: The whole status it answered (what other modules add with `status_parts`).
    answer: dict[str, Any] = field(default_factory=dict)


#: Called after every status the watcher got (or failed to get).
PeerListener = Callable[["PairSync"], Any]


class PairSync:
    """This node's side of the channel: the sync token, the client, the peer watcher."""

    def __init__(self, node: HaNode, peer: HaNode, port: int, token: str, state_dir: Path,
                 role: Callable[[], str], version: Callable[[], tuple[int, str]], *,
                 check_interval: float, timeout: float):
        self.node, self.peer = node, peer
        #: `ha.peer_check_interval`: how often the watcher asks the peer's status.
        self.check_interval = check_interval
        #: `ha.peer_timeout`: how long a status call (and a decision or persistence push) may take.
        self.timeout = timeout
        self.token = token
        self.role = role
        #: This node's config (generation, hash).
        self.version = version
        self.client = PeerClient(peer, port, lambda: self.token, state_dir / "ha" / PIN_NAME)
        self.state = PeerState()
        self.listeners: list[PeerListener] = []
        #: Each adds its fields to this node's status (the peer finds them in `state.answer`).
        self.status_parts: list[Callable[[], dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def prepare(self, loaded: LoadedConfig) -> Callable[[], None]:
        """A reload's hook: read the new sync token; swapped in when the reload commits."""
        if loaded.config.ha is None:
            return lambda: None
        token = read_sync_token(loaded)

        def commit() -> None:
            self.token = token

        return commit

    def is_token(self, sent: str) -> bool:
        return hmac.compare_digest(sent.encode(), self.token.encode())

    def status(self) -> dict[str, Any]:
        """What GET /sync/status answers, and what the peer compares with its own."""
        generation, digest = self.version()
        parts = {name: value for part in self.status_parts for name, value in part().items()}
        return {**parts, "node": self.node.name, "role": self.role(), "generation": generation, "hash": digest,
                "version": __version__, "time": time.time()}

    @property
    def config_in_sync(self) -> bool:
        generation, digest = self.version()
        return self.state.up and self.state.hash == digest and self.state.generation == generation

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        await cancel(self._task)

    async def _watch(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.check_interval)

    async def poll(self) -> None:
        """Ask the peer's status once; log when it comes and goes."""
        was_up, was_error = self.state.up, self.state.error
        try:
            status, answer = await self.client.call("GET", "/status", timeout=self.timeout)
            if status != 200 or not isinstance(answer, dict):
                raise PeerUnreachable.answered(self.peer.name, status, answer)
        except PeerUnreachable as exc:
            self.state.up, self.state.error = False, str(exc)
            if was_up or was_error != self.state.error:
                log.warning("ha_peer_unreachable", peer=self.peer.name, error=str(exc))
        else:
            generation = answer.get("generation")
            self.state = PeerState(True, str(answer.get("role", "UNKNOWN")),
                                   generation if isinstance(generation, int) else None,
                                   answer.get("hash") if isinstance(answer.get("hash"), str) else None,
                                   str(answer.get("version", "")), time.time(), None, answer)
            if not was_up:
                log.event("ha_peer_up", peer=self.peer.name, role=self.state.role, version=self.state.version,
                          in_sync=self.config_in_sync)
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                result = listener(self)
                if asyncio.iscoroutine(result):
                    await result

    def view(self) -> dict[str, Any]:
        """The peer as GET /api/v1/ha shows it."""
        return {"name": self.peer.name, "address": str(self.peer.address), "priority": self.peer.priority,
                "up": self.state.up, "role": self.state.role, "config_in_sync": self.config_in_sync,
                "generation": self.state.generation, "version": self.state.version,
                "last_seen": self.state.last_seen, "error": self.state.error,
                "cert_fingerprint": self.client.pinned() or self.client.fingerprint,
                "cert_seen": self.client.fingerprint}


# --- the server side -----------------------------------------------------------------

SyncRoutes = Callable[[APIRouter, "Control"], None]
_ROUTES: list[SyncRoutes] = []


def sync_routes(add: SyncRoutes) -> SyncRoutes:
    """Register a function that adds routes to the sync router (see SYNC_MODULES)."""
    _ROUTES.append(add)
    return add


def sync_caller(request: Request) -> str:
    """The peer's name when the request carries the sync token; else SyncRefused.

    A wrong token is audited and logged (never the token); an operator's token or a
    session is refused with 403 and is not audited (it is someone who can log in).
    """
    console = request.app.state.console
    control: Control = console.control
    pair = control.pair_sync
    if pair is None:
        raise SyncRefused(404, "this medlb is not a node of a pair: its config has no ha: section")
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header:
        if request.cookies:
            raise SyncRefused(403, OPERATOR_ON_SYNC)
        raise SyncRefused(401, "the sync API needs the pair's sync token")
    if scheme.lower() == "bearer" and token and pair.is_token(token):
        return pair.peer.name
    if scheme.lower() == "bearer" and any(hmac.compare_digest(secret.encode(), token.encode())
                                          for secret in console.tokens):
        raise SyncRefused(403, OPERATOR_ON_SYNC)
    source = request.client.host if request.client else ""
    log.warning("ha_sync_refused", source=source, path=request.url.path, reason="wrong sync token")
    control.audit("(unknown)", "ha_sync_refused", request.url.path, {"reason": "wrong sync token"}, source)
    raise SyncRefused(401, "the sync token is not valid")


def router(control: "Control") -> APIRouter:
    """Every sync route, each behind `sync_caller`."""
    for module in SYNC_MODULES:
        importlib.import_module(module)
    routes = APIRouter(prefix=SYNC_PREFIX, dependencies=[Depends(sync_caller)])
    for add in _ROUTES:
        add(routes, control)
    return routes


@sync_routes
def _status_routes(routes: APIRouter, control: "Control") -> None:
    @routes.get("/status")
    async def status() -> dict[str, Any]:
        """This node as its peer sees it: name, keepalived's role, config generation and
        hash, medlb version, and its clock."""
        pair = control.pair_sync
        assert pair is not None  # sync_caller refused the request otherwise
        return pair.status()
