"""DESIGN.md's architecture, checked: layers, lazy optional imports, a light import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "holter"

LAYERS = {
    "holter.errors": 0,
    "holter.config": 0,
    "holter._clock": 0,
    "holter._version": 0,
    "holter.model": 0,
    "holter.core": 1,
    "holter.sources": 2,
    "holter.instrument": 2,
    "holter.store": 3,
    "holter.analysis": 4,
    "holter.alerting": 4,
    "holter.export": 5,
    "holter.reports": 5,
    "holter.dashboard": 5,
    "holter.web": 5,
    "holter.monitor": 6,
    "holter.testing": 6,
    "holter": 6,
    "holter.cli": 7,
    "holter.__main__": 7,
}

OPTIONAL = {
    "numpy", "psutil", "rich", "textual", "jinja2", "httpx", "opentelemetry", "click",
    "prometheus_client", "requests", "aiohttp", "psycopg", "playwright", "matplotlib",
}
# Modules that `import holter` never imports may import optional libraries at top level.
TOP_LEVEL_OPTIONAL_OK = ("holter.cli", "holter.dashboard", "holter.web", "holter.reports",
                         "holter.export")


def layer_of(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in LAYERS:
            return LAYERS[name]
    raise AssertionError(f"{module} is in no layer; add it to LAYERS and DESIGN.md")


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(tree: ast.AST):
    """Yield (imported module, at top level?, node) for every import in a module."""
    top = set()
    for node in getattr(tree, "body", []):
        top.add(id(node))
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks count as top level
            for sub in node.body:
                top.add(id(sub))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top, node
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "holter":
                for alias in node.names:
                    yield f"holter.{alias.name}", id(node) in top, node
            else:
                yield node.module, id(node) in top, node


def is_type_checking_block(tree: ast.AST, node: ast.AST) -> bool:
    for block in getattr(tree, "body", []):
        if (
            isinstance(block, ast.If)
            and "TYPE_CHECKING" in ast.unparse(block.test)
            and any(node is sub for sub in ast.walk(block))
        ):
            return True
    return False


@pytest.mark.parametrize(("module", "path"), list(modules()), ids=lambda v: str(v))
def test_module_imports_only_its_layer_or_lower(module: str, path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    mine = layer_of(module)
    for target, _top, node in imports(tree):
        if not target.startswith("holter"):
            continue
        if is_type_checking_block(tree, node):
            continue
        theirs = layer_of(target)
        assert theirs <= mine, (
            f"{module} (layer {mine}) imports {target} (layer {theirs}) at line {node.lineno}"
        )


@pytest.mark.parametrize(("module", "path"), list(modules()), ids=lambda v: str(v))
def test_optional_libraries_are_imported_lazily(module: str, path: Path) -> None:
    if module.startswith(TOP_LEVEL_OPTIONAL_OK):
        return
    tree = ast.parse(path.read_text(), filename=str(path))
    for target, top, node in imports(tree):
        root = target.split(".")[0]
        if root in OPTIONAL and top and not is_type_checking_block(tree, node):
            raise AssertionError(
                f"{module} imports optional library {target} at top level (line {node.lineno})"
            )


@pytest.mark.parametrize(("module", "path"), list(modules()), ids=lambda v: str(v))
def test_package_imports_use_full_module_paths(module: str, path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "holter" and module != "holter":
            for alias in node.names:
                sub = PACKAGE / alias.name
                assert sub.with_suffix(".py").exists() or sub.is_dir(), (
                    f"{module} line {node.lineno}: `from holter import {alias.name}` goes through "
                    "the facade; import from the defining module instead"
                )


def test_import_holter_stays_light() -> None:
    code = (
        "import sys, json; before = set(sys.modules); import holter; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    heavy = sorted(m for m in loaded if m.split(".")[0] in OPTIONAL | {"sqlite3"})
    assert heavy == [], f"import holter loaded {heavy}"


def test_started_monitor_does_not_load_optional_libraries(tmp_path: Path) -> None:
    code = (
        "import sys, json, holter; "
        f"mon = holter.start(app='t', db={str(tmp_path / 'x.db')!r}); "
        "mon.counter('c').inc(); mon.histogram('h').observe(1.0); mon.flush(); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(OPTIONAL)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
