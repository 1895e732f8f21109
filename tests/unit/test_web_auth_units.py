"""Password hashes, sessions and lock-out, and the history sampler, without a server.

Time is a clock the test drives (Sessions and History take one), so nothing here
sleeps or depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio

import pytest

from medlb.admin.sessions import LoginRefused, Sessions
from medlb.config.models import AdminConfig
from medlb.passwords import hash_password, parse_hash, verify_password


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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


async def attempt(sessions: Sessions, config: AdminConfig, name: str, password: str, source: str) -> int:
    """The HTTP status a login would get: 200, or the refusal's."""
    try:
        await sessions.login(name, password, source, config)
        return 200
    except LoginRefused as exc:
        return exc.status


def test_a_users_lock_is_per_address_says_how_long_and_expires():
    config = admin(lockout={"attempts": 2, "window": "1m", "duration": "10s"})
    clock = Clock()
    sessions = Sessions(clock)

    async def scenario() -> None:
        def login(name: str, password: str, source: str):
            return attempt(sessions, config, name, password, source)

        assert await login("olga", "nope", "10.0.0.1") == 401
        assert await login("olga", "nope", "10.0.0.1") == 429  # olga from 10.0.0.1 is locked
        with pytest.raises(LoginRefused, match=r"for this user from this address: locked out for 10 s"):
            await sessions.login("olga", "pw-olga-1", "10.0.0.1", config)
        assert await login("olga", "pw-olga-1", "10.0.0.3") == 200  # the real olga elsewhere is not
        assert await login("vera", "pw-vera-1", "10.0.0.1") == 200  # nor another user from that address
        clock.advance(9.9)
        assert await login("olga", "pw-olga-1", "10.0.0.1") == 429  # still within the duration
        clock.advance(0.2)
        assert await login("olga", "pw-olga-1", "10.0.0.1") == 200

    asyncio.run(scenario())


def test_names_that_are_no_user_count_against_the_address_alone_with_their_own_threshold():
    config = admin(lockout={"attempts": 2, "source_attempts": 3, "window": "1m", "duration": "15m"})
    sessions = Sessions(Clock())

    async def scenario() -> None:
        assert [await attempt(sessions, config, "olgaa", "x", "10.0.0.7") for _ in range(2)] == [401, 401]
        assert await attempt(sessions, config, "olga", "pw-olga-1", "10.0.0.8") == 200  # no user lock from it
        assert await attempt(sessions, config, "root", "x", "10.0.0.7") == 429  # the third locks the address
        with pytest.raises(LoginRefused, match=r"from this address: locked out for 15 min"):
            await sessions.login("olga", "pw-olga-1", "10.0.0.7", config)
        assert await attempt(sessions, config, "olga", "pw-olga-1", "10.0.0.8") == 200

    asyncio.run(scenario())


def test_unlock_lifts_a_users_or_an_addresss_lock_and_says_when_there_was_none():
    config = admin(lockout={"attempts": 1, "source_attempts": 2, "window": "1m", "duration": "15m"})
    sessions = Sessions(Clock())

    async def scenario() -> None:
        assert await attempt(sessions, config, "olga", "nope", "10.0.0.1") == 429
        assert sessions.unlock(user="vera") == []
        assert sessions.unlock(user="olga") == ["olga from 10.0.0.1"]
        assert await attempt(sessions, config, "olga", "pw-olga-1", "10.0.0.1") == 200
        assert await attempt(sessions, config, "nobody", "x", "10.0.0.2") == 401
        assert await attempt(sessions, config, "nobody", "x", "10.0.0.2") == 429
        assert sessions.unlock(address="10.0.0.2") == ["address 10.0.0.2"]
        assert await attempt(sessions, config, "vera", "pw-vera-1", "10.0.0.2") == 200

    asyncio.run(scenario())


def test_failures_older_than_the_window_no_longer_count():
    config = admin(lockout={"attempts": 2, "window": "1m", "duration": "10m"})
    clock = Clock()
    sessions = Sessions(clock)

    async def scenario() -> None:
        assert await attempt(sessions, config, "olga", "nope", "10.0.0.1") == 401
        clock.advance(61)
        assert await attempt(sessions, config, "olga", "nope", "10.0.0.1") == 401  # the first fell out
        assert await attempt(sessions, config, "olga", "nope", "10.0.0.1") == 429

    asyncio.run(scenario())


def test_sessions_end_when_idle_or_when_the_user_goes_and_follow_role_changes():
    config = admin(session_timeout="10s")
    clock = Clock()
    sessions = Sessions(clock)
    session = asyncio.run(sessions.login("olga", "pw-olga-1", "127.0.0.1", config))
    assert sessions.lookup(session.id, config) is session
    demoted = admin(session_timeout="10s", users=[{"name": "olga", "role": "viewer",
                                                    "password_hash": hash_password("x" * 8, n=2**12)}])
    assert sessions.lookup(session.id, demoted).role == "viewer"  # type: ignore[union-attr]
    assert sessions.lookup(session.id, admin(session_timeout="10s", users=[])) is None  # removed user
    again = asyncio.run(sessions.login("olga", "pw-olga-1", "127.0.0.1", config))
    clock.advance(9)
    assert sessions.lookup(again.id, config) is again  # a request: idle time starts again
    clock.advance(9)
    assert sessions.lookup(again.id, config, touch=False) is again  # a background refresh...
    clock.advance(2)
    assert sessions.lookup(again.id, config) is None  # ...did not keep it alive: 11 s idle
    assert sessions.lookup("no-such-session", config) is None


