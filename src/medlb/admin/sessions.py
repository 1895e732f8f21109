"""Web page logins: users from the config, sessions in memory, lock-out.

Sessions live in the control process's memory: a restart of medlb logs everyone out
(and a reload does not). A session ends after `admin.session_timeout` without a
request, or at logout. Each session has its own CSRF token, which every change made
with the session cookie must carry in the X-CSRF-Token header.

Lock-out: `admin.lockout.attempts` failed logins within `window` for one user name, or
from one source address, lock that name (or address) out for `duration`; while
locked, even the right password is refused. Passwords never reach a log or the audit.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from dataclasses import dataclass
from typing import Callable

from medlb.config.models import AdminConfig
from medlb.passwords import dummy_hash, verify_password

COOKIE = "medlb_session"
#: Failure counters kept at most (user names and source addresses together).
MAX_TRACKED = 10000


@dataclass
class Session:
    id: str
    user: str
    role: str
    csrf: str
    created: float
    last_seen: float


class LoginRefused(Exception):
    def __init__(self, status: int, message: str, locked: bool = False):
        super().__init__(message)
        self.status, self.message, self.locked = status, message, locked


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: Monotonic seconds; tests pass their own to move time without waiting.
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self._failures: dict[str, collections.deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def _locked(self, key: str, now: float) -> bool:
        until = self._locked_until.get(key)
        if until is None:
            return False
        if now >= until:
            del self._locked_until[key]
            self._failures.pop(key, None)
            return False
        return True

    def _fail(self, key: str, now: float, config: AdminConfig) -> bool:
        """Count a failure; True if it locks the key out."""
        if key not in self._failures and len(self._failures) >= MAX_TRACKED:
            # Bounded memory against a flood of made-up names: forget the oldest.
            self._failures.pop(next(iter(self._failures)))
        window = self._failures.setdefault(key, collections.deque())
        window.append(now)
        while window and window[0] < now - config.lockout.window:
            window.popleft()
        if len(window) >= config.lockout.attempts:
            self._locked_until[key] = now + config.lockout.duration
            return True
        return False

    async def login(self, name: str, password: str, source: str, config: AdminConfig) -> Session:
        now = self.clock()
        keys = [f"user:{name}", f"source:{source}"]
        if any(self._locked(key, now) for key in keys):
            raise LoginRefused(429, "too many failed logins: locked out for now; try again later", locked=True)
        user = next((u for u in config.users if u.name == name), None)
        encoded = user.password_hash if user is not None else dummy_hash()
        # scrypt takes tens of milliseconds of CPU: off the event loop, so traffic flows.
        ok = await asyncio.to_thread(verify_password, password, encoded)
        if user is None or not ok:
            locked = [self._fail(key, self.clock(), config) for key in keys]
            if any(locked):
                raise LoginRefused(429, "too many failed logins: locked out for now; try again later", locked=True)
            raise LoginRefused(401, "wrong user name or password")
        for key in keys:
            self._failures.pop(key, None)
        now = self.clock()
        idle = now - config.session_timeout
        for stale in [k for k, v in self.sessions.items() if v.last_seen < idle]:
            del self.sessions[stale]
        session = Session(secrets.token_urlsafe(32), user.name, user.role, secrets.token_urlsafe(32), now, now)
        self.sessions[session.id] = session
        return session

    def lookup(self, session_id: str, config: AdminConfig, touch: bool = True) -> Session | None:
        """The live session, or None. `touch=False` for the page's own background
        refreshes, which must not keep an unattended session alive."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        now = self.clock()
        user = next((u for u in config.users if u.name == session.user), None)
        if now - session.last_seen > config.session_timeout or user is None:
            # Idle too long, or the user was removed from the config by a reload.
            del self.sessions[session_id]
            return None
        session.role = user.role  # a reload that changes a role applies at once
        if touch:
            session.last_seen = now
        return session

    def logout(self, session_id: str) -> Session | None:
        return self.sessions.pop(session_id, None)
