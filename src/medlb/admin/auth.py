"""Who is calling the admin API, and what their role lets them do."""

from __future__ import annotations

from dataclasses import dataclass

from medlb.config import LoadedConfig
from medlb.config.loader import read_secret

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class Principal:
    """A caller: a token's or a logged-in user's name and role. `session` is the
    session id for a user of the web page, empty for a bearer token."""

    name: str
    role: str
    session: str = ""

    def may(self, needed: str) -> bool:
        """Roles are ordered: an admin may do what an operator may, and so on."""
        return ROLES.index(self.role) >= ROLES.index(needed)


def build_tokens(loaded: LoadedConfig) -> dict[str, Principal]:
    """Each bearer token's principal, from the config and its token files (read now,
    so a reload picks up a changed file). Raises OSError for a file it cannot read."""
    admin = loaded.config.admin
    tokens: dict[str, Principal] = {}
    if admin is None:
        return tokens
    if admin.token:
        tokens[admin.token] = Principal("admin-token", "admin")
    if admin.token_file:
        tokens[read_secret(admin.token_file, loaded.base_dir)] = Principal("admin-token", "admin")
    for entry in admin.tokens:
        secret = entry.token or read_secret(entry.token_file or "", loaded.base_dir)
        tokens[secret] = Principal(entry.name, entry.role)
    return tokens
