"""The layer rules of docs/architecture.md, enforced on the source.

The sans-I/O layers (protocols, runtime, config) are what the kernel data plane, the
clustered pair and the fuzzers build on: the day one of them imports asyncio or a
socket, it can no longer be tested in milliseconds or reused outside the event loop.
Every import counts, also one inside a function; an import under `if TYPE_CHECKING:`
counts only where a rule says "at run time".
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "medlb"

SANS_IO = ("asyncio", "socket", "selectors", "ssl", "uvloop", "medlb.proxy", "medlb.admin", "medlb.workers",
           "medlb.health", "medlb.kernel", "medlb.ha", "medlb.app")
#: package -> modules it must never import (a prefix matches its submodules too).
RULES: dict[str, tuple[str, ...]] = {
    "protocols": SANS_IO,
    "runtime": SANS_IO,
    "config": SANS_IO,
    "kernel": ("medlb.proxy", "medlb.admin", "medlb.workers", "medlb.app"),
    "ha": ("medlb.proxy", "medlb.workers"),  # medlb.app for types only (TYPES_ONLY)
    "health": ("medlb.proxy", "medlb.admin", "medlb.workers", "medlb.app"),
}
#: package -> modules it may import for type annotations only (under TYPE_CHECKING).
TYPES_ONLY: dict[str, tuple[str, ...]] = {
    "admin": ("medlb.app",),
    # The pair's sync modules (decisions, persistence) act on the App they are given.
    "ha": ("medlb.app",),
}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at run time) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = "medlb." + ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runtime)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, runtime) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((module, runtime))
            found.extend((f"{module}.{alias.name}", runtime) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, runtime)

    visit(tree, True)
    return found


def matches(module: str, banned: str) -> bool:
    return module == banned or module.startswith(banned + ".")


def package_files(package: str) -> list[Path]:
    folder = SRC / package
    return sorted(folder.rglob("*.py")) if folder.is_dir() else []


@pytest.mark.parametrize("package", sorted(RULES))
def test_a_layer_imports_nothing_above_it(package):
    broken = [f"{path.relative_to(SRC)} imports {module}"
              for path in package_files(package)
              for module, _ in imports(path)
              if any(matches(module, banned) for banned in RULES[package])]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("package", sorted(TYPES_ONLY))
def test_admin_uses_the_app_for_types_only(package):
    broken = [f"{path.relative_to(SRC)} imports {module} at run time"
              for path in package_files(package)
              for module, at_run_time in imports(path)
              if at_run_time and any(matches(module, banned) for banned in TYPES_ONLY[package])]
    assert not broken, "\n".join(broken)


def test_the_rules_see_a_broken_import(tmp_path, monkeypatch):
    """The checker itself: an asyncio import inside a function of runtime/ is found,
    one under TYPE_CHECKING is not counted as a run-time import."""
    fake = tmp_path / "medlb"
    (fake / "runtime").mkdir(parents=True)
    (fake / "runtime" / "bad.py").write_text("def f():\n    import asyncio\n")
    (fake / "admin").mkdir()
    (fake / "admin" / "ok.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                          "    from medlb.app import App\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    with pytest.raises(AssertionError, match="runtime/bad.py imports asyncio"):
        test_a_layer_imports_nothing_above_it("runtime")
    test_admin_uses_the_app_for_types_only("admin")
