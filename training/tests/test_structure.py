"""The training package's modules import each other without cycles (lazy imports included)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "headpose_training"


def imports_of(source: str) -> set[str]:
    """Modules of the package a source imports, wherever the import statement sits."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("headpose_training.")}
    return found


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target] if target in path else [target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_training_modules_have_no_import_cycle():
    graph = {
        path.stem: imports_of(path.read_text()) - {path.stem}
        for path in PACKAGE.glob("*.py")
        if path.stem != "__init__"
    }
    assert {"train", "export", "checkpoint", "or_fit"} <= set(graph)
    assert cycle_in(graph) is None, f"import cycle: {' -> '.join(cycle_in(graph))}"


@pytest.mark.parametrize(
    ("sources", "cycle"),
    [
        ({"a": "from headpose_training.b import x", "b": "import headpose_training.a"}, True),
        (
            {
                "a": "def f():\n    from headpose_training import b",
                "b": "from headpose_training.a import f",
            },
            True,
        ),
        ({"a": "from headpose_training.b import x", "b": "import numpy"}, False),
    ],
)
def test_the_cycle_check_sees_lazy_and_package_imports(sources, cycle):
    graph = {name: imports_of(text) for name, text in sources.items()}
    assert (cycle_in(graph) is not None) == cycle
