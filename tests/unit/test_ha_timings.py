"""The pair's sync timings come from `ha:` (peer_check_interval, peer_timeout,
config_sync_timeout): App._start_pair hands them to the sync objects, and each call to
the peer and the watcher's pause use them. No timing is measured: the values are
recorded where they are used."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from config_helpers import ha_config

from medlb.config.models import HaNode
from medlb.ha import channel
from medlb.ha.channel import PairSync
from medlb.ha.configsync import Bundle, ConfigSync
from medlb.ha.decisions import DecisionSync
from medlb.ha.generation import ConfigGeneration
from medlb.ha.sticky import StickySync

ME = HaNode(name="lb-a", address=ipaddress.IPv4Address("198.18.0.4"), priority=150)
PEER = HaNode(name="lb-b", address=ipaddress.IPv4Address("198.18.0.5"), priority=100)


class RecordingClient:
    """Answers every call to the peer with `answer`, and records its timeout."""

    def __init__(self, answer: Any):
        self.answer = answer
        self.calls: list[tuple[str, float]] = []

    async def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        self.calls.append((path, timeout))
        return 200, self.answer


def pair_sync(tmp_path: Path, answer: Any, role: str = "MASTER", **timings: float) -> PairSync:
    sync = PairSync(ME, PEER, 9443, "sync-secret", tmp_path, lambda: role, lambda: (1, "abc"),
                    **{"check_interval": 1.0, "timeout": 5.0, **timings})
    sync.client = RecordingClient(answer)  # type: ignore[assignment]
    return sync


class Stop(Exception):
    pass


def test_the_watcher_asks_every_peer_check_interval_and_waits_peer_timeout(tmp_path, monkeypatch):
    sync = pair_sync(tmp_path, {"node": "lb-b", "role": "BACKUP", "generation": 1, "hash": "abc"},
                     check_interval=0.7, timeout=3.5)
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        raise Stop

    monkeypatch.setattr(channel, "asyncio", SimpleNamespace(sleep=pause, iscoroutine=asyncio.iscoroutine))
    with pytest.raises(Stop):
        asyncio.run(sync._watch())

    assert sync.client.calls == [("/status", 3.5)]  # type: ignore[attr-defined]
    assert pauses == [0.7]
    assert sync.state.up


def test_decision_and_persistence_pushes_wait_peer_timeout(tmp_path):
    sync = pair_sync(tmp_path, {"decisions": [], "digest": None, "taken": 0}, timeout=3.5)
    store = SimpleNamespace(server_states=dict, failover_latches=dict)
    decisions = DecisionSync(SimpleNamespace(store=store), sync, wait=60.0)  # type: ignore[arg-type]
    sticky = StickySync(SimpleNamespace(), sync)  # type: ignore[arg-type]

    async def tables() -> dict:
        return {"viewer": [(b"\x0a\x00\x00\x01", "a", 30.0)]}

    sticky.tables = tables  # type: ignore[method-assign]

    async def scenario() -> tuple[bool, bool]:
        await decisions._catch_up()  # a starting node: min(peer_timeout, what is left of decisions_wait)
        return await decisions.exchange(), await sticky.push()

    assert asyncio.run(scenario()) == (True, True)

    assert sync.client.calls == [("/decisions", 3.5), ("/decisions", 3.5),  # type: ignore[attr-defined]
                                 ("/persistence", 3.5)]
    assert decisions.ready and decisions.push_timeout == sticky.push_timeout == 3.5


def test_config_calls_to_the_peer_and_a_prepared_config_keep_config_sync_timeout(tmp_path):
    sync = pair_sync(tmp_path, {"prepared": "id-1", "committed": 2})
    generation = ConfigGeneration.under(tmp_path, "abc")
    config = ConfigSync(SimpleNamespace(), sync, generation, 42.0)  # type: ignore[arg-type]

    async def scenario() -> tuple[int, dict]:
        prepared = await config.prepare_peer(Bundle("services: []\n"), (2, "def"))
        assert prepared is not None and prepared.id == "id-1"
        await config.commit_peer(prepared, (2, "def"))
        return await config.receive_commit({"id": "not-prepared"}, "198.18.0.5")

    status, answer = asyncio.run(scenario())

    assert sync.client.calls == [("/config/prepare", 42.0), ("/config/commit", 42.0)]  # type: ignore[attr-defined]
    assert status == 409 and "it is kept 42 s" in answer["error"]


def test_start_pair_hands_the_configs_timings_to_the_sync_objects(tmp_path, monkeypatch):
    from medlb.app import App
    from medlb.config import load_config
    from medlb.ha.supervisor import PairNode

    (tmp_path / "token").write_text("admin-secret\n")
    (tmp_path / "ha-token").write_text("sync-secret\n")
    path = tmp_path / "medlb.yaml"

    async def no_keepalived(self: Any) -> None:
        return None

    monkeypatch.setattr(PairNode, "start", no_keepalived)
    for kind in (PairSync, DecisionSync, StickySync):  # no task calling the peer
        monkeypatch.setattr(kind, "start", lambda self: None)

    def started(timings: str) -> App:
        path.write_text(f"state_dir: {tmp_path / 'state'}\n"
                        + ha_config(admin=f'  listen: "0.0.0.0:9443"\n  token_file: {tmp_path}/token\n',
                                    sync_token_file=f"{tmp_path}/ha-token") + timings)

        async def scenario() -> App:
            app = App(path, node="lb-a")
            app.loaded = load_config(path)
            await app._start_pair(ME, "sync-secret")
            return app

        return asyncio.run(scenario())

    app = started("  peer_check_interval: 300ms\n  peer_timeout: 4s\n  config_sync_timeout: 90s\n")
    assert app.pair_sync is not None and app.config_sync is not None
    assert app.decisions is not None and app.sticky is not None
    assert (app.pair_sync.check_interval, app.pair_sync.timeout) == (0.3, 4.0)
    assert app.decisions.push_timeout == app.sticky.push_timeout == 4.0
    assert app.config_sync.timeout == 90.0

    defaults = started("")
    assert defaults.pair_sync is not None and defaults.config_sync is not None
    assert (defaults.pair_sync.check_interval, defaults.pair_sync.timeout) == (1.0, 5.0)
    assert defaults.config_sync.timeout == 30.0
