"""Web page logins: users from the config, sessions in memory, lock-out.

Sessions live in the control process's memory: a restart of medlb logs everyone out
(and a reload does not). A session ends after `admin.session_timeout` without a
request, or at logout. Each session has its own CSRF token, which every change made
with the session cookie must carry in the X-CSRF-Token header.

Lock-out: `admin.lockout.attempts` failed logins within `window` for one user name, or
from one source address, lock that name (or address) out for `duration`; while
locked, even the right password is refused. Passwords never reach a log or the audit.

Concurrent logins cannot outrun the lock-out. Every decision below is taken on the
event loop between awaits, and a login counts against its name and address from the
moment its password check starts, as if it had failed, until it succeeds: so checks
running together never exceed a name's or address's remaining attempts, a login
refused unchecked because its own address or name is busy counts as failed, and a
right password whose check ends after the name got locked is refused. The checks
(scrypt, about 0.15 s of a core each) run in threads, at most
`admin.password_checks.at_once` together and `per_source` per address; a login beyond
that is refused at once, unchecked, so guessing costs the control process, which also
runs the health checks, a bounded share of its CPU.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from dataclasses import dataclass
from typing import Callable, NoReturn

from medlb.config.models import AdminConfig
from medlb.passwords import dummy_hash, verify_password

COOKIE = "medlb_session"
#: Failure counters kept at most (user names and source addresses together).
MAX_TRACKED = 10000

LOCKED = "too many failed logins: locked out for now; try again later"
SELF_BUSY = "other logins for this name or from this address are being checked; this one counts as failed"
ALL_BUSY = "too many logins are being checked at once; try again in a moment"


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


def _check(password: str, encoded: str | None) -> bool:
    """In a thread: a name that is no user is checked against a dummy hash, so that it
    costs as long as a wrong password (and the dummy is made off the event loop)."""
    return verify_password(password, encoded if encoded is not None else dummy_hash())


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: Monotonic seconds; tests pass their own to move time without waiting.
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self._failures: dict[str, collections.deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        #: Password checks running now, per name or address key, and in all.
        self._checking: collections.Counter[str] = collections.Counter()
        self._running = 0
        #: For /metrics: password checks run, and logins by result (ok, wrong, locked, busy).
        self.password_checks = 0
        self.logins: collections.Counter[str] = collections.Counter()

    def _locked(self, key: str, now: float) -> bool:
        until = self._locked_until.get(key)
        if until is None:
            return False
        if now >= until:
            del self._locked_until[key]
            self._failures.pop(key, None)
            return False
        return True

    def _attempts(self, key: str, now: float, config: AdminConfig) -> int:
        """Failures within the window, and checks running now (each may yet fail)."""
        window = self._failures.get(key)
        while window and window[0] < now - config.lockout.window:
            window.popleft()
        return len(window or ()) + self._checking[key]

    def _fail(self, key: str, now: float, config: AdminConfig) -> bool:
        """Count a failure; True if it locks the key out."""
        if key not in self._failures and len(self._failures) >= MAX_TRACKED:
            # Bounded memory against a flood of made-up names: forget the oldest.
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(key, collections.deque()).append(now)
        if self._attempts(key, now, config) >= config.lockout.attempts:
            self._locked_until[key] = now + config.lockout.duration
            return True
        return False

    def _refuse(self, result: str, status: int, message: str, locked: bool = False) -> NoReturn:
        self.logins[result] += 1
        raise LoginRefused(status, message, locked)

    def _failed(self, keys: tuple[str, ...], result: str, config: AdminConfig) -> NoReturn:
        now = self.clock()
        if any([self._fail(key, now, config) for key in keys]):  # a list: count every key
            self._refuse(result, 429, LOCKED, locked=True)
        if result == "busy":
            self._refuse(result, 429, SELF_BUSY)
        self._refuse(result, 401, "wrong user name or password")

    async def login(self, name: str, password: str, source: str, config: AdminConfig) -> Session:
        # A user name has at most 63 characters, so a longer name is no user's: the
        # failure table keeps 64 of them, not a 64 KiB body's worth each.
        keys = (f"user:{name[:64]}", f"source:{source}")
        now = self.clock()
        if any(self._locked(key, now) for key in keys):
            self._refuse("locked", 429, LOCKED, locked=True)
        limits = config.password_checks
        if self._checking[keys[1]] >= limits.per_source or any(
                self._attempts(key, now, config) >= config.lockout.attempts for key in keys):
            self._failed(keys, "busy", config)
        if self._running >= limits.at_once:
            # Busy with others' logins: nothing this caller did, so nothing counts.
            self._refuse("busy", 429, ALL_BUSY)
        user = next((u for u in config.users if u.name == name), None)
        self._checking.update(keys)
        self._running += 1
        self.password_checks += 1
        try:
            # scrypt takes tens of milliseconds of CPU: off the event loop, so traffic flows.
            ok = await asyncio.to_thread(_check, password, user.password_hash if user is not None else None)
        finally:
            self._checking.subtract(keys)
            for key in keys:
                if self._checking[key] <= 0:
                    del self._checking[key]
            self._running -= 1
        if user is None or not ok:
            self._failed(keys, "wrong", config)
        now = self.clock()
        if any(self._locked(key, now) for key in keys):
            # Locked by guesses that failed while this password was being checked.
            self._refuse("locked", 429, LOCKED, locked=True)
        for key in keys:
            self._failures.pop(key, None)
        self.logins["ok"] += 1
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
