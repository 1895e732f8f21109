"""Who is calling the admin API, and what their role lets them do."""

from __future__ import annotations

from dataclasses import dataclass

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
