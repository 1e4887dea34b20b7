"""The package's shape (DESIGN.md): an import graph without circles or upward edges, small modules,
and Lightning's / torchmetrics' private attributes touched in one module each."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PKG = ROOT / "lt_lightning"
FILES = {p: p.read_text() for p in sorted(PKG.rglob("*.py"))}


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


MODULES = {_module(p): p for p in FILES}


def _resolve(name: str) -> str | None:
    """The most specific module of the package an import of ``name`` executes."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    """Every lt_lightning module ``path`` imports, at any depth of the file (deferred imports count)."""
    mod = _module(path)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(FILES[path])):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod if is_pkg else mod.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                src = f"{base}.{node.module}" if node.module else base
            else:
                src = node.module or ""
            targets = [f"{src}.{a.name}" for a in node.names] + [src]
        for t in targets:
            if t.startswith("lt_lightning"):
                r = _resolve(t)
                if r and r != mod:
                    out.add(r)
    return out


GRAPH = {_module(p): _imports(p) for p in FILES}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for n in GRAPH.get(m, ()):
            if n == goal:
                return True
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return False


def test_the_import_graph_has_no_circle():
    # a package's __init__ importing its own submodules is not a circle: submodules never import it back
    circles = []
    for mod, deps in GRAPH.items():
        for dep in deps:
            if dep.startswith(mod + ".") and MODULES[mod].name == "__init__.py":
                continue
            if _reaches(dep, mod):
                circles.append(f"{mod} -> {dep}")
    assert not circles, circles


def test_submodules_never_import_their_own_package():
    bad = [
        f"{mod} imports {dep}"
        for mod, deps in GRAPH.items()
        for dep in deps
        if mod.startswith(dep + ".") and MODULES[dep].name == "__init__.py"
    ]
    assert not bad, bad


@pytest.mark.parametrize(
    "lower, upper",
    [
        ("lt_lightning.spec", "lt_lightning."),
        ("lt_lightning.nn", "lt_lightning.models"),
        ("lt_lightning.losses", "lt_lightning.models"),
        ("lt_lightning.optim", "lt_lightning.models"),
        ("lt_lightning.data", "lt_lightning.models"),
        ("lt_lightning.data", "lt_lightning.metrics"),
        ("lt_lightning.data", "lt_lightning.callbacks"),
        ("lt_lightning.metrics", "lt_lightning.data"),
        ("lt_lightning.metrics", "lt_lightning.models"),
        ("lt_lightning.models", "lt_lightning.callbacks"),
        ("lt_lightning.models", "lt_lightning.cli"),
        ("lt_lightning.callbacks", "lt_lightning.models"),
        ("lt_lightning.callbacks", "lt_lightning.cli"),
        ("lt_lightning.loops", "lt_lightning.models"),
    ],
)
def test_no_import_points_up_a_floor(lower, upper):
    bad = [
        f"{mod} -> {dep}"
        for mod, deps in GRAPH.items()
        if mod == lower or mod.startswith(lower + ".")
        for dep in deps
        if dep.startswith(upper) and not (dep == lower or dep.startswith(lower + "."))
    ]
    assert not bad, bad


def test_no_module_is_over_500_lines_and_the_base_module_is_small():
    long = {str(p.relative_to(ROOT)): n for p, text in FILES.items() if (n := len(text.splitlines())) > 500}
    assert not long, long
    assert len(FILES[PKG / "models" / "base.py"].splitlines()) <= 250


PRIVATE = (
    "_combined_loader",
    "_given_hyperparameters",
    "_parse_ckpt_path",
    "_sync_dist",
    "_reduce_states",
    "_to_sync",
    "_should_unsync",
    "_computed",
    "batch_progress",
    "_checkpoint_connector",
    "_data_connector",
    "_logger_connector",
    "_callback_connector",
    "_accelerator_connector",
)


@pytest.mark.parametrize("name", PRIVATE)
def test_private_lightning_and_torchmetrics_attributes_live_in_one_module(name):
    pattern = re.compile(rf"\b{re.escape(name)}\b")
    users = [str(p.relative_to(ROOT)) for p, text in FILES.items() if pattern.search(text)]
    assert len(users) <= 1, users


def test_every_literal_is_written_out():
    # Literal[SOME_TUPLE] is invalid for a type checker: a Literal lists its values
    bad = [
        f"{p.relative_to(ROOT)}:{i}"
        for p, text in FILES.items()
        for i, line in enumerate(text.splitlines(), 1)
        if re.search(r"Literal\[[A-Z_][A-Z0-9_]*(\s*\+[^\]]*)?\]", line)
    ]
    assert not bad, bad
