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
