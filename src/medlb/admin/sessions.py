"""Web page logins: users from the config, sessions in memory, lock-out.

Sessions live in the control process's memory: a restart of medlb logs everyone out
(and a reload does not). A session ends after `admin.session_timeout` without a
request, or at logout. Each session has its own CSRF token, which every change made
with the session cookie must carry in the X-CSRF-Token header.

Lock-out: `admin.lockout.attempts` failed logins within `window` for one user from one
source address lock that user out from that address for `duration`, and
`source_attempts` failed logins from one address, whatever the name, lock the address;
while locked, even the right password is refused. A user's lock is per address, so
guesses from one address never lock the real operator out at another; a name that is
no user counts against its address only (a flood of made-up names cannot push a real
user's failures out of the bounded table). An admin lifts a lock with `unlock`.
Passwords never reach a log or the audit.

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
import math
import secrets
import time
from dataclasses import dataclass
from typing import Callable, NoReturn

from medlb.config.models import AdminConfig
from medlb.passwords import dummy_hash, verify_password

COOKIE = "medlb_session"
#: Failure counters kept at most (users per address, and addresses, together).
MAX_TRACKED = 10000

#: A failure counter's key: ("user", name, address) or ("source", address).
Key = tuple[str, ...]
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
        self._failures: dict[Key, collections.deque[float]] = {}
        self._locked_until: dict[Key, float] = {}
        #: Password checks running now, per key, and in all.
        self._checking: collections.Counter[Key] = collections.Counter()
        self._running = 0
        #: For /metrics: password checks run, and logins by result (ok, wrong, locked, busy).
        self.password_checks = 0
        self.logins: collections.Counter[str] = collections.Counter()

    def _locked(self, key: Key, now: float) -> float:
        """Seconds the key stays locked out; 0 if it is not."""
        until = self._locked_until.get(key)
        if until is None:
            return 0.0
        if now >= until:
            del self._locked_until[key]
            self._failures.pop(key, None)
            return 0.0
        return until - now

    def _attempts(self, key: Key, now: float, config: AdminConfig) -> int:
        """Failures within the window, and checks running now (each may yet fail)."""
        window = self._failures.get(key)
        while window and window[0] < now - config.lockout.window:
            window.popleft()
        return len(window or ()) + self._checking[key]

    @staticmethod
    def _limit(key: Key, config: AdminConfig) -> int:
        return config.lockout.attempts if key[0] == "user" else config.lockout.source_attempts

    def _fail(self, key: Key, now: float, config: AdminConfig) -> bool:
        """Count a failure; True if it locks the key out."""
        if key not in self._failures and len(self._failures) >= MAX_TRACKED:
            # Bounded memory against a flood of addresses: forget the oldest.
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(key, collections.deque()).append(now)
        if self._attempts(key, now, config) >= self._limit(key, config):
            self._locked_until[key] = now + config.lockout.duration
            return True
        return False

    def _refuse(self, result: str, status: int, message: str, locked: bool = False) -> NoReturn:
        self.logins[result] += 1
        raise LoginRefused(status, message, locked)

    def _refuse_locked(self, result: str, keys: tuple[Key, ...], now: float) -> NoReturn:
        """Refused while locked, saying what is locked and for how long."""
        locked = [(key, left) for key in keys if (left := self._locked(key, now))]
        key, left = max(locked, key=lambda pair: pair[1])
        what = "for this user from this address" if key[0] == "user" else "from this address"
        self._refuse(result, 429, f"too many failed logins {what}: locked out for {_duration(left)} "
                                  "(an admin can lift it: medlb ctl unlock)", locked=True)

    def _failed(self, keys: tuple[Key, ...], result: str, config: AdminConfig) -> NoReturn:
        now = self.clock()
        if any([self._fail(key, now, config) for key in keys]):  # a list: count every key
            self._refuse_locked(result, keys, now)
        if result == "busy":
            self._refuse(result, 429, SELF_BUSY)
        self._refuse(result, 401, "wrong user name or password")

    async def login(self, name: str, password: str, source: str, config: AdminConfig) -> Session:
        user = next((u for u in config.users if u.name == name), None)
        # A name that is no user counts against its address alone.
        keys: tuple[Key, ...] = ((("user", name, source),) if user is not None else ()) + (("source", source),)
        now = self.clock()
        if any(self._locked(key, now) for key in keys):
            self._refuse_locked("locked", keys, now)
        limits = config.password_checks
        if self._checking[keys[-1]] >= limits.per_source or any(
                self._attempts(key, now, config) >= self._limit(key, config) for key in keys):
            self._failed(keys, "busy", config)
        if self._running >= limits.at_once:
            # Busy with others' logins: nothing this caller did, so nothing counts.
            self._refuse("busy", 429, ALL_BUSY)
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
            self._refuse_locked("locked", keys, now)
        self._failures.pop(keys[0], None)  # the user's own failures from here; not the address's
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

    def unlock(self, user: str | None = None, address: str | None = None) -> list[str]:
        """Lift the lock-outs in force of a user (from every address, or from `address`)
        or of an address (and of every user from it), with their failures; what was
        lifted, in words. Nothing in force: nothing is touched."""
        now = self.clock()

        def matches(key: Key) -> bool:
            if user is not None:
                return key[0] == "user" and key[1] == user and (address is None or key[2] == address)
            return key[-1] == address

        lifted = [key for key in list(self._locked_until) if matches(key) and self._locked(key, now)]
        for key in lifted:
            del self._locked_until[key]
            self._failures.pop(key, None)
        return [f"{key[1]} from {key[2]}" if key[0] == "user" else f"address {key[1]}" for key in lifted]


def _duration(seconds: float) -> str:
    """'14 min', '40 s': how long a lock-out lasts, rounded up."""
    if seconds > 90:
        return f"{math.ceil(seconds / 60)} min"
    return f"{math.ceil(seconds)} s"
