"""What the admin side keeps for the people and tools that use it.

Bearer tokens, the web page's sessions, its live streams and the charts' history live
here, not in `App`: the running medlb only answers the narrow `Control` interface
(medlb/control.py), and tells this side what happened through `subscribe`. Tokens
take part in every reload (`on_config`): a token file that cannot be read refuses the
reload, so the running tokens are never swapped for a half-read set.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from medlb.admin.auth import Principal, build_tokens
from medlb.admin.history import History
from medlb.admin.sessions import Sessions
from medlb.config import ConfigError, LoadedConfig, Problem
from medlb.config.models import AdminConfig
from medlb.control import Control
from medlb.tls import CertInfo

#: Messages a live stream may hold before it loses new ones (a stuck reader loses
#: messages, not memory).
STREAM_BACKLOG = 1000


class Console:
    def __init__(self, control: Control):
        """Raises OSError if a token file of the running config cannot be read."""
        self.control = control
        self.tokens: dict[str, Principal] = build_tokens(control.loaded)
        self.sessions = Sessions()
        #: One queue per open live stream (the page's server-sent events).
        self.streams: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.history: History | None = None
        #: The certificate the admin listener serves (for its expiry metric); None over HTTP.
        self.certificate: CertInfo | None = None
        control.subscribe(self.publish)
        control.on_config(self.prepare)

    @property
    def admin(self) -> AdminConfig | None:
        return self.control.loaded.config.admin

    def prepare(self, loaded: LoadedConfig) -> Callable[[], None]:
        """Read a new config's tokens; the reload swaps them in when it commits."""
        try:
            tokens = build_tokens(loaded)
        except OSError as exc:
            raise ConfigError(loaded.source, [Problem("admin", None,
                                                      f"cannot read an admin token_file: {exc.strerror}")]) from None

        def commit() -> None:
            self.tokens = tokens

        return commit

    def publish(self, message: dict[str, Any]) -> None:
        """Tell every open live stream (the pages people have open) what happened."""
        for queue in list(self.streams):
            if queue.qsize() < STREAM_BACKLOG:
                queue.put_nowait(message)

    def start_history(self) -> None:
        self.history = History(self.control)
        self.history.start()

    async def stop(self) -> None:
        """End the pages' live streams (so the admin server can stop) and the sampling."""
        for queue in list(self.streams):
            queue.put_nowait(None)
        if self.history is not None:
            await self.history.stop()
