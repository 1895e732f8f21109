"""Background tasks that nothing awaits, kept alive until they finish.

The event loop keeps only a weak reference to a task, so a task nothing else refers to
may be garbage-collected mid-flight (the asyncio documentation's warning; ruff's RUF006
finds such calls). `spawn` holds each task in a set until it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

_running: set[asyncio.Task[Any]] = set()


def spawn(coroutine: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
    """Start `coroutine` on the running loop; the task is referenced until it ends."""
    task = asyncio.get_running_loop().create_task(coroutine, name=name)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a long-running task (None: there is none) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
