"""Replace a file whole, so a crash or a reader in the middle never sees half of it.

A config file, the pair's pinned certificate, its generation and keepalived's config
are each read by someone else (medlb at its next start, keepalived, the peer) who must
find either the old content or the new one. So each is written beside its place,
flushed to disk, and renamed over it (rename is atomic within one file system).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Put `data` at `path` whole (text as UTF-8), with permissions `mode`; the folder
    is made (owner only) if missing."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".medlb-new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(temporary, mode)
    os.replace(temporary, path)
