"""Runs the admin API with uvicorn on medlb's own event loop.

It owns the admin side's state (`Console`: tokens, sessions, live streams, history)
and sees the running medlb only through medlb/control.py's `Control`.

medlb binds the socket itself (so a port in use is a clear start error rather than
uvicorn's exit) and keeps its own signal handling; uvicorn only serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Iterator

from pathlib import Path

import uvicorn

from medlb import logs
from medlb.admin.api import create_api
from medlb.admin.console import Console
from medlb.admin.tls import fingerprint, self_signed
from medlb.config.units import HostPort
from medlb.tls import CertInfo, certificate_not_after

if TYPE_CHECKING:
    from medlb.control import Control

log = logs.get_logger("medlb")


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: medlb's own handle SIGTERM and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AdminServer:
    def __init__(self, control: "Control"):
        """Raises OSError if a token file of the running config cannot be read."""
        self.control = control
        self.console = Console(control)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self, listen: HostPort) -> None:
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((listen.host, listen.port or 9443))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.setblocking(False)
        logging.getLogger("uvicorn").setLevel(logging.WARNING)
        try:
            tls = self._tls_files(listen)
        except (OSError, ValueError) as exc:
            sock.close()
            raise OSError(getattr(exc, "errno", None) or 0, f"its TLS certificate: {exc}") from None
        config = uvicorn.Config(create_api(self.control, self.console), log_config=None, access_log=False, lifespan="off",
                                server_header=False, proxy_headers=False, timeout_graceful_shutdown=5,
                                **({"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}))
        self._server = server = _Server(config)
        self._socket = sock
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started and not self._task.done():
            await asyncio.sleep(0.01)
        self.console.start_history()

    def _tls_files(self, listen: HostPort) -> tuple[Path, Path] | None:
        """The certificate and key to serve, or None for plain HTTP (`admin.tls: off`)."""
        admin = self.control.loaded.config.admin
        assert admin is not None
        setting = admin.tls
        if setting == "off":
            log.event("admin_tls", tls="off", url=f"http://{listen}/")
            return None
        if setting == "auto":
            cert, key, made = self_signed(self.control.loaded.state_dir / "admin-tls", listen.host)
            source = "generated" if made else "self-signed"
        else:
            base = self.control.loaded.base_dir
            cert, key = (Path(p) if Path(p).is_absolute() else base / p for p in (setting.cert, setting.key))
            source = "configured"
        log.event("admin_tls", tls=source, cert=str(cert), sha256_fingerprint=fingerprint(cert.read_bytes()),
                  url=f"https://{listen}/")
        self.console.certificate = CertInfo(str(cert), [], certificate_not_after(str(cert)))
        return cert, key

    async def stop(self) -> None:
        await self.console.stop()
        if self._server is None:
            return
        self._server.should_exit = True
        if self._task is not None:
            await self._task
