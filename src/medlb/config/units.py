"""Parsing of the human units used in the config file: durations, sizes, addresses.

Operators write `500ms`, `2s`, `1h`, `64KiB`, `16MiB` and `host:12300-12301`; the rest of
medlb works in float seconds, int bytes and (host, port) tuples. Each parser raises
ValueError with a message that names what was expected, because that message is shown
to the operator by `medlb check`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")

_SIZE_UNITS = {
    "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> float:
    """Seconds from `500ms`, `2s`, `1.5m`, `1h`, `1d` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 2s, 5m or 1h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"expected a duration such as 500ms, 2s, 5m or 1h, got {value!r}")


def parse_size(value: object) -> int:
    """Bytes from `512`, `64KiB`, `16MiB`, `1GB` (KiB/MiB/GiB are powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64KiB or 16MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            unit = match.group(2).lower() or "b"
            if unit in _SIZE_UNITS:
                return int(match.group(1)) * _SIZE_UNITS[unit]
    raise ValueError(f"expected a size such as 512, 64KiB or 16MiB, got {value!r}")


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for summaries."""
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= factor and (seconds / factor).is_integer():
            return f"{int(seconds / factor)}{unit}"
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True, order=True)
class HostPort:
    """A host (name or IP literal) and an optional port; port None means 'same port'."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def _split_host(text: str) -> tuple[str, str | None]:
    """Split `host`, `host:port`, `[v6]:port`, `[v6]` into host and port text."""
    text = text.strip()
    if not text:
        raise ValueError("an address cannot be empty")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest == "":
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"expected ':port' after ']' in {text!r}")
        return host, rest[1:]
    if text.count(":") > 1:
        # A bare IPv6 literal has no port; brackets are needed to add one.
        return text, None
    if ":" in text:
        host, port = text.split(":", 1)
        return host, port
    return text, None


def _check_host(host: str) -> str:
    if not host:
        raise ValueError("the host part is empty")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):
        # A resolver reads `192.168.1` as 192.168.0.1 and `010.0.0.1` as 8.0.0.1.
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    if not re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?", host):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")
    return host


def _check_port(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1-65535")
    return port


def parse_server_address(text: object) -> HostPort:
    """`host` (same port as the client hit) or `host:port`."""
    if not isinstance(text, str):
        raise ValueError("expected 'host' or 'host:port'")
    host, port = _split_host(text)
    return HostPort(_check_host(host), None if port is None else _check_port(port))


def parse_listen(text: object) -> list[HostPort]:
    """`host:port` or `host:first-last`; a range expands to one address per port."""
    if not isinstance(text, str):
        raise ValueError("expected 'host:port' or 'host:first-last'")
    host, port_text = _split_host(text)
    if port_text is None:
        raise ValueError(f"{text!r} has no port; write host:port or host:first-last")
    host = _check_host(host)
    if "-" in port_text:
        first_text, last_text = port_text.split("-", 1)
        first, last = _check_port(first_text), _check_port(last_text)
        if last < first:
            raise ValueError(f"port range {first}-{last} runs backwards")
        if last - first >= 1024:
            raise ValueError(f"port range {first}-{last} is wider than 1024 ports")
        return [HostPort(host, port) for port in range(first, last + 1)]
    return [HostPort(host, _check_port(port_text))]


def listen_overlaps(a: HostPort, b: HostPort) -> bool:
    """Two listen addresses conflict when the ports match and either is a wildcard."""
    if a.port != b.port:
        return False
    wildcards = {"0.0.0.0", "::"}
    if a.host == b.host:
        return True
    # 0.0.0.0 takes every IPv4 address; :: takes every address on dual-stack hosts.
    if "::" in (a.host, b.host):
        return True
    if "0.0.0.0" in (a.host, b.host):
        other = b.host if a.host == "0.0.0.0" else a.host
        return other not in wildcards and ":" not in other
    return False
