"""The admin API against a fake `Control`: it needs nothing of App's but the interface.

No medlb process and no socket: the routes run in-process (Starlette's TestClient),
and the fake records what the API asked of it, so a route that acted without
asking, or asked for the wrong thing, shows here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medlb.admin.api import create_api
from medlb.config import LoadedConfig, parse_config
from medlb.control import ConfigHook, Control, Listener, ReloadResult
from medlb.runtime import Change, Conflict, NotFound, Runtime, Server, Service, SetState

OPERATOR = "operator-token-0123456789"
ADMIN = "admin-token-0123456789abc"
VIEWER = "viewer-token-0123456789"

CONFIG = f"""
admin:
  tls: "off"
  tokens:
    - {{name: ops, role: operator, token: {OPERATOR}}}
    - {{name: root, role: admin, token: {ADMIN}}}
    - {{name: watcher, role: viewer, token: {VIEWER}}}
services:
  - name: pacs
    listen: ["127.0.0.1:11112"]
    servers:
      - {{name: A, address: "127.0.0.1:4242"}}
      - {{name: B, address: "127.0.0.1:4243"}}
"""


class FakeControl:
    """A running medlb as the admin side sees it: a real runtime model, no I/O."""

    def __init__(self) -> None:
        self.config_path = Path("/nonexistent/medlb.yaml")
        self.loaded: LoadedConfig = parse_config(CONFIG)
        self.runtime = Runtime()
        self.runtime.load(self.loaded.config)
        self.events: list[dict[str, Any]] = []
        self.reloads = {"ok": 0, "failed": 0}
        self.health_errors: dict[tuple[str, str, str], int] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.listeners: list[Listener] = []
        self.hooks: list[ConfigHook] = []
        #: What l4_counters answers: no layer 4 service, no kernel error.
        self.kernel: dict[str, Any] = {"error": None, "services": {}}
        #: What ha_view answers: None, not a node of a pair.
        self.ha: dict[str, Any] | None = None
        #: The pair's sync channel: None, not a node of a pair.
        self.pair_sync: Any = None
        self.config_sync: Any = None
        self.decisions: Any = None

    @property
    def services(self) -> Any:
        return self.runtime.services

    def worker_views(self) -> list[dict[str, Any]] | None:
        return None

    def audit_entries(self, limit: int, before_id: int | None, search: str) -> list[dict[str, Any]]:
        return []

    async def collect(self) -> None:
        pass

    async def settle(self) -> list[int]:
        return []

    async def l4_view(self, service: str, flows: bool = True) -> dict[str, Any]:
        raise NotFound(f"service {self.runtime.service(service).name!r} is mode tcp, not a kernel layer 4 service")

    async def l4_counters(self) -> dict[str, Any]:
        return self.kernel

    async def ha_view(self) -> dict[str, Any] | None:
        return self.ha

    async def ha_hand_over(self, action: str, who: str, source: str = "") -> dict[str, Any]:
        self.calls.append(("ha", action, who))
        if self.ha is None:
            raise NotFound("this medlb is not a node of a pair: its config has no ha: section")
        if self.ha["role"] != ("MASTER" if action == "release" else "BACKUP"):
            raise Conflict(f"this node is {self.ha['role']}")
        return {"action": action, "done": True, "role": "BACKUP", "text": "moved"}

    def service(self, name: str) -> Service:
        return self.runtime.service(name)

    def server(self, service: str, name: str) -> Server:
        return self.runtime.server(service, name)

    def set_state(self, service: str, server: str, state: str, who: str, source: str = "") -> list[Change]:
        self.runtime.server(service, server)  # NotFound, as the App raises
        self.calls.append(("set_state", service, server, state, who))
        return self.runtime.apply(SetState(service, server, state, who))  # type: ignore[arg-type]

    def set_pool_state(self, service: str, pool: str, tier: str, state: str, who: str,
                       source: str = "") -> list[Change]:
        raise NotFound(f"no service named {service!r}")

    def failback(self, service: str, who: str, pool: str | None = None, source: str = "") -> list[Change]:
        raise NotFound(f"no service named {service!r}")

    async def reload(self, who: str, source: str = "") -> ReloadResult:
        return ReloadResult()

    async def apply_config(self, text: str, who: str, source: str = "") -> ReloadResult:
        return ReloadResult()

    def audit(self, who: str, action: str, target: str, detail: dict[str, Any] | None = None,
              source: str = "") -> int:
        self.calls.append(("audit", who, action, target))
        return len(self.calls)

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def on_config(self, hook: ConfigHook) -> None:
        self.hooks.append(hook)


@pytest.fixture
def fake() -> FakeControl:
    return FakeControl()


def client(control: Control, token: str) -> TestClient:
    return TestClient(create_api(control), headers={"Authorization": f"Bearer {token}"})


def test_a_state_change_is_asked_of_the_control_and_answered_with_the_server(fake: FakeControl):
    answer = client(fake, OPERATOR).post("/api/v1/services/pacs/servers/A/state", json={"state": "halt"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["server"]["state"] == "halt"
    assert fake.calls == [("set_state", "pacs", "A", "halt", "ops")]


def test_an_unknown_server_is_404_and_nothing_is_asked(fake: FakeControl):
    answer = client(fake, OPERATOR).post("/api/v1/services/pacs/servers/Z/state", json={"state": "halt"})
    assert answer.status_code == 404
    assert "no server named 'Z'" in answer.json()["error"]
    assert fake.calls == []
    assert client(fake, OPERATOR).get("/api/v1/services/nope").status_code == 404


def test_a_viewer_cannot_change_a_state_and_the_control_is_not_asked(fake: FakeControl):
    answer = client(fake, VIEWER).post("/api/v1/services/pacs/servers/A/state", json={"state": "halt"})
    assert answer.status_code == 403
    assert fake.calls == []


def test_metrics_show_the_kernels_counters_and_a_programming_error(fake: FakeControl):
    api = client(fake, VIEWER)
    assert "medlb_l4_" not in api.get("/metrics").text  # no layer 4 service: nothing of the kernel
    fake.kernel = {"error": "nft -f - failed: Error: Could not process rule", "services": {"pacs": {
        "mode": "l4-nat", "no_server": {"packets": 4, "bytes": 240},
        "servers": {"A": {"packets": 10, "bytes": 1500, "new_flows": 2, "flows": 1},
                    "B": {"packets": 0, "bytes": 0, "new_flows": 0, "flows": None}}}}}
    text = api.get("/metrics").text
    a = 'backup="false",pool="default",server="A",service="pacs"'
    for line in (f"medlb_l4_server_packets_total{{{a}}} 10.0", f"medlb_l4_server_bytes_total{{{a}}} 1500.0",
                 f"medlb_l4_server_new_flows_total{{{a}}} 2.0", f"medlb_l4_server_flows{{{a}}} 1.0",
                 'medlb_l4_no_server_packets_total{mode="l4-nat",service="pacs"} 4.0', "medlb_l4_kernel_error 1.0"):
        assert line in text
    assert 'medlb_l4_server_flows{backup="false",pool="default",server="B"' not in text  # not counted: absent
    assert "Could not process rule" not in text
    assert client(fake, VIEWER).get("/api/v1/services/pacs/l4").status_code == 404


def test_a_body_that_is_not_json_is_422_saying_so_and_nothing_is_asked(fake: FakeControl):
    answer = client(fake, OPERATOR).post("/api/v1/services/pacs/servers/A/state", content=b"{state: halt",
                                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json() == {"error": "the body is not JSON"}
    assert fake.calls == []


def test_the_pairs_role_is_in_the_api_and_the_metrics_and_a_lone_medlb_says_it_has_none(fake: FakeControl):
    api = client(fake, VIEWER)
    answer = api.get("/api/v1/ha")
    assert answer.status_code == 404
    assert answer.json()["error"] == "this medlb is not a node of a pair: its config has no ha: section"
    assert "medlb_ha_role" not in api.get("/metrics").text

    fake.ha = {"node": "lb-b", "role": "MASTER", "since": 1.5, "vips_held": ["198.18.0.100/24"]}
    assert api.get("/api/v1/ha").json() == fake.ha
    text = api.get("/metrics").text
    assert 'medlb_ha_role{node="lb-b",role="MASTER"} 1.0' in text
    for other in ("BACKUP", "FAULT", "STOP", "UNKNOWN"):
        assert f'medlb_ha_role{{node="lb-b",role="{other}"}} 0.0' in text


def test_release_and_takeover_need_the_admin_role_and_a_refusal_is_409_with_the_reason(fake: FakeControl):
    assert client(fake, OPERATOR).post("/api/v1/ha/release").status_code == 403
    assert fake.calls == []
    api = client(fake, ADMIN)
    assert api.post("/api/v1/ha/release").status_code == 404  # a lone medlb
    assert api.post("/api/v1/ha/elsewhere").status_code == 422
    fake.ha = {"node": "lb-a", "role": "BACKUP"}
    answer = api.post("/api/v1/ha/release")
    assert answer.status_code == 409 and answer.json()["error"] == "this node is BACKUP"
    answer = api.post("/api/v1/ha/takeover")
    assert answer.status_code == 200 and answer.json()["done"] is True
    assert fake.calls[-1] == ("ha", "takeover", "root")


SYNC = "the-pairs-sync-token-0123456789"


def test_the_sync_api_takes_only_the_sync_token_and_the_sync_token_is_no_operator(fake: FakeControl, tmp_path: Path):
    import ipaddress

    from medlb.config.models import HaNode
    from medlb.ha.channel import PairSync

    me = HaNode(name="lb-a", address=ipaddress.IPv4Address("198.18.0.4"), priority=150)
    peer = HaNode(name="lb-b", address=ipaddress.IPv4Address("198.18.0.5"), priority=100)
    fake.pair_sync = PairSync(me, peer, 9443, SYNC, tmp_path, lambda: "MASTER", lambda: (3, "abc"),
                              check_interval=1.0, timeout=5.0)

    status = client(fake, SYNC).get("/api/v1/ha/sync/status")
    assert status.status_code == 200
    assert {key: status.json()[key] for key in ("node", "role", "generation", "hash")} == \
        {"node": "lb-a", "role": "MASTER", "generation": 3, "hash": "abc"}
    operator = client(fake, OPERATOR).get("/api/v1/ha/sync/status")
    assert operator.status_code == 403
    assert operator.json()["error"] == "the sync API takes the pair's sync token, not an operator's"
    assert fake.calls == []  # someone who can log in: refused, not audited
    wrong = client(fake, "a-wrong-sync-token-0123456789").post("/api/v1/ha/sync/config/commit", json={"id": "x"})
    assert wrong.status_code == 401
    assert fake.calls == [("audit", "(unknown)", "ha_sync_refused", "/api/v1/ha/sync/config/commit")]
    for method, path in (("GET", "/api/v1/services"), ("POST", "/api/v1/services/pacs/servers/A/state"),
                         ("GET", "/metrics")):
        answer = client(fake, SYNC).request(method, path, json={"state": "halt"} if method == "POST" else None)
        assert answer.status_code == 403, path
        assert answer.json()["error"].startswith("the pair's sync token opens only /api/v1/ha/sync/")
    assert fake.runtime.server("pacs", "A").state == "online"


def test_the_peer_is_in_the_metrics(fake: FakeControl):
    fake.ha = {"node": "lb-a", "role": "MASTER", "peer": {"name": "lb-b", "up": True, "config_in_sync": False}}
    text = client(fake, VIEWER).get("/metrics").text
    assert 'medlb_ha_peer_up{node="lb-a",peer="lb-b"} 1.0' in text
    assert 'medlb_ha_config_in_sync{node="lb-a",peer="lb-b"} 0.0' in text
