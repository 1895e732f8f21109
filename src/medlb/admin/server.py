"""Runs the admin API with uvicorn on medlb's own event loop.

medlb binds the socket itself (so a port in use is a clear start error rather than
uvicorn's exit) and keeps its own signal handling; uvicorn only serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Iterator

import uvicorn

from medlb.admin.api import create_api
from medlb.config.units import HostPort

if TYPE_CHECKING:
    from medlb.app import App


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: medlb's own handle SIGTERM and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AdminServer:
    def __init__(self, app: "App"):
        self.app = app
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
        config = uvicorn.Config(create_api(self.app), log_config=None, access_log=False, lifespan="off",
                                server_header=False, proxy_headers=False)
        self._server = server = _Server(config)
        self._socket = sock
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started and not self._task.done():
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._task is not None:
            await self._task
