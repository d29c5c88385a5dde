"""The layers of docs/architecture.md: each module imports only from the layers below it.

Computed from the source, ``TYPE_CHECKING`` and in-function imports included: a type-only
import still ties a module to what it names, and an upward one is how knots start.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import from its own layer (without a cycle) and from below.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundations",
        (
            "drivers",
            "labrt.model",
            "labrt.clock",
            "labrt.config",
            "labrt.protocol",
            "labrt.logs",
        ),
    ),
    ("store", ("labrt.store",)),
    ("engine", ("labrt._engine",)),
    ("author API", ("labrt.lab", "labrt.users", "labrt.task_functions", "labrt.access", "labrt")),
    ("edges", ("labrt.web", "labrt.client", "labrt.fake", "labrt.loader")),
    ("runtime", ("labrt.runtime",)),
    # What starts a runtime: the command line and the authors' testing kit.
    ("entry points", ("labrt.cli", "labrt.__main__", "labrt.testing")),
]


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("labrt", "drivers"):
        for path in (ROOT / package).rglob("*.py"):
            if "templates" in path.parts:  # copied into a new lab, never imported from here
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The labrt and drivers modules ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.add(child if child in MODULES else base)
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    best: tuple[int, int] | None = None  # (length of the matching prefix, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and architecture.md"
    return best[1]


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_module_imports_from_a_layer_above():
    upward = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, if any (depth-first search on the whole graph)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_no_import_cycles():
    assert _cycle(GRAPH) is None, " -> ".join(_cycle(GRAPH) or [])


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycle(graph) == expected


def test_the_graph_sees_type_checking_and_relative_imports():
    # Probes that the parser really reads what the rules are about.
    assert "labrt._engine.registry" in GRAPH["labrt._engine.sessions"]  # TYPE_CHECKING only
    assert "labrt.runtime" in GRAPH["labrt.cli"]  # an import inside a function
    assert "labrt.model" in GRAPH["labrt._engine.context"]  # from ..model import
    assert "drivers" in GRAPH["labrt.config"]


def test_the_engine_is_private():
    """Engine modules live in labrt._engine: an author sees from the name that they are not
    the API."""
    engine = [m for m in MODULES if _layer(m) == 2]
    assert engine and all(m.startswith("labrt._engine") for m in engine)
