"""The config file as the page shows and edits it: the text on disk with every inline
secret masked and the line numbers kept, the masks put back for Apply, and the diff.

The browser never receives a secret: each value under a secret key (`token`,
`password_hash`, ...) is replaced by the mask, in place, so line N of the masked text
is line N on disk and the check's line numbers point at the right line in the
editor. An edited text that still holds a mask keeps the secret that stood there on
disk (found by its path, list items by their `name`), byte for byte where it was one
line; a mask medlb cannot place is a problem at its line, and the file is not written.
Sans-I/O: texts in, texts and problems out.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

import yaml

from medlb.admin.views import MASK, SECRET_KEYS
from medlb.config import Problem

NULL = "tag:yaml.org,2002:null"
#: What stands in the text for a secret: quoted, since a plain `*` starts a YAML alias.
SHOWN = f'"{MASK}"'
#: A secret's identity: its keys, list items by their `name` where they have one.
Where = tuple[str, ...]
#: A value too short to be a real secret is not hunted through the rest of the text
#: (replacing every "a" would mangle the file); such a value is refused by the check.
SHORTEST_HUNTED = 8
#: The secret keys as a line shows them, for a file that is not YAML at all.
SECRET_LINE = re.compile(r"^(\s*(?:-\s+)?[\"']?(?:" + "|".join(sorted(SECRET_KEYS)) + r")[\"']?\s*:[ \t]*)(?=[^\s#])(.*?)\s*$")


@dataclass(frozen=True)
class Secret:
    where: Where
    path: str  # as the check names it: admin.users[0].password_hash
    line: int  # 1-based
    start: int  # the value's characters in the text, after any anchor or tag
    end: int
    value: str

    def raw(self, text: str) -> str:
        return text[self.start:self.end]


def find_secrets(text: str) -> list[Secret] | None:
    """Every scalar under a secret key, each once (an alias is not a second place);
    None when the text is not YAML."""
    loader = yaml.SafeLoader(text)
    found: list[Secret] = []
    seen: set[int] = set()

    def walk(node: yaml.Node, where: Where, path: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = key_node.value
                child = f"{path}.{key}" if path else key
                if key in SECRET_KEYS and isinstance(value_node, yaml.ScalarNode):
                    if id(value_node) not in seen and value_node.value and value_node.tag != NULL:
                        seen.add(id(value_node))
                        found.append(_secret(text, value_node, where + (key,), child))
                else:
                    walk(value_node, where + (key,), child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, where + (_item_name(item, index),), f"{path}[{index}]")

    try:
        root = loader.get_single_node()
        if root is not None:
            walk(root, (), "")
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    return found


def _item_name(item: yaml.Node, index: int) -> str:
    """A list item by its `name` (users and tokens have one), so that Apply finds the
    secret of user alice even after the list was reordered; else by its place."""
    if isinstance(item, yaml.MappingNode):
        for key_node, value_node in item.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "name" and isinstance(value_node,
                                                                                                 yaml.ScalarNode):
                return f"name={value_node.value}"
    return f"#{index}"


def _secret(text: str, node: yaml.ScalarNode, where: Where, path: str) -> Secret:
    start, end = node.start_mark.index, node.end_mark.index
    # The node starts at its anchor (&name) or tag (!!str) when it has one: keep those.
    while start < end and text[start] in "&!":
        match = re.compile(r"\S+\s+").match(text, start, end)
        if match is None:
            break
        start = match.end()
    return Secret(where, path, node.start_mark.line + 1, start, end, str(node.value))


def _replace(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _shown(raw: str) -> str:
    """The mask for a value, with the value's line breaks after it, so that the lines
    below keep their numbers (a block scalar spans several)."""
    return SHOWN + "\n" * raw.count("\n")


def mask(text: str, known: Iterable[str] = ()) -> str:
    """The text with every secret masked, lines kept. `known`: secrets the text may
    also hold elsewhere (the running config's), hunted through comments too."""
    secrets = find_secrets(text)
    if secrets is None:  # not YAML: mask what looks like a secret key's line
        masked = "".join(_mask_line(line) for line in text.splitlines(keepends=True))
    else:
        masked = _replace(text, ((s.start, s.end, _shown(s.raw(text))) for s in secrets))
        known = [*known, *(s.value for s in secrets)]
    # The same value written again elsewhere (a comment, an old line kept for later).
    return hide(masked, known)


def hide(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of these secrets masked (longest first, so that
    one secret inside another leaves nothing of either); one of several lines is
    left to the structural mask, so the lines keep their numbers."""
    values = {v.strip() for v in secrets}
    for value in sorted((v for v in values if len(v) >= SHORTEST_HUNTED and "\n" not in v), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def secret_values(text: str) -> list[str]:
    """The inline secrets of a file (none when it is not YAML)."""
    return [secret.value for secret in find_secrets(text) or []]


def _mask_line(line: str) -> str:
    ending = line[len(line.rstrip("\r\n")):]
    match = SECRET_LINE.match(line.rstrip("\r\n"))
    return match.group(1) + SHOWN + ending if match else line


def unmask(edited: str, disk: str) -> tuple[str, list[Problem]]:
    """The edited text with each mask replaced by the secret that stands at the same
    path on disk; a mask with no secret there to keep is a problem at its line."""
    problems: list[Problem] = []
    if MASK not in edited:
        return edited, problems
    in_edit = find_secrets(edited)
    found_on_disk = find_secrets(disk)
    on_disk = {s.where: s for s in found_on_disk or []}
    why = ("the file on disk has no secret here to keep" if found_on_disk is not None
           else "the file on disk is not YAML, so medlb cannot find the secret it stands for")
    spans = []
    for secret in in_edit or []:
        if secret.value != MASK:
            continue
        kept = on_disk.get(secret.where)
        if kept is None:
            problems.append(Problem(secret.path, secret.line, f"holds the mask {MASK}, but {why}; "
                                                              "write the secret itself"))
            continue
        raw = kept.raw(disk)
        # One line goes back as it was written; a block scalar as one quoted line, so
        # that the lines below keep the numbers the check reports.
        spans.append((secret.start, secret.end, raw if "\n" not in raw else json.dumps(kept.value)))
    restored = _replace(edited, spans)
    hunted = _hunted_lines(disk)
    reported = {problem.line for problem in problems}
    lines = restored.splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        if MASK in line and line.rstrip("\r\n") in hunted:  # a comment holding a secret, as it was
            lines[number - 1] = hunted[line.rstrip("\r\n")] + line[len(line.rstrip("\r\n")):]
        elif MASK in line and number not in reported:
            problems.append(Problem("", number, f"holds the mask {MASK} where medlb cannot tell which secret it "
                                                "stands for; write the secret itself or delete the mask"))
    return "".join(lines), problems


def _hunted_lines(disk: str) -> dict[str, str]:
    """Masked line -> line on disk, for the lines whose mask stands for a secret
    written again outside its key (a comment): Apply keeps such a line as it was."""
    secrets = find_secrets(disk)
    if secrets is None:
        return {}
    keyed = {number for s in secrets for number in range(s.line, s.line + s.raw(disk).count("\n") + 1)}
    pairs = zip(mask(disk).splitlines(), disk.splitlines())
    return {shown: line for number, (shown, line) in enumerate(pairs, 1) if shown != line and number not in keyed}


def diff(disk: str, restored: str, known: Iterable[str] = ()) -> str:
    """What Apply would change in the file on disk, as a unified diff of the masked
    texts: the lines are compared as written, so a secret typed over a mask shows as a
    changed line, but its value shows on neither side."""
    before, after = disk.splitlines(), restored.splitlines()
    known = [*known, *secret_values(disk)]
    shown_before, shown_after = mask(disk, known).splitlines(), mask(restored, known).splitlines()
    out = []
    for group in difflib.SequenceMatcher(None, before, after, autojunk=False).get_grouped_opcodes(3):
        (_, i1, _, j1, _), (_, _, i2, _, j2) = group[0], group[-1]
        out.append(f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                out += [" " + line for line in shown_after[b1:b2]]
                continue
            out += ["-" + line for line in shown_before[a1:a2]]
            out += ["+" + line for line in shown_after[b1:b2]]
    return "\n".join(["--- on disk", "+++ after Apply", *out]) if out else ""


def _range(start: int, stop: int) -> str:
    """A hunk's lines as unified diffs write them: first line (1-based) and count."""
    length = stop - start
    first = start + 1 if length else start
    return str(first) if length == 1 else f"{first},{length}"


def located(problems: Iterable[Problem]) -> list[dict[str, object]]:
    """Problems as the page places them: at their line (None: the file as a whole)."""
    return [{"line": p.line, "path": p.path, "message": p.message, "text": str(p)} for p in problems]
