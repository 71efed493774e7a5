"""The package's import graph has no cycles and no upward imports, read from the source with ``ast`` (nothing imported).

Every ``import`` counts, at module level or inside a function, except those under ``if TYPE_CHECKING:`` (they run
only for the type checker, so they cannot form an import-time cycle or pull a layer in at run time).

The layers, lowest first; a module may import from its own part or from a lower layer, never from a higher one or
from another part of the same layer:

0. foundation — the batch layout, prompt views, file I/O, errors, moved paths, test helpers, shipped examples;
1. ``run`` (checkpoints, guards, sharding, strategies) and ``losses`` (tensor maths on log-prob records);
2. ``models`` (loading, adapters, export);
3. ``data`` (records → tokenised pairs → batches);
4. ``training`` (the LightningModule and its step);
5. ``reward`` and ``evaluation`` (reward models, generation, judging), built on training;
6. ``commands`` (the pieces every command shares) and ``lightpref.reward.cli`` (the reward command);
7. ``iterate`` and ``cli`` (the commands themselves), and the package's face ``lightpref/__init__.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lightpref"

LAYERS: dict[str, tuple[int, tuple[str, ...]]] = {
    "foundation": (0, ("lightpref.batch", "lightpref.views", "lightpref.io", "lightpref.errors", "lightpref.moved",
                       "lightpref.testing", "lightpref.examples")),
    "run": (1, ("lightpref.run",)),
    "losses": (1, ("lightpref.losses",)),
    "models": (2, ("lightpref.models",)),
    "data": (3, ("lightpref.data",)),
    "training": (4, ("lightpref.training",)),
    "reward": (5, ("lightpref.reward",)),
    "evaluation": (5, ("lightpref.evaluation",)),
    "commands": (6, ("lightpref.commands", "lightpref.reward.cli")),
    "iterate": (7, ("lightpref.iterate",)),
    "cli": (7, ("lightpref.cli", "lightpref.__main__", "lightpref")),
}
"""Each part of the package: its layer and the module prefixes it holds (the longest matching prefix decides)."""


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for statement in node.body for child in ast.walk(statement))
    return skipped


def imported_names(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """``(line, dotted name)`` of everything the module imports from ``lightpref``; for ``from a import b`` both
    ``a.b`` (in case ``b`` is a module) and ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def import_graph() -> dict[str, dict[str, int]]:
    """For each module, the package modules it imports and the line of each import."""
    modules = module_files()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for line, imported in imported_names(name, path):
            target = imported
            while target and target not in modules:  # `from a import b`: b is a module, or a name in module a
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("lightpref"):
                edges.setdefault(target, line)
    return graph


def part_of(module: str) -> str:
    """The part of :data:`LAYERS` that holds ``module``."""
    best, length = "", -1
    for part, (_, prefixes) in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = part, len(prefix)
    if not best:
        raise AssertionError(f"{module} is in no part of LAYERS; add its folder there")
    return best


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, {})):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """Each import that goes up a layer or sideways into another part of the same layer, named by file and line."""
    files = module_files()
    found = []
    for module, edges in sorted(graph.items()):
        source = part_of(module)
        for target, line in sorted(edges.items()):
            destination = part_of(target)
            if destination == source or LAYERS[destination][0] < LAYERS[source][0]:
                continue
            found.append(f"{files[module].relative_to(PACKAGE.parent)}:{line}: {module} ({source}, layer "
                         f"{LAYERS[source][0]}) imports {target} ({destination}, layer {LAYERS[destination][0]})")
    return found


def test_the_package_has_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_imports_from_a_higher_layer_or_a_sibling_part():
    violations = layer_violations(import_graph())
    assert not violations, "imports against the layering (see this test's docstring):\n" + "\n".join(violations)


def test_every_module_is_in_a_layer():
    assert {part_of(module) for module in module_files()} <= set(LAYERS)


@pytest.mark.parametrize("graph, expected", [
    ({"lightpref.a": {"lightpref.b": 1}, "lightpref.b": {"lightpref.c": 2}, "lightpref.c": {"lightpref.a": 3}},
     ["lightpref.a", "lightpref.b", "lightpref.c", "lightpref.a"]),
    ({"lightpref.a": {"lightpref.b": 1}, "lightpref.b": {}}, None),
])
def test_a_cycle_is_found_and_named(graph, expected):
    assert find_cycle(graph) == expected


def test_an_upward_import_is_named_with_its_line():
    graph = {"lightpref.data.formats": {"lightpref.training.module": 7}, "lightpref.training.module": {}}
    (violation,) = layer_violations(graph)
    assert violation.startswith("lightpref/data/formats.py:7: lightpref.data.formats (data, layer 3) imports "
                                "lightpref.training.module (training, layer 4)")
