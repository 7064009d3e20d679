"""The library-wide conventions (docs/conventions.md) hold in the code: one status numbering,
``__all__`` in every module, no private cross-package imports, one least-squares loop."""

import ast
import enum
import importlib
import pathlib
import pkgutil

import pytest

import jaxvol
from jaxvol import status

ROOT = pathlib.Path(jaxvol.__file__).parent
MODULES = sorted(p for p in ROOT.rglob("*.py"))


def _module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _status_enums():
    found = {}
    for info in pkgutil.walk_packages(jaxvol.__path__, "jaxvol."):
        if info.name.startswith(("jaxvol.jobs", "jaxvol.report")) or info.name.endswith(
                "__main__"):
            continue  # optional heavy dependencies; their statuses come from the domains
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, enum.IntEnum)
                    and value.__name__.endswith("Status") and value is not status.Status):
                found[value.__qualname__] = value
    return found


def test_every_status_enum_uses_the_library_numbering():
    enums = _status_enums()
    expected = {"IVStatus", "FitStatus", "SmileStatus", "StrikeStatus", "ForwardStatus",
                "VxjStatus", "CboeStatus"}
    assert expected <= set(enums), sorted(enums)
    owner = {}
    for name, enum_type in enums.items():
        assert enum_type(0).name in ("OK", "CONVERGED"), name  # 0 is success and only that
        for member in enum_type:
            code = int(member)
            if member.name in status.Status.__members__:
                assert code == int(status.Status[member.name]), (name, member.name)
            elif code != 0:
                assert code >= 10, (name, member.name, code)  # a domain code, not a shared one
                assert owner.setdefault(code, member.name) == member.name, (name, code)


def test_old_member_names_are_aliases_of_the_new_codes():
    from jaxvol import IVStatus
    from jaxvol.chains import ForwardStatus
    from jaxvol.fx import SmileStatus
    from jaxvol.indices import CboeStatus, VxjStatus

    assert IVStatus.INVALID_INPUT is IVStatus.BAD_INPUT and int(IVStatus.BAD_INPUT) == 1
    assert SmileStatus.MISSING_QUOTE is SmileStatus.NON_FINITE_INPUT
    assert ForwardStatus.TOO_FEW_PAIRS is ForwardStatus.TOO_FEW_POINTS
    assert VxjStatus.TOO_FEW_NODES is VxjStatus.TOO_FEW_POINTS
    assert CboeStatus.BAD_EXPIRY is CboeStatus.BAD_INPUT
    assert CboeStatus.TOO_FEW_STRIKES is CboeStatus.TOO_FEW_POINTS
    assert status.status_name(4) == "TOO_FEW_POINTS"
    with pytest.raises(ValueError, match="unknown member"):
        status.domain_status("Bad", "ou", {"OK": 0}, aliases={"OLD": "MISSING"})


def test_every_module_defines_all_and_its_names_exist():
    missing, unknown = [], []
    for path in MODULES:
        tree = ast.parse(path.read_text())
        assigned = [node for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    and "__all__" in ast.unparse(node).split("=")[0]]
        if not assigned:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, missing
    for path in MODULES:
        name = _module_name(path)
        if name.startswith(("jaxvol.jobs", "jaxvol.report")) or name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        unknown += [f"{name}.{n}" for n in module.__all__ if not hasattr(module, n)]
    assert not unknown, unknown


def _subpackage(module: str) -> str:
    parts = module.split(".")[1:]
    return parts[0] if parts and (ROOT / parts[0]).is_dir() else ""


def test_no_private_cross_package_imports():
    """A name starting with "_" (or a private module) is imported only inside its own
    subpackage; the root package's private helpers (jaxvol._dtypes, jaxvol._runtime) are the
    library-wide exception the conventions name."""
    offences = []
    for path in MODULES:
        own = _subpackage(_module_name(path))
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("jaxvol")):
                continue
            their = _subpackage(node.module)
            if their == own:
                continue
            inner = node.module.split(".")[2:] if their else []
            names = [a.name for a in node.names]
            if any(p.startswith("_") for p in inner) or any(n.startswith("_") for n in names):
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module} {names}")
    assert not offences, offences


def _has_lm_controller(path):
    """A module that runs an iteration primitive and updates a damping field of a solver state
    (``state.damping``): what a Levenberg–Marquardt controller looks like."""
    tree = ast.parse(path.read_text())
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    return bool(attributes & {"while_loop", "fori_loop"}) and "damping" in attributes