def test_a_burst_from_one_source_costs_one_password_check_and_locks_even_the_right_password():
    """Every guess counts, checked or not: a burst cannot outrun the lock-out, and while
    one password from an address is being checked, the others are refused at once."""
    config = admin(lockout={"attempts": 5, "window": "1m", "duration": "10m"})
    sessions = Sessions(Clock())

    async def scenario() -> list[int]:
        guesses = [attempt(sessions, config, "olga", f"guess-{i}", "10.0.0.9") for i in range(39)]
        return await asyncio.gather(*guesses, attempt(sessions, config, "olga", "pw-olga-1", "10.0.0.9"))

    codes = asyncio.run(scenario())
    assert codes[-1] == 429 and 200 not in codes
    assert sessions.password_checks == 1
    assert sessions.logins["busy"] + sessions.logins["locked"] == 39
    # The lock holds afterwards too, from that address; olga elsewhere is not locked out.
    assert asyncio.run(attempt(sessions, config, "olga", "pw-olga-1", "10.0.0.9")) == 429
    assert asyncio.run(attempt(sessions, config, "olga", "pw-olga-1", "10.0.0.10")) == 200


def test_password_checks_at_once_are_bounded_over_all_sources():
    config = admin(password_checks={"at_once": 2, "per_source": 1})
    sessions = Sessions(Clock())

    async def scenario() -> list[int]:
        return await asyncio.gather(*(attempt(sessions, config, f"nobody{i}", "x", f"10.0.1.{i}")
                                      for i in range(6)))

    codes = asyncio.run(scenario())
    assert sessions.password_checks == 2
    assert sorted(codes) == [401, 401, 429, 429, 429, 429]
    # Nothing stays reserved: the next login is checked (and succeeds).
    assert asyncio.run(attempt(sessions, config, "olga", "pw-olga-1", "10.0.1.0")) == 200


def test_a_right_password_that_finishes_while_its_name_got_locked_is_refused():
    config = admin(lockout={"attempts": 2, "window": "1m", "duration": "10m"},
                   password_checks={"at_once": 8, "per_source": 8})
    sessions = Sessions(Clock())

    async def scenario() -> list[int]:
        return await asyncio.gather(attempt(sessions, config, "olga", "pw-olga-1", "10.0.2.1"),
                                    attempt(sessions, config, "olga", "wrong", "10.0.2.1"),
                                    attempt(sessions, config, "olga", "wrong", "10.0.2.1"))

    codes = asyncio.run(scenario())
    # The right password and one guess fill the budget of two; the third guess is refused
    # unchecked and locks the name, so the right password, checked meanwhile, is refused.
    assert codes == [429, 429, 429]
    assert sessions.password_checks == 2
    assert not sessions.sessions


def test_history_keeps_a_bounded_window_and_computes_rates_between_samples():
    from types import SimpleNamespace

    from medlb.admin.history import History
    from runtime_helpers import make_runtime, server, svc

    runtime = make_runtime({"a": 1, "b": 1})
    clock = Clock(1000.0)
    sampler = History(SimpleNamespace(services=runtime.services), interval=5, points=3, clock=clock)  # type: ignore[arg-type]
    sampler.sample()
    clock.advance(5)
    svc(runtime).total += 10
    server(runtime, "a").bytes_to_client += 5000
    svc(runtime).active = 2
    sampler.sample()
    clock.advance(5)
    svc(runtime).total = 0  # a reload resets counters: the rate is zero, not negative
    sampler.sample()
    clock.advance(5)
    sampler.sample()
    points = sampler.of("svc")
    assert len(points) == 3  # the oldest sample fell out
    first, second, third = points
    assert (first["at"], first["conn_rate"], first["bytes_rate"], first["active"]) == (1005.0, 2.0, 1000.0, 2)
    assert second["conn_rate"] == 0.0 and third["conn_rate"] == 0.0
    assert first["servers"] == 2 and first["up"] == 2


def test_failures_for_made_up_names_are_kept_in_bounded_memory():
    """A body may carry a 64 KiB name; the failure table must not keep it whole."""
    config = admin(lockout={"attempts": 1000, "window": "1m", "duration": "10m"})
    sessions = Sessions(Clock())

    async def scenario() -> None:
        for i in range(4):
            assert await attempt(sessions, config, f"{i:02d}" + "n" * 65536, "x", f"10.0.3.{i}") == 401

    asyncio.run(scenario())
    assert sum(len(str(key)) for key in sessions._failures) < 4 * 100
