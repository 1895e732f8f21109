"""Asking the config loader for its problems, shared by the config tests."""

from __future__ import annotations

import textwrap

import pytest

from medlb.config import ConfigError, Problem, parse_config


def yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def problems(text: str) -> list[Problem]:
    """Every problem the loader finds in `text` (dedented), which it must refuse."""
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml(text))
    assert caught.value.problems, "a ConfigError must list at least one problem"
    return caught.value.problems


def only_problem(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def one_service(key_and_value: str = "", name: str = "svc") -> str:
    """A file with one tcp service and `key_and_value` (one line of YAML) in it, on line 5."""
    return f"""
        services:
          - name: {name}
            listen: 127.0.0.1:11104
            servers: [{{name: s1, address: "10.0.0.1"}}]
            {key_and_value}
        """


#: The two nodes of the issue's example pair.
NODES = """\
    - {name: lb-a, address: "198.18.0.4", priority: 150}
    - {name: lb-b, address: "198.18.0.5", priority: 100}
"""


def ha_config(nodes: str = NODES, admin: str = '  listen: "0.0.0.0:9443"\n  token_file: /etc/medlb/token\n',
              **keys: str) -> str:
    """A config with an `ha:` section; `keys` replace (or, as "", drop) the example's keys."""
    values = {"interface": "lb0", "virtual_router_id": "51", "advert_interval": "500ms", "preempt": "false",
              "vips": '["198.18.0.100/24"]', "sync_token_file": "/etc/medlb/ha-token"}
    values.update(keys)
    body = "".join(f"  {key}: {value}\n" for key, value in values.items() if value != "")
    head = f"admin:\n{admin}" if admin else ""
    return f"{head}ha:\n  nodes:\n{nodes}{body}"
