"""Password hashes, sessions and lock-out, and the history sampler, without a server."""

from __future__ import annotations

import asyncio
import time

import pytest

from medlb.admin.sessions import LoginRefused, Sessions
from medlb.config.models import AdminConfig
from medlb.passwords import hash_password, parse_hash, verify_password


def test_scrypt_hashes_verify_and_differ_per_salt():
    first, second = hash_password("correct horse", n=2**12), hash_password("correct horse", n=2**12)
    assert first != second and first.startswith("scrypt$4096$8$1$")
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct hors", first)


@pytest.mark.parametrize("bad", ["", "scrypt$", "scrypt$3$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
                                 "scrypt$1048576$64$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "md5$abc",
                                 "scrypt$4096$8$1$!!!$AAAA"])
def test_malformed_or_too_costly_hashes_are_refused(bad):
    assert parse_hash(bad) is None
    assert not verify_password("anything", bad)


def admin(**extra) -> AdminConfig:
    return AdminConfig.model_validate({"token": "x" * 16, "users": [
        {"name": "olga", "password_hash": hash_password("pw-olga-1", n=2**12), "role": "operator"},
        {"name": "vera", "password_hash": hash_password("pw-vera-1", n=2**12), "role": "viewer"}], **extra})


def test_lockout_counts_per_user_and_per_source_and_expires():
    config = admin(lockout={"attempts": 2, "window": "1m", "duration": "1s"})
    sessions = Sessions()

    async def attempt(name: str, password: str, source: str) -> int:
        try:
            await sessions.login(name, password, source, config)
            return 200
        except LoginRefused as exc:
            return exc.status

    async def scenario() -> None:
        assert await attempt("olga", "nope", "10.0.0.1") == 401
        assert await attempt("olga", "nope", "10.0.0.2") == 429  # the user name is locked
        assert await attempt("olga", "pw-olga-1", "10.0.0.3") == 429
        assert await attempt("vera", "pw-vera-1", "10.0.0.4") == 200  # another name, another source
        assert await attempt("vera", "nope", "10.0.0.2") == 429  # the second failure from 10.0.0.2
        assert await attempt("vera", "pw-vera-1", "10.0.0.2") == 429  # that source is locked
        assert await attempt("vera", "pw-vera-1", "10.0.0.5") == 200  # vera herself is not
        await asyncio.sleep(1.2)  # past the lock-out duration
        assert await attempt("olga", "pw-olga-1", "10.0.0.3") == 200

    asyncio.run(scenario())


def test_sessions_end_when_idle_or_when_the_user_goes_and_follow_role_changes():
    config = admin(session_timeout="1s")
    sessions = Sessions()
    session = asyncio.run(sessions.login("olga", "pw-olga-1", "127.0.0.1", config))
    assert sessions.lookup(session.id, config) is session
    demoted = admin(session_timeout="1s", users=[{"name": "olga", "role": "viewer",
                                                   "password_hash": hash_password("x" * 8, n=2**12)}])
    assert sessions.lookup(session.id, demoted).role == "viewer"  # type: ignore[union-attr]
    assert sessions.lookup(session.id, admin(session_timeout="1s", users=[])) is None  # removed user
    again = asyncio.run(sessions.login("olga", "pw-olga-1", "127.0.0.1", config))
    time.sleep(1.2)
    assert sessions.lookup(again.id, config) is None
    assert sessions.lookup("no-such-session", config) is None


def test_history_keeps_a_bounded_window_and_computes_rates_between_samples(monkeypatch):
    from types import SimpleNamespace

    from medlb.admin import history as history_module
    from medlb.admin.history import History
    from runtime_helpers import make_runtime, server, svc

    runtime = make_runtime({"a": 1, "b": 1})
    sampler = History(SimpleNamespace(runtime=runtime), interval=5, points=3)  # type: ignore[arg-type]
    clock = iter([1000.0, 1005.0, 1010.0, 1015.0])
    monkeypatch.setattr(history_module.time, "time", lambda: next(clock))
    sampler.sample()
    svc(runtime).total += 10
    server(runtime, "a").bytes_to_client += 5000
    svc(runtime).active = 2
    sampler.sample()
    svc(runtime).total = 0  # a reload resets counters: the rate is zero, not negative
    sampler.sample()
    sampler.sample()
    points = sampler.of("svc")
    assert len(points) == 3  # the oldest sample fell out
    first, second, third = points
    assert (first["conn_rate"], first["bytes_rate"], first["active"]) == (2.0, 1000.0, 2)
    assert second["conn_rate"] == 0.0 and third["conn_rate"] == 0.0
    assert first["servers"] == 2 and first["up"] == 2
