"""The layout holds: imports point down the layers of ARCHITECTURE.md, no cycles, no hidden function-level imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lintwin"

# What each part of the package may import from lintwin (ARCHITECTURE.md, "Layers").
ALLOWED = {
    "errors": set(),
    "core": {"core", "errors"},
    "affine": {"core", "errors"},
    "results": set(),
    "storage": {"core", "errors", "storage"},
    "solvers": {"core", "errors", "solvers", "affine"},
    "measures": {"core", "errors", "solvers", "storage", "measures", "affine", "results"},
    "api": {"core", "errors", "solvers", "storage", "affine"},
    "estimator": {"core", "errors", "solvers", "affine", "api"},
    "networks": {"core", "errors", "storage", "affine", "networks"},
    "experiments": {"core", "errors", "solvers", "storage", "measures", "affine", "api", "networks", "experiments",
                    "results"},
    "cli": {"core", "errors", "solvers", "storage", "measures", "affine", "api", "networks", "experiments", "cli",
            "results", "__init__"},
    "__init__": {"core", "errors", "solvers", "storage", "measures", "affine", "api", "estimator", "results",
                 "experiments"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _lintwin_imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """``(imported lintwin module, at module level)`` for every import of a lintwin module."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports for type checkers only are not run-time dependencies
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            top_level |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names] if node.module is None else [target]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "lintwin" or name.startswith("lintwin."):
                out.append((name, id(node) in top_level))
    return out


def _part(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 or parts[1] not in ALLOWED else parts[1]


def test_imports_point_down_the_layers():
    bad = []
    for module, path in _modules().items():
        for target, _ in _lintwin_imports(module, path):
            src, dst = _part(module), _part(target)
            if dst != src and dst not in ALLOWED[src]:
                bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_function_level_imports_of_lintwin_modules():
    hidden = [f"{module} imports {target} inside a function"
              for module, path in _modules().items() for target, top in _lintwin_imports(module, path) if not top]
    # The package's lazy attribute keeps scikit-learn optional (lintwin.AffineMapRegressor).
    assert hidden == ["lintwin imports lintwin.estimator inside a function"], hidden


def test_no_import_cycles():
    mods = _modules()
    graph = {m: {t for t, _ in _lintwin_imports(m, p)} for m, p in mods.items()}
    resolved = {m: {t if t in mods else t.rsplit(".", 1)[0] for t in targets} & set(mods) - {m}
                for m, targets in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(resolved[m]):
            if t == "lintwin" or m == "lintwin" or m.endswith("__init__"):
                continue
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " → ".join(stack[stack.index(t):] + [t]) if t in stack else t)
            if state.get(t) is None:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(resolved):
        if state.get(m) is None:
            visit(m, [m])