def test_no_levenberg_marquardt_loop_outside_calibrate(tmp_path):
    """One least-squares controller: the damping update, tolerances, lane freezing and the loop
    live in jaxvol/calibrate/driver.py; the step types (the dense step, the box-projected step of
    reduced problems) and the domains supply residuals or a reduced model, and run no loop of
    their own. The detector finds the controller it is meant to find (and found svi.py's own
    copy, then calibrate/projected.py's second controller, before they were merged)."""
    inside = sorted(p.name for p in (ROOT / "calibrate").glob("*.py") if _has_lm_controller(p))
    assert inside == ["driver.py"], inside
    outside = [str(p.relative_to(ROOT)) for p in MODULES
               if "calibrate" not in p.relative_to(ROOT).parts and _has_lm_controller(p)]
    assert not outside, outside
    # and the detector is not blind: a module with a while loop over a damped state is found
    probe = tmp_path / "probe.py"
    probe.write_text("import jax\n"
                     "def f(s):\n"
                     "    return jax.lax.while_loop(c, lambda s: s._replace(damping=s.damping * 2),"
                     " s)\n")
    assert _has_lm_controller(probe)


def test_the_step_types_run_the_one_driver():
    """The dense engine and SVI's variable projection are two step types of the driver: both
    step modules call driver.iterate / driver.run, neither loops itself."""
    for name in ("levenberg_marquardt.py", "projected.py"):
        tree = ast.parse((ROOT / "calibrate" / name).read_text())
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert {"driver.iterate", "driver.run"} & calls, (name, sorted(calls))
        assert not {"jax.lax.while_loop", "jax.lax.fori_loop", "lax.while_loop"} & calls, name


_IMPORTERS = {"import_module", "__import__", "require", "import_string", "find_spec",
              "reload", "locate"}


def _string_imports(path):
    """Calls that import a module named by a string (importlib.import_module("jaxvol.x"),
    __import__, a require("jaxvol.x") helper, pkgutil / pydoc locate): (line, source)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _IMPORTERS:
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_string_imports_of_jaxvol_modules():
    """Plain imports only (docs/conventions.md): no module of the package or its scripts imports
    a jaxvol module by name at run time; the dependencies of every module are visible in its
    import statements. (`git grep` agrees where the checkout is a git work tree.)"""
    scripts = ROOT.parent / "scripts"
    files = MODULES + (sorted(scripts.glob("*.py")) if scripts.is_dir() else [])
    offences = [f"{p.relative_to(ROOT.parent)}:{line} {text}" for p in files
                for line, text in _string_imports(p)]
    assert not offences, offences
    import shutil
    import subprocess

    if shutil.which("git") is None:
        return
    grep = subprocess.run(
        ["git", "grep", "-nE", r"(import_module|__import__|require)\(\s*['\"]jaxvol", "--",
         "jaxvol", "scripts"], cwd=ROOT.parent, capture_output=True, text=True)
    if grep.returncode == 128:  # not a git work tree (an unpacked sdist): the AST check stands
        return
    assert grep.returncode == 1 and not grep.stdout, grep.stdout


def test_the_detectors_find_what_they_look_for(tmp_path):
    """The two import checks above can fail: a string import and a private cross-package
    import written into a probe module are found."""
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib\nm = importlib.import_module('jaxvol.black')\n"
                     "s = require('jaxvol.smile.svi')\n")
    assert [line for line, _ in _string_imports(probe)] == [2, 3]
    assert _subpackage("jaxvol.calibrate.levenberg_marquardt") == "calibrate"
    assert _subpackage("jaxvol.black") == ""


def test_every_fit_returns_the_one_result_shape():
    """One result shape: every domain fit's result type is a calibrate.FitResult, with its
    fields (params, status, loss, iterations, rmse, residuals) and the domain's extras as
    properties."""
    from jaxvol import heston
    from jaxvol.calibrate import FitResult
    from jaxvol.smile import sabr, ssvi, svi

    for result_type in (svi.SVIFit, sabr.SABRFit, ssvi.SSVIFit, heston.HestonFit):
        assert issubclass(result_type, FitResult), result_type
        assert result_type._fields == FitResult._fields, result_type
    assert {"theta", "rho", "phi_params"} <= set(dir(ssvi.SSVIFit))
