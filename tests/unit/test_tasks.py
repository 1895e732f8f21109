"""No task is started and forgotten: the event loop holds tasks only weakly.

ruff's RUF006 finds `loop.create_task(...)` as a statement but not
`asyncio.get_running_loop().create_task(...)` nor a lambda that returns the task, so
this walks the source itself. Start background work with medlb.tasks.spawn.
"""

from __future__ import annotations

import ast
from pathlib import Path

import medlb

STARTERS = {"create_task", "ensure_future"}


def _starts_a_task(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr in STARTERS)
        or (isinstance(node.func, ast.Name) and node.func.id in STARTERS))


def test_no_task_is_started_without_keeping_a_reference():
    forgotten = []
    for path in Path(medlb.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            # A statement whose value is dropped, or a callback (a signal handler) that
            # returns the task to a caller that drops it.
            if isinstance(node, (ast.Expr, ast.Lambda)) and _starts_a_task(node.body if isinstance(node, ast.Lambda)
                                                                             else node.value):
                forgotten.append(f"{path.name}:{node.lineno}")
    assert forgotten == []
