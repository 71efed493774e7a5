"""The package's import graph, read from the source with ``ast`` (nothing is imported): no cycles, and no import
that runs against the layers below.

Every ``import``/``from … import`` of a ``lightpref`` module counts, at module level or inside a function, except
those under ``if TYPE_CHECKING:`` (annotations only, never executed). A name imported from a package counts as an
import of its submodule when one exists (``from lightpref.data import cache``), and of the package's ``__init__``
otherwise.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lightpref

ROOT = Path(lightpref.__file__).parent

# Lower layers never import higher ones; a module may import its own layer (the graph must still be acyclic).
# A module's layer is that of the longest prefix naming it; the package's own ``__init__`` sits with the losses it
# re-exports.
LAYERS: list[tuple[str, ...]] = [
    ("lightpref.errors", "lightpref.io", "lightpref.testing", "lightpref.moved", "lightpref.views", "lightpref.batch",
     "lightpref.examples"),
    ("lightpref", "lightpref.losses", "lightpref.data", "lightpref.models", "lightpref.run"),
    ("lightpref.training", "lightpref.reward"),
    ("lightpref.evaluation",),
    ("lightpref.iterate", "lightpref.commands", "lightpref.cli", "lightpref.__main__", "lightpref.reward.cli"),
]


def module_name(path: Path) -> str:
    parts = ["lightpref", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(name: str) -> set[str]:
    """The lightpref modules ``name`` imports, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    found.add(f"{base}.{alias.name}")
                elif base in MODULES:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


GRAPH = {name: imported_modules(name) for name in MODULES}


def layer(name: str) -> int:
    """The layer of the longest prefix in :data:`LAYERS` that names ``name`` (``lightpref`` names only itself)."""
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes
               if name == prefix or (prefix != "lightpref" and name.startswith(prefix + "."))]
    assert matches, f"{name} is in no layer of tests/test_architecture.py: add it to LAYERS"
    return max(matches)[1]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first repeated last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := walk(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_the_reader_finds_imports_of_every_kind():
    """The graph is only as good as its reader: spot-check an import of each form the package uses."""
    assert "lightpref.training.records" in GRAPH["lightpref.training.module"]  # from … import name
    assert "lightpref.data.cache" in GRAPH["lightpref.data.datamodule"]  # from package import submodule
    assert "lightpref.data.ranked" in GRAPH["lightpref.data.formats"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert (layer("lightpref.reward.cli"), layer("lightpref.reward.module"), layer("lightpref")) == (4, 2, 1)


def test_no_import_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_upward_imports():
    upward = sorted(f"{source} imports {target} (layer {layer(source)} < {layer(target)})"
                    for source, targets in GRAPH.items() for target in targets if layer(target) > layer(source))
    assert not upward, "imports against the layers:\n" + "\n".join(upward)
