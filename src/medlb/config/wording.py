"""A pydantic error in the operator's words: what the key holds and what was written.

Pydantic says "Input should be greater than or equal to 0"; an operator reading
`medlb check` at 3 a.m. needs "a weight is 0 (no new work) to 1000, not -1". The
bounds come from the model itself (both of them, though pydantic reports only the one
crossed), so the words cannot drift from what is enforced.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from medlb.config.models import NAME_PATTERN, UserConfig
from medlb.config.units import format_duration, parse_duration, parse_size

#: How a key is called in a sentence, where its bare name says too little.
NOUNS = {
    "weight": "a weight",
    "port": "a port",
    "name": "a name",
    "token": "a token",
    "rise": "rise (checks passed in a row before a server counts as up)",
    "fall": "fall (checks failed in a row before a server counts as down)",
    "priority": "a node's priority",
}
#: What the lowest value means, where it is a choice of its own.
LOW_MEANINGS = {
    "weight": "0 (no new work)",
    "retries": "0 (no retry)",
    "connect_retries": "0 (no retry)",
    "server_idle_connections": "0 (none kept)",
}
#: What a list needs at least one of, said as a sentence.
NEEDS_ONE = {
    "servers": "a service needs at least one server",
    "listen": "a service needs at least one listen address",
    "vips": "the pair needs at least one VIP",
    "command": "a script check needs a command",
}
#: What a text key's pattern allows, by pattern.
PATTERNS = {
    NAME_PATTERN: "a name is 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit",
    UserConfig.model_fields["password_hash"].metadata[0].pattern:
        "a password hash is what `medlb passwd` prints (scrypt$... or $argon2...)",
}
_TYPES = {"dict_type": "a section of keys (key: value)", "model_type": "a section of keys (key: value)",
          "model_attributes_type": "a section of keys (key: value)",
          "list_type": "a list (one '- ' item a line, or [a, b])", "tuple_type": "a list (one '- ' item a line, or [a, b])",
          "int_parsing": "a whole number", "int_type": "a whole number", "int_from_float": "a whole number",
          "float_parsing": "a number", "float_type": "a number",
          "bool_parsing": "true or false", "bool_type": "true or false",
          "ip_v4_address": "an IPv4 address such as 198.18.0.4", "ip_v6_address": "an IPv6 address",
          "ip_any_address": "an IP address"}


def _written(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under Annotated and Optional, and the metadata Annotated carried."""
    metadata: list[Any] = []
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            args = typing.get_args(annotation)
            annotation = args[0]
            for extra in args[1:]:
                metadata.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
            continue
        if typing.get_origin(annotation) in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation, metadata


def _member_for_tag(annotation: Any, tag: Any) -> Any:
    """The union member a tagged union's tag (`health.http.port`) names."""
    for member in typing.get_args(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel) and "type" in member.model_fields:
            kind = member.model_fields["type"].annotation
            if typing.get_origin(kind) is Literal and tag in typing.get_args(kind):
                return member
    return None


