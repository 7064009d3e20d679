"""The source tree keeps the conventions' import rules (docs/conventions.md, "Layout"):

- no string imports of jaxvol modules (``importlib.import_module("jaxvol.x")``,
  ``__import__``, the job's old ``require("jaxvol.x")``): dependencies are plain imports;
- no private cross-package imports: a name starting with ``_`` (or a private module) is
  imported only inside its own subpackage (``jaxvol.<sub>``; the root modules such as
  ``jaxvol.black``, ``jaxvol.special`` and the shared private helpers ``jaxvol._dtypes``,
  ``jaxvol._runtime`` form the root package).

The scan parses every module with ``ast`` (not a regex over the text), so a docstring that
mentions ``require("jaxvol.x")`` does not count and an aliased import does.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxvol"
SOURCES = sorted(ROOT.rglob("*.py"))


def _package_of(module: str) -> str:
    """The subpackage a dotted jaxvol module belongs to: ``jaxvol.smile.svi`` -> ``smile``;
    root modules (``jaxvol.black``, ``jaxvol._dtypes``) and ``jaxvol`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (ROOT / parts[1]).is_dir() else ""


def _own_package(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0] if len(rel) > 1 else ""


def _string_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
            node.func, "id", "")
        first = node.args[0]
        if (name in ("import_module", "__import__", "require", "module")
                and isinstance(first, ast.Constant) and isinstance(first.value, str)
                and first.value.split(".")[0] == "jaxvol"):
            found.append(f"line {node.lineno}: {name}({first.value!r})")
    return found


def _private_imports(tree: ast.AST, own: str) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            target = node.module
            if target.split(".")[0] != "jaxvol":
                continue
            names = [alias.name for alias in node.names]
            if _package_of(target) == own:
                continue
            private_module = any(p.startswith("_") for p in target.split(".")[2:])
            private_names = [n for n in names if n.startswith("_")]
            if private_module or private_names:
                found.append(f"line {node.lineno}: from {target} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != "jaxvol" or len(parts) < 3:
                    continue
                if _package_of(alias.name) != own and any(p.startswith("_") for p in parts[2:]):
                    found.append(f"line {node.lineno}: import {alias.name}")
    return found


def test_the_scan_sees_the_tree():
    assert len(SOURCES) > 40  # every module of the package, not an empty glob
    bad = ast.parse('import importlib\nimportlib.import_module("jaxvol.smile.svi")\n'
                    'from jaxvol.jobs.domains import require\nrequire("jaxvol.svi", "fit")\n')
    assert len(_string_imports(bad)) == 2
    cross = ast.parse("from jaxvol.calibrate.levenberg_marquardt import _RUNNING, least_squares\n"
                      "from jaxvol.calibrate import _implicit\n"
                      "from jaxvol.calibrate._types import FitStatus\n"
                      "from jaxvol.smile import svi\nfrom jaxvol._dtypes import float_dtype\n")
    assert len(_private_imports(cross, "smile")) == 3  # the three private ones, not the rest
    assert _private_imports(cross, "calibrate") == []  # inside its own subpackage: allowed


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_string_or_private_cross_package_imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = _string_imports(tree) + _private_imports(tree, _own_package(path))
    assert not problems, f"{path.relative_to(ROOT.parent)}: " + "; ".join(problems)
