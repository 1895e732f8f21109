"""The config file as the page shows it: secrets masked wherever YAML lets them be
written, lines kept, masks put back for Apply, the diff."""

from __future__ import annotations

import difflib

import yaml

from medlb.admin.config_text import MASK, diff, mask, unmask

TOKEN = "ops-token-0123456789abcdef"
BLOCK = "block-token-0123456789abc"

WRITTEN = f"""admin:
  token: &ops {TOKEN}
  tokens:
    - name: ro
      token: |
        {BLOCK}
      role: viewer
    - name: old
      token: !!str 'x-{TOKEN}'
# kept for the rollback: {TOKEN}
services: []
"""


def test_every_way_of_writing_a_secret_is_masked_and_every_line_keeps_its_number():
    shown = mask(WRITTEN)
    assert TOKEN not in shown and BLOCK not in shown
    assert len(shown.splitlines()) == len(WRITTEN.splitlines())
    lines = shown.splitlines()
    assert lines[1] == f'  token: &ops "{MASK}"'  # the anchor stays
    assert lines[4] == f'      token: "{MASK}"' and lines[5] == ""  # the block's line is kept, empty
    assert lines[8] == f'      token: !!str "{MASK}"'
    assert lines[9] == f"# kept for the rollback: {MASK}"
    assert lines[10] == "services: []"


def test_masks_left_in_place_bring_back_the_same_values():
    restored, problems = unmask(mask(WRITTEN), WRITTEN)
    assert problems == []
    assert yaml.safe_load(restored) == yaml.safe_load(WRITTEN)
    assert len(restored.splitlines()) == len(WRITTEN.splitlines())  # the check's lines match the editor's
    assert restored.splitlines()[1] == WRITTEN.splitlines()[1]  # one line: byte for byte
    assert restored.splitlines()[9] == WRITTEN.splitlines()[9]  # the comment as it was


def test_a_mask_follows_its_list_item_by_name_not_by_place():
    shown = mask(WRITTEN).splitlines()
    swapped = "\n".join(shown[:3] + shown[7:9] + shown[3:7] + shown[9:]) + "\n"
    restored, problems = unmask(swapped, WRITTEN)
    assert problems == []
    tokens = {t["name"]: t["token"] for t in yaml.safe_load(restored)["admin"]["tokens"]}
    assert tokens == {"ro": BLOCK + "\n", "old": "x-" + TOKEN}


def test_a_mask_with_no_secret_behind_it_is_a_problem_at_its_line():
    edited = mask(WRITTEN).replace("name: old", "name: new")
    _, problems = unmask(edited, WRITTEN)
    assert [(p.path, p.line) for p in problems] == [("admin.tokens[1].token", 9)]
    _, problems = unmask(f'services: []\n# "{MASK}"\n', WRITTEN)
    assert [p.line for p in problems] == [2]
    _, problems = unmask(mask(WRITTEN), "admin: [\n")
    assert [(p.line, "the file on disk is not YAML" in p.message) for p in problems] == [
        (2, True), (5, True), (9, True), (10, False)]  # and the comment's mask, which stands for no key


def test_a_file_that_is_not_yaml_still_has_its_secret_lines_masked():
    broken = f"admin:\n  token: {TOKEN}\n  users: [\n    - password_hash: 'scrypt$x'\n"
    shown = mask(broken)
    assert TOKEN not in shown and "scrypt$x" not in shown
    assert shown.splitlines()[1:] == [f'  token: "{MASK}"', "  users: [", f'    - password_hash: "{MASK}"']


def test_the_diff_is_a_unified_diff_that_never_shows_a_secret():
    plain_before = "a: 1\nb: 2\nc: 3\n" * 5
    plain_after = plain_before.replace("b: 2", "b: 3", 1) + "d: 4\n"
    expected = difflib.unified_diff(plain_before.splitlines(), plain_after.splitlines(), "on disk", "after Apply",
                                    lineterm="")
    assert diff(plain_before, plain_after) == "\n".join(expected)
    assert diff(WRITTEN, WRITTEN) == ""
    typed = WRITTEN.replace(f"&ops {TOKEN}", "&ops a-new-token-0123456789")
    changes = [line for line in diff(WRITTEN, typed).splitlines()[2:] if line[:1] in "+-"]
    assert changes == [f'-  token: &ops "{MASK}"', f'+  token: &ops "{MASK}"']