def field_metadata(root: type[BaseModel], loc: tuple[Any, ...]) -> list[Any] | None:
    """The constraints and validators of the value at `loc` (a pydantic error location),
    or None when the location leads nowhere known."""
    annotation: Any = root
    metadata: list[Any] = []
    for part in loc:
        annotation, _ = _unwrap(annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(part) if isinstance(part, str) else None
            if info is None:
                return None
            annotation, metadata = info.annotation, list(info.metadata)
        elif origin in (list, tuple) and isinstance(part, int):
            annotation, metadata = typing.get_args(annotation)[0], []
        elif origin is dict:
            annotation, metadata = typing.get_args(annotation)[1], []
        elif origin in (Union, types.UnionType):
            member = _member_for_tag(annotation, part)
            if member is None:
                return None
            annotation = member
        else:
            return None
    return metadata + _unwrap(annotation)[1]


def _bound(metadata: list[Any], kind: type, attribute: str) -> Any:
    for item in metadata:
        if isinstance(item, kind):
            return getattr(item, attribute)
    return None


def _unit_of(metadata: list[Any]) -> str:
    for item in metadata:
        function = getattr(item, "func", None)
        if function is parse_duration:
            return "duration"
        if function is parse_size:
            return "size"
    return ""


def _size(value: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= factor and value % factor == 0:
            return f"{value // factor}{unit}"
    return f"{value} bytes"


def _range_words(key: str, metadata: list[Any], value: Any) -> str:
    low = _bound(metadata, annotated_types.Ge, "ge")
    high = _bound(metadata, annotated_types.Le, "le")
    unit = _unit_of(metadata)
    noun = NOUNS.get(key, key)
    if unit == "duration":
        spell = format_duration
        written = format_duration(value) if isinstance(value, (int, float)) else repr(value)
        if high is None:
            return f"{noun} is a duration of at least {spell(low)}, such as 5s; {written} is too short"
        return f"{noun} is a duration from {spell(low)} to {spell(high)}, not {written}"
    if unit == "size":
        written = _size(value) if isinstance(value, int) else repr(value)
        if high is None:
            return f"{noun} is a size of at least {_size(low)}, not {written}"
        return f"{noun} is a size from {_size(low)} to {_size(high)}, not {written}"
    low_text = LOW_MEANINGS.get(key, str(low))
    if high is None:
        return f"{noun} is at least {low_text}, not {value!r}"
    if low is None:
        return f"{noun} is at most {high}, not {value!r}"
    return f"{noun} is {low_text} to {high}, not {value!r}"


def explain(error: dict[str, Any], root: type[BaseModel]) -> str:
    """One pydantic error as a sentence about the key it is on."""
    kind, loc, value = error["type"], error["loc"], error.get("input")
    key = next((part for part in reversed(loc) if isinstance(part, str)), "the value")
    ctx = error.get("ctx", {})
    if kind == "extra_forbidden":
        return "unknown key (see docs/configuration.md for the keys this section takes)"
    if kind == "missing":
        return "this key is required"
    if kind == "union_tag_invalid":
        return f"unknown type {(value or {}).get('type')!r}; expected one of {ctx.get('expected_tags', '')}"
    if kind == "union_tag_not_found":
        return "a 'type' key is required"
    if kind == "string_type" and isinstance(value, (int, float)):
        return f"expected text, got the number {value!r}; put it in quotes"
    if kind == "string_type":
        return f"{key} is text, not {_written(value)}"
    if kind == "literal_error":
        return f"{key} is one of {ctx['expected']}, not {value!r}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        metadata = field_metadata(root, loc) or []
        if _bound(metadata, annotated_types.Ge, "ge") is None and _bound(metadata, annotated_types.Le, "le") is None:
            metadata = [annotated_types.Ge(ctx["ge"])] if "ge" in ctx else [annotated_types.Le(ctx.get("le"))]
        return _range_words(key, metadata, value)
    if kind in _TYPES:
        noun = NOUNS.get(key, key) if kind not in ("dict_type", "model_type", "model_attributes_type",
                                                   "list_type", "tuple_type") else key
        if loc and isinstance(loc[-1], int):
            noun = f"each entry of {key}"
        return f"{noun} is {_TYPES[kind]}, not {_written(value)}"
    if kind == "too_short":
        if key in NEEDS_ONE and ctx.get("min_length") == 1:
            return NEEDS_ONE[key]
        return f"{key} needs at least {ctx.get('min_length')} entries"
    if kind == "string_too_short":
        return f"{NOUNS.get(key, key)} has at least {ctx.get('min_length')} characters"
    if kind == "string_pattern_mismatch":
        allowed = PATTERNS.get(ctx.get("pattern"), f"{key} does not have the form it needs (see docs/configuration.md)")
        return f"{allowed}; {value!r} is not"
    return str(error["msg"]).removeprefix("Value error, ")
