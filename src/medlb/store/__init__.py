"""SQLite store in state_dir: operator states, failover flags, audit log.

An operator who halts a PACS node at 3 a.m. must find it still halted after a reboot,
so a state change is committed (synchronous=FULL) before the API acknowledges it.
The writes are tiny and rare, so the store is called directly from the event loop.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS server_state (
    service TEXT NOT NULL, server TEXT NOT NULL, state TEXT NOT NULL,
    changed_at REAL NOT NULL, changed_by TEXT NOT NULL,
    PRIMARY KEY (service, server));
CREATE TABLE IF NOT EXISTS pool_failover (
    service TEXT NOT NULL, pool TEXT NOT NULL, failed_over INTEGER NOT NULL,
    changed_at REAL NOT NULL,
    PRIMARY KEY (service, pool));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL, source TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
"""


@dataclass(frozen=True)
class StoredState:
    state: str
    changed_at: float
    changed_by: str


class Store:
    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "medlb.sqlite3"
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- operator states ---------------------------------------------------------------

    def server_states(self) -> dict[tuple[str, str], StoredState]:
        rows = self._db.execute("SELECT service, server, state, changed_at, changed_by FROM server_state")
        return {(service, server): StoredState(state, at, by) for service, server, state, at, by in rows}

    def save_server_state(self, service: str, server: str, state: str, who: str,
                          changed_at: float | None = None) -> None:
        """Online is stored too (not by deleting the row): the pair's nodes merge their
        decisions by when each was made, so putting a server back online must have a
        time that beats the halt it undoes (ha/decisions.py)."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO server_state VALUES (?, ?, ?, ?, ?)",
                             (service, server, state, time.time() if changed_at is None else changed_at, who))

    def failed_over_pools(self) -> set[tuple[str, str]]:
        rows = self._db.execute("SELECT service, pool FROM pool_failover WHERE failed_over=1")
        return {(service, pool) for service, pool in rows}

    def failover_latches(self) -> dict[tuple[str, str], tuple[bool, float]]:
        """Every pool's stored latch, set or not, with when it last changed."""
        rows = self._db.execute("SELECT service, pool, failed_over, changed_at FROM pool_failover")
        return {(service, pool): (bool(flag), at) for service, pool, flag, at in rows}

    def save_failed_over(self, service: str, pool: str, failed_over: bool, changed_at: float | None = None) -> None:
        """A latch that already holds this value keeps its time: it did not change (the
        peer's copy of the same latch, applied here, must not look newer than it is)."""
        with self._db:
            stored = self._db.execute("SELECT failed_over FROM pool_failover WHERE service=? AND pool=?",
                                      (service, pool)).fetchone()
            if stored is not None and bool(stored[0]) == failed_over and changed_at is None:
                return
            self._db.execute("INSERT OR REPLACE INTO pool_failover VALUES (?, ?, ?, ?)",
                             (service, pool, int(failed_over), time.time() if changed_at is None else changed_at))

    # --- audit -------------------------------------------------------------------------

    def audit(self, who: str, action: str, target: str, detail: dict[str, Any] | None = None,
              source: str = "") -> int:
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO audit (at, who, action, target, detail, source) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), who, action, target, json.dumps(detail or {}, sort_keys=True), source))
        return int(cursor.lastrowid or 0)

    def audit_entries(self, limit: int = 100, before_id: int | None = None, search: str = "") -> list[dict[str, Any]]:
        """Newest first; page with before_id (the smallest id of the previous page);
        `search` keeps entries any of whose fields contains it (case-insensitive)."""
        query = "SELECT id, at, who, action, target, detail, source FROM audit"
        where, params_list = [], []
        if before_id is not None:
            where.append("id < ?")
            params_list.append(before_id)
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(who LIKE ? ESCAPE '\\' OR action LIKE ? ESCAPE '\\' OR target LIKE ? ESCAPE '\\'"
                         " OR detail LIKE ? ESCAPE '\\' OR source LIKE ? ESCAPE '\\')")
            params_list += [pattern] * 5
        if where:
            query += " WHERE " + " AND ".join(where)
        params: tuple[Any, ...] = tuple(params_list)
        query += " ORDER BY id DESC LIMIT ?"
        rows = self._db.execute(query, params + (limit,))
        return [
            {"id": id_, "at": at, "who": who, "action": action, "target": target,
             "detail": json.loads(detail), "source": source}
            for id_, at, who, action, target, detail, source in rows
        ]
