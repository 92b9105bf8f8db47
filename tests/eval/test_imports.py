"""robaug.eval has no import circle: every module imports on its own in a fresh interpreter, and the graph of
imports between robaug.eval modules (module level and inside functions) is acyclic. kornia is imported only where
it is used."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import robaug.eval

EVAL = Path(robaug.eval.__file__).parent
MODULES = sorted(p.stem for p in EVAL.glob("*.py") if p.stem != "__init__")


def _eval_imports(path: Path) -> set[str]:
    """robaug.eval modules that ``path`` imports, at module level or inside functions (``from . import x``,
    ``from .x import y``): a lazy import inside a function still makes a circle of dependencies."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                out.update(a.name for a in node.names)
            else:
                out.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("robaug.eval."):
            out.add(node.module.split(".")[2])
    return out & set(MODULES)


def test_imports_between_eval_modules_form_no_cycle():
    graph = {m: _eval_imports(EVAL / f"{m}.py") for m in MODULES}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError(f"import circle: {' -> '.join(path + [m])}")
        if state.get(m) == 2:
            return
        state[m] = 1
        for dep in sorted(graph[m]):
            visit(dep, path + [m])
        state[m] = 2

    for m in MODULES:
        visit(m, [])
    assert graph["corruptions"] and graph["evaluation"]  # the parser sees the imports


def test_each_module_imports_first_in_a_fresh_interpreter():
    # one interpreter per module would take ~2 s each; instead every module is imported first after dropping
    # robaug.eval from sys.modules, which is what a fresh interpreter sees for this package
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    for k in [k for k in sys.modules if k == 'robaug.eval' or k.startswith('robaug.eval.')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module('robaug.eval.' + name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(EVAL.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr


def test_kornia_is_imported_inside_functions_only():
    for m in MODULES:
        for node in ast.parse((EVAL / f"{m}.py").read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "kornia" for n in names), f"robaug.eval.{m} imports kornia at import time"
