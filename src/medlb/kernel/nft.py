"""Running nft: apply a batch, check one, list and delete medlb's tables. The only I/O.

Every batch is one `nft -f -` (or `nft -j -f -`) run, which nft sends as one netlink
transaction: it applies whole or not at all, and a refused batch leaves the kernel as
it was. nft's own message (with its caret under the offending words) is what NftError
carries. Debian's python3-nftables binds only the system Python, hence a subprocess.

Before anything is run, every command is checked to name a table whose name starts
with `medlb`; a batch that names any other table, or that is not made of plain
commands (a `flush ruleset`, a `table ... { }` block), is refused without running nft.
So nothing here can touch the host's firewall or another program's tables.

`netns` runs nft inside a network namespace (`ip netns exec NS nft ...`); the tests
use it, medlb itself runs in the host's namespace.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medlb.kernel.listing import Listing

PREFIX = "medlb"
_COMMAND = re.compile(r"^(add|create|delete|flush|insert|replace|reset) "
                      r"(table|chain|map|set|counter|element|rule) (ip|ip6|inet|netdev|arp|bridge) (\S+)")


class NftError(RuntimeError):
    """nft refused or failed; the message is nft's own."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class ForeignTable(NftError):
    """A batch or call that would touch a table medlb does not own; nothing was run."""


def _owned(table: str) -> bool:
    return table.startswith(PREFIX)


def check_text_owned(text: str) -> None:
    """Refuse a text batch unless each command names a medlb table."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(("#", " ", "\t")):  # comments, an element list's next lines
            continue
        match = _COMMAND.match(line)
        if match is None:
            raise ForeignTable(f"line {number} is not a command medlb sends (refused, nothing applied): {line[:80]}")
        if not _owned(match.group(4)):
            raise ForeignTable(f"line {number} names table {match.group(4)!r}, which is not medlb's "
                               "(refused, nothing applied)")


def check_json_owned(commands: Iterable[Mapping[str, Any]]) -> None:
    """Refuse a JSON batch unless each command's object lies in a medlb table."""
    for command in commands:
        for verb, objects in command.items():
            for kind, spec in objects.items():
                table = spec.get("name") if kind == "table" else spec.get("table")
                if not isinstance(table, str) or not _owned(table):
                    raise ForeignTable(f"a {verb} {kind} command names table {table!r}, which is not medlb's "
                                       "(refused, nothing applied)")


def _message(stderr: str) -> str:
    """nft's errors without the warnings 1.0.6 prints for statements it cannot list as JSON."""
    lines = [line for line in stderr.splitlines() if not line.startswith("warning: stmt ops")]
    return "\n".join(lines).strip()


@dataclass(frozen=True)
class Nft:
    netns: str | None = None
    binary: str = "nft"
    #: Loading a 65537-slot table takes about 0.4 s; far longer means something hangs.
    timeout: float = 60.0

    def _argv(self, args: Sequence[str]) -> list[str]:
        binary = shutil.which(self.binary)
        if binary is None:
            raise NftError(f"{self.binary} is not installed (Debian package nftables)")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, binary, *args]

    def run(self, args: Sequence[str], stdin: str | None = None) -> str:
        """Run nft with `args`; its stdout, or NftError with its message."""
        argv = self._argv(args)
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise NftError(f"nft {' '.join(args)} did not finish within {self.timeout:g} s") from None
        if done.returncode != 0:
            message = _message(done.stderr) or f"exit status {done.returncode}"
            raise NftError(f"nft {' '.join(args)} failed: {message}", returncode=done.returncode, stderr=done.stderr)
        return done.stdout

    def version(self) -> str:
        return self.run(["--version"]).strip()

    def apply(self, text: str) -> None:
        """Apply a batch of commands in one transaction."""
        check_text_owned(text)
        self.run(["-f", "-"], stdin=text)

    def check(self, text: str) -> None:
        """Let the kernel check a batch without applying it (`nft -c`)."""
        check_text_owned(text)
        self.run(["-c", "-f", "-"], stdin=text)

    def apply_json(self, commands: Sequence[Mapping[str, Any]], *, check: bool = False) -> None:
        """A libnftables-json(5) batch, e.g. [{"delete": {"element": {...}}}, {"add": ...}]."""
        check_json_owned(commands)
        self.run(["-j", *(["-c"] if check else []), "-f", "-"], stdin=json.dumps({"nftables": list(commands)}))

    def list_table(self, family: str, table: str, *, elements: bool = True) -> Listing | None:
        """`nft -j list table`, or None when the table does not exist. Without
        `elements`, sets and maps come without their contents (`-t`), which is quick."""
        if not _owned(table):
            raise ForeignTable(f"table {table!r} is not medlb's")
        try:
            out = self.run(["-j", *([] if elements else ["-t"]), "list", "table", family, table])
        except NftError as error:
            if "No such file or directory" in str(error):
                return None
            raise
        listing: Listing = json.loads(out)
        return listing

    def list_map(self, family: str, table: str, name: str) -> Listing:
        """`nft -j list map`: one map with its elements (a DR service's pins)."""
        if not _owned(table):
            raise ForeignTable(f"table {table!r} is not medlb's")
        listing: Listing = json.loads(self.run(["-j", "list", "map", family, table, name]))
        return listing

    def terse(self) -> Listing:
        """`nft -j -t list ruleset`: every table's objects and counter values, without
        set and map elements. nft 1.0.6 fetches a table's elements for `list table -t`
        or `list counters table` (about 2 s with a 65,537-slot map); this takes 60 ms.
        Read only; callers keep to medlb's tables (`table_objects`, `counters`)."""
        listing: Listing = json.loads(self.run(["-j", "-t", "list", "ruleset"]))
        return listing

    def tables(self) -> list[tuple[str, str]]:
        """medlb's tables present in the kernel, as (family, name); others are not listed."""
        listing = json.loads(self.run(["-j", "list", "tables"]))
        return [(item["table"]["family"], item["table"]["name"]) for item in listing.get("nftables", ())
                if "table" in item and _owned(item["table"]["name"])]

    def delete_table(self, family: str, table: str) -> bool:
        """Delete one medlb table; False when it was not there."""
        if not _owned(table):
            raise ForeignTable(f"table {table!r} is not medlb's; refused")
        if (family, table) not in self.tables():
            return False
        self.apply(f"delete table {family} {table}\n")
        return True

    def delete_tables(self) -> list[tuple[str, str]]:
        """Delete every medlb table, in one transaction; the ones deleted."""
        present = self.tables()
        if present:
            self.apply("".join(f"delete table {family} {name}\n" for family, name in present))
        return present
