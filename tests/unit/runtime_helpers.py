"""Small builders shared by the runtime tests: a Runtime from a one-service config."""

from __future__ import annotations

from collections import Counter

import yaml

from medlb.config import parse_config
from medlb.runtime import CheckResult, Runtime, Server, Service, SetState

SERVICE = "svc"


def config_text(servers: dict[str, int], backup: dict[str, int] | None = None, **options) -> str:
    """YAML for one service `svc`; servers and backup map name -> weight."""
    def entries(group: dict[str, int]) -> list[dict]:
        return [{"name": name, "address": f"{name}.site.example", "weight": weight}
                for name, weight in group.items()]

    service = {"name": SERVICE, "listen": ["0.0.0.0:104"], "servers": entries(servers),
               "backup": entries(backup or {}), **options}
    return yaml.safe_dump({"services": [service]}, sort_keys=False)


def make_runtime(servers: dict[str, int], backup: dict[str, int] | None = None, **options) -> Runtime:
    runtime = Runtime()
    runtime.load(parse_config(config_text(servers, backup, **options)).config)
    return runtime


def reload(runtime: Runtime, servers: dict[str, int], backup: dict[str, int] | None = None, **options):
    return runtime.load(parse_config(config_text(servers, backup, **options)).config)


def svc(runtime: Runtime) -> Service:
    return runtime.services[SERVICE]


def server(runtime: Runtime, name: str) -> Server:
    found = svc(runtime).server(name)
    assert found is not None, name
    return found


def check(runtime: Runtime, name: str, ok: bool, times: int = 1):
    """Feed `times` health check results; returns the changes of the last one."""
    changes = []
    for _ in range(times):
        changes = runtime.apply(CheckResult(SERVICE, name, ok, "ok" if ok else "refused", 0.001))
    return changes


def set_state(runtime: Runtime, name: str, state: str):
    return runtime.apply(SetState(SERVICE, name, state, who="alice"))


def pick(runtime: Runtime, client: str = "192.0.2.1", **kwargs) -> str | None:
    chosen = svc(runtime).pick(client, **kwargs)
    return None if chosen is None else chosen.name


def pick_many(runtime: Runtime, count: int, client: str = "192.0.2.1") -> list[str | None]:
    return [pick(runtime, client) for _ in range(count)]


def tally(names) -> Counter:
    return Counter(names)


def clients(count: int) -> list[str]:
    return [f"10.{i // 250 % 250}.{i % 250}.{i % 7 + 1}" for i in range(count)]
