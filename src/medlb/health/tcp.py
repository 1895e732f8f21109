"""`tcp`: the server accepts a TCP connection. Says nothing about the application."""

from __future__ import annotations

import asyncio

from medlb.config.models import TcpCheck
from medlb.health.base import CheckTarget, Outcome


async def check(target: CheckTarget, config: TcpCheck) -> Outcome:
    _, writer = await asyncio.open_connection(target.host, target.port)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return Outcome(True, "TCP connect succeeded")
