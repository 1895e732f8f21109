"""Which config a node of the pair runs: a generation number and a hash.

The two nodes compare them to know whether they run the same config, and which is
newer when they do not (the higher generation; on a tie the active node's). The
generation counts the config changes this node committed (each from its own API or
SIGHUP, or from the peer); it is kept in `STATE/ha/config-generation.json` so that it
survives restarts. A file edited while medlb was stopped is a change too: the hash
read at start differs from the one kept, and the generation goes up by one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medlb.atomic import write_atomically

FILE_NAME = "config-generation.json"


@dataclass
class ConfigGeneration:
    path: Path
    generation: int = 0
    hash: str = ""

    @classmethod
    def under(cls, state_dir: Path, digest: str) -> "ConfigGeneration":
        """The kept generation, moved on by one if the config is not the one kept."""
        kept = cls(state_dir / "ha" / FILE_NAME)
        try:
            saved = json.loads(kept.path.read_text())
            kept.generation, kept.hash = int(saved["generation"]), str(saved["hash"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if kept.hash != digest:
            kept.commit(kept.generation + 1, digest)
        return kept

    def current(self) -> tuple[int, str]:
        return self.generation, self.hash

    def commit(self, generation: int, digest: str) -> None:
        """Keep a new (generation, hash), atomically."""
        write_atomically(self.path, json.dumps({"generation": generation, "hash": digest}))
        self.generation, self.hash = generation, digest
