"""The layering of npgrad's modules, read from their source: imports run one way only."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).parents[1] / "src" / "npgrad"


def imports_of(path: Path) -> tuple[set[str], list[str]]:
    """Return the npgrad modules ``path`` imports at module level, and any imported elsewhere."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    nested: list[str] = []
    module_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "npgrad":
                names = [f"npgrad.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found = [n for n in names if n.split(".")[0] in ("npgrad", "npgrad_scipy")]
        if not found:
            continue
        if id(node) in module_level or _under_type_checking(tree, node):
            top.update(found)
        else:
            nested.extend(found)
    return top, nested


def _under_type_checking(tree: ast.Module, node: ast.AST) -> bool:
    for block in tree.body:
        if (
            isinstance(block, ast.If)
            and "TYPE_CHECKING" in ast.unparse(block.test)
            and any(child is node for child in ast.walk(block))
        ):
            return True
    return False


def graph() -> dict[str, set[str]]:
    modules = {f"npgrad.{path.stem}": path for path in SOURCE.glob("*.py")}
    modules["npgrad"] = modules.pop("npgrad.__init__")
    return {
        name: {target for target in imports_of(path)[0] if target in modules and target != name}
        for name, path in modules.items()
    }


def test_no_module_imports_npgrad_inside_a_function() -> None:
    nested = {path.name: imports_of(path)[1] for path in SOURCE.glob("*.py")}
    assert {name: found for name, found in nested.items() if found} == {}


def test_the_core_never_imports_a_plugin() -> None:
    for path in SOURCE.glob("*.py"):
        top, nested = imports_of(path)
        assert not [m for m in (*top, *nested) if m.startswith("npgrad_scipy")], path.name


def test_imports_have_no_cycle() -> None:
    edges = graph()
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_the_layers_run_the_documented_way() -> None:
    edges = graph()
    # Each module may import only modules of lower layers (or its own).
    layers = [
        {"npgrad.errors", "npgrad._torch_internals"},
        {"npgrad._threads", "npgrad._executors"},
        {"npgrad._convert", "npgrad._batch"},
        {"npgrad._rules"},
        {"npgrad._forward", "npgrad._numerical"},
        {"npgrad._calls"},
        {"npgrad._gradients"},
        {"npgrad._tangents"},
        {"npgrad._vmap"},
        {"npgrad._function"},
        {"npgrad._library"},
        {"npgrad._dispatch"},
        {"npgrad._companions", "npgrad._registry", "npgrad.plugins"},
        {"npgrad._op"},
        {"npgrad.checking", "npgrad._layer"},
        {"npgrad.cli", "npgrad"},
    ]
    rank = {module: k for k, layer in enumerate(layers) for module in layer}
    assert set(rank) == set(edges), "a module missing from the layers: " + str(
        set(edges) ^ set(rank)
    )
    upward = [
        f"{module} -> {target}"
        for module, targets in edges.items()
        for target in targets
        if rank[target] > rank[module]
    ]
    assert upward == []


def test_private_torch_internals_are_used_in_one_module() -> None:
    for path in SOURCE.glob("*.py"):
        if path.name == "_torch_internals.py":
            continue
        text = path.read_text()
        for needle in ("torch._", "_functorch", "_current_level", "_FunctionBase", "_vmapmode"):
            assert needle not in text, f"{path.name} uses {needle}"
