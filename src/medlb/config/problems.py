"""A problem in a config file and where it is: the path, the line, the names.

The operator's question after a typo at 3 a.m. is "where?", so every problem carries
the path in the file and the line it sits on, and each list item along the path is
shown with its name (`services[2] (vna).servers[0] (vna1).address`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """`path` is what programs match (`services[2].servers[0].address`); `shown` is the
    same path with each list item's name beside its index (`services[2] (vna).servers[0]
    (vna1).address`), which is what an operator reads."""

    path: str
    line: int | None
    message: str
    column: int | None = None
    shown: str = ""

    def __str__(self) -> str:
        where = self.shown or self.path or "(top level)"
        if self.line is not None:
            where += f" (line {self.line}" + (f", column {self.column})" if self.column is not None else ")")
        return f"{where}: {self.message}"


@dataclass
class Locations:
    """Where each key and list item of a file is: its 1-based line, and the name of
    each list item that has one, so a problem says `services[2] (vna)`."""

    lines: dict[PathKey, int] = field(default_factory=dict)
    names: dict[PathKey, str] = field(default_factory=dict)

    def show(self, path: PathKey) -> str:
        return format_path(path, self.names)

    def problem(self, path: PathKey, message: str) -> Problem:
        """A problem at `path`, on the line of the deepest part of the path the file has
        (a missing key is reported on its parent's line)."""
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        return Problem(format_path(path), self.lines.get(probe), message, shown=self.show(path))


class ConfigError(Exception):
    """A config file that cannot be used; `problems` lists every reason."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(map(str, problems)))


def format_path(path: PathKey, names: dict[PathKey, str] | None = None) -> str:
    """`services[2].servers[0].address`; with `names`, each named list item's name
    follows its index: `services[2] (vna).servers[0] (vna1).address`."""
    text = ""
    for depth, part in enumerate(path):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        name = names.get(path[:depth + 1]) if names and isinstance(part, int) else None
        if name is not None:
            text += f" ({name})"
    return text
