"""The project's modules form a plain hierarchy: no import cycles, none hidden inside functions,
and settings import no application code."""

import ast
from pathlib import Path

import pytest

from agentidp.devenv import ROOT

pytestmark = pytest.mark.django_db(databases=[])

PACKAGES = ("agentidp", "organizations", "agents", "credentials", "oidc", "compliance", "webhooks")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts or "management" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _ours(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(tree: ast.Module, modules: dict[str, Path]) -> tuple[set[str], list[int]]:
    """Modules of ours imported at module level, and lines importing ours inside functions."""
    top: set[str] = set()
    nested: list[int] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        return [f"{base}.{alias.name}" for alias in node.names] + [base]

    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names = [m for m in (_ours(t, modules) for t in targets(node)) if m]
        if not names:
            continue
        if node in tree.body:
            top.update(names)
        elif not any(
            isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef) and node in ast.walk(parent)
            for parent in ast.walk(tree)
        ):
            top.update(names)  # under `if TYPE_CHECKING:` or similar
        else:
            nested.append(node.lineno)
    return top, nested


def test_no_import_cycles_and_none_hidden_in_functions() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    hidden: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        top, nested = _imports(tree, modules)
        graph[name] = {m for m in top if m != name and not name.startswith(f"{m}.")}
        # apps.py connects signals in ready(), after every app is loaded: the one allowed place
        if not path.name == "apps.py":
            hidden += [f"{path.relative_to(ROOT)}:{line}" for line in nested]
    assert hidden == [], f"imports inside functions: {hidden}"

    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == [], cycles


def test_settings_import_no_application_code() -> None:
    modules = _modules()
    tree = ast.parse((ROOT / "agentidp" / "settings.py").read_text())
    top, nested = _imports(tree, modules)
    assert top == set() and nested == []
