"""The package's layers: every module imports only its own layer or those below, and no import cycle exists.

Read from the source (AST), every import counted: top-level, inside functions, and under
``TYPE_CHECKING`` alike, since each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vlalign

PACKAGE = Path(vlalign.__file__).parent

# Lowest first. A module's layer is that of the longest prefix listed.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "io", "lazy", "config", "seeding", "processes", "version", "data", "text", "models"),  # foundation
    ("logps", "losses", "rewards"),  # math: the scorer, losses, rewards
    ("methods",),  # one plug-in per method
    ("train", "eval", "generate"),  # orchestration
    ("world",),  # the synthetic world
    ("cli", "demo", "report", "inspect", "__main__", "__init__", "recipes"),  # the application
]
NAMES = ["foundation", "math", "methods", "orchestration", "world", "application"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(("vlalign", *parts))


def layer(module: str) -> int:
    head = module.split(".")[1] if module != "vlalign" else "__init__"
    for index, heads in enumerate(LAYERS):
        if head in heads:
            return index
    raise AssertionError(f"{module}: in no layer; add it to LAYERS")


def imports(path: Path) -> set[str]:
    """The vlalign modules ``path`` imports (``from vlalign.x import y`` counts as vlalign.x, or
    vlalign.x.y when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "vlalign"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vlalign":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p): p for p in FILES}
GRAPH = {name: imports(path) - {name} for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down(name):
    upward = [f"{dep} ({NAMES[layer(dep)]})" for dep in sorted(GRAPH[name]) if layer(dep) > layer(name)]
    assert not upward, f"{name} ({NAMES[layer(name)]}) imports a higher layer: {', '.join(upward)}"


def test_nothing_below_the_application_imports_the_world():
    world = LAYERS.index(("world",))
    offenders = [f"{name} -> {dep}" for name, deps in GRAPH.items() for dep in deps
                 if dep.startswith("vlalign.world") and layer(name) < world]
    assert not offenders


def test_no_import_cycle():
    """Depth-first search over the module graph; a package and its own ``__init__`` re-exports are one node."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def edges(name: str) -> set[str]:
        # A package's __init__ importing its own submodules is how it re-exports them, not a cycle.
        return {d for d in GRAPH.get(name, ()) if not d.startswith(name + ".")}

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(edges(name)):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep in MODULES and dep not in state:
                visit(dep)
        stack.pop()
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name)


def test_the_check_catches_an_upward_import(tmp_path):
    """The rules above fail on a module that breaks them."""
    bad = tmp_path / "bad.py"
    bad.write_text("from vlalign.world.make import make_world\n")
    assert "vlalign.world.make" in imports(bad) and layer("vlalign.world.make") > layer("vlalign.logps")
