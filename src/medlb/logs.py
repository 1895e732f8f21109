"""One line per event, as `key=value` text or JSON.

Callers log an event name and fields: `log.event("health", service="pacs", server="pacs1",
health="down", reason="...")`. Fields are what medlb knows about its own machinery
(names, states, addresses, counts); callers never pass message contents, data sets,
tokens or passwords, and `redact` masks any field whose name says it is a secret.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Callable

_SECRET_WORDS = ("token", "password", "secret", "cookie", "authorization")


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: ("***" if any(word in key.lower() for word in _SECRET_WORDS) else value)
            for key, value in fields.items()}


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = getattr(record, "fields", {})
        parts = [stamp, record.levelname.lower(), record.getMessage()]
        for key, value in fields.items():
            text = str(value)
            if text == "" or any(c in text for c in ' ="'):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


#: Fields every line of this process carries (a worker's number).
process_fields: dict[str, Any] = {}


class EventLogger:
    def __init__(self, name: str):
        self._logger = logging.getLogger(name)

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            if process_fields:
                fields = {**fields, **process_fields}
            self._logger.log(level, event, extra={"fields": redact(fields)}, exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def event(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields, exc_info)


def get_logger(name: str) -> EventLogger:
    return EventLogger(name)


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    ours = logging.getLogger("medlb")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    # Libraries (uvicorn, asyncio) log through the root logger: same format, so a
    # JSON log stays JSON; only their warnings and errors.
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


class Throttle:
    """At most one line per `seconds` for a condition that recurs (a flood of refused
    clients, a check failing every interval): the log stays readable, and each line
    says how many occurrences it stands for. The counts are exact in the metrics."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def hit(self) -> int:
        """Count one occurrence; how many the line to write now stands for (0: write none)."""
        self._held += 1
        now = self._clock()
        if self._last is not None and now - self._last < self.seconds:
            return 0
        self._last, count, self._held = now, self._held, 0
        return count
