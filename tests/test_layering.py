"""The package map of docs/DESIGN.md §0 holds: layers point down, no two packages import each other,
and the library never imports the CLI.

Every import counts, including those inside functions (a lazy import is still a dependency a
reader has to follow); imports under ``if TYPE_CHECKING:`` do not, since they never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "stefaland"

#: Highest first. A package may import its own layer and the layers below it, never above.
LAYERS: dict[str, tuple[str, ...]] = {
    "commands": ("k8s", "predict", "report", "embed", "pull", "paper"),
    "stages": ("finetune", "pretrain", "assemble", "synth"),
    "shared": ("run", "splits", "catalog", "gridded", "products", "sources", "store"),
    "model": ("model", "hbv", "metrics"),
    "base": ("errors", "fileio", "outputs", "progress", "units", "bounds", "divergence", "settings", "yaml_mapping",
             "plugins"),
}
LEVEL = {name: level for level, names in enumerate(LAYERS.values()) for name in names}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for child in node.body for inner in ast.walk(child))
    return skipped


def _targets(node: ast.AST, package: list[str]) -> list[str]:
    """The top-level StefaLand packages an import statement names (``stefaland_cli`` included)."""
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[1] if alias.name.startswith("stefaland.") else alias.name
                for alias in node.names if alias.name.startswith("stefaland")]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = package[:len(package) - (node.level - 1)]
        module = base + (node.module.split(".") if node.module else [])
        return [module[0]] if module else [alias.name for alias in node.names]
    if node.module == "stefaland":
        return [alias.name for alias in node.names]
    if node.module and node.module.startswith("stefaland_cli"):
        return ["stefaland_cli"]
    return [node.module.split(".")[1]] if node.module and node.module.startswith("stefaland.") else []


def _dependencies() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        owner = parts[0].removesuffix(".py")
        tree = ast.parse(path.read_text())
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) not in skipped:
                graph[owner].update(t for t in _targets(node, list(parts[:-1])) if t not in (owner, "__version__"))
    return graph


GRAPH = _dependencies()


def test_every_package_is_on_the_map() -> None:
    packages = {p.name.removesuffix(".py") for p in ROOT.iterdir()
                if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}
    assert packages - set(LEVEL) == set(), "add the new package to docs/DESIGN.md §0 and LAYERS"


@pytest.mark.parametrize("package", sorted(LEVEL))
def test_imports_point_down(package: str) -> None:
    upward = sorted(t for t in GRAPH.get(package, ()) if t in LEVEL and LEVEL[t] < LEVEL[package])
    assert upward == [], f"{package} imports a higher layer: {upward}"


def test_the_library_never_imports_the_cli() -> None:
    assert sorted(p for p, targets in GRAPH.items() if "stefaland_cli" in targets) == []


def test_no_import_cycles_between_packages() -> None:
    """Tarjan's strongly connected components: any component of more than one package is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH.get(node, ()):
            if target not in LEVEL:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for package in sorted(LEVEL):
        if package not in index:
            visit(package)
    assert cycles == []


def test_the_checker_sees_a_planted_upward_import(tmp_path: Path) -> None:
    """The rule can fail: ``run`` importing ``finetune`` is reported."""
    tree = ast.parse("def f():\n    from stefaland.finetune import config\n")
    found = [t for node in ast.walk(tree) for t in _targets(node, ["run"])]
    assert found == ["finetune"] and LEVEL["finetune"] < LEVEL["run"]
