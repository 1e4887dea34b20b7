"""The layout of ``lt_lightning.metrics``: imports in any order, no upward import, public names in place."""

from __future__ import annotations

import ast
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lt_lightning.metrics

METRICS = Path(lt_lightning.metrics.__file__).parent
REPO = METRICS.parent.parent
SUBMODULES = [
    "lt_lightning.metrics",
    "lt_lightning.metrics.neural_collapse",
    "lt_lightning.metrics.shot_accuracy",
    "lt_lightning.metrics.functional",
    "lt_lightning.metrics.functional.geometry",
    "lt_lightning.metrics.functional.minority_collapse",
    "lt_lightning.metrics.functional.nc_float32",
    "lt_lightning.metrics.functional.nc_state",
    "lt_lightning.metrics.functional.neural_collapse",
    "lt_lightning.metrics.functional.shot_accuracy",
    "lt_lightning.metrics.functional._inputs",
    "lt_lightning.compat",
]

# Run in a fresh interpreter. argv[1]: a JSON list of cases, each ``[init_source or null, [modules]]``:
# write the source into the file argv[2] (when given), import the modules in that order, and report
# what the public names are bound to; lt_lightning is dropped from sys.modules between cases.
_PROBE = """
import importlib, json, pathlib, sys
sys.dont_write_bytecode = True
reports = []
for init_source, order in json.loads(sys.argv[1]):
    for name in [n for n in sys.modules if n == "lt_lightning" or n.startswith("lt_lightning.")]:
        del sys.modules[name]
    if init_source is not None:
        pathlib.Path(sys.argv[2]).write_text(init_source, encoding="utf-8")
    for name in order:
        importlib.import_module(name)
    import lt_lightning.metrics as m
    from lt_lightning.metrics import functional as F
    reports.append({
        "file": m.__file__,
        "package": {n: type(getattr(m, n)).__name__ for n in m.__all__},
        "functional": {n: type(getattr(F, n)).__name__ for n in F.__all__},
        "same": [m.neural_collapse is F.neural_collapse, m.shot_accuracy is F.shot_accuracy,
                 m.minority_collapse is F.minority_collapse],
    })
print(json.dumps(reports))
"""


def _probe(cases, pythonpath=REPO, init_file=None):
    if any(source is not None for source, _ in cases):  # never rewrite the tree under development
        assert init_file is not None and Path(init_file).is_relative_to(pythonpath) and pythonpath != REPO
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONDONTWRITEBYTECODE": "1"}
    # -P: no current directory on sys.path, so PYTHONPATH decides which tree is imported
    out = subprocess.run(
        [sys.executable, "-P", "-c", _PROBE, json.dumps(cases), str(init_file)],
        cwd=pythonpath,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, f"import failed for {cases}:\n{out.stderr[-3000:]}"
    reports = json.loads(out.stdout.strip().splitlines()[-1])
    for report in reports:  # the probe imported the tree under test, not another copy of the package
        assert Path(report["file"]).is_relative_to(pythonpath), report["file"]
    return reports


def _check_report(report):
    assert report["package"] == {
        "NeuralCollapse": "ABCMeta",
        "ShotAccuracy": "ABCMeta",
        "ShotCalibration": "ABCMeta",
        "functional": "module",
        "minority_collapse": "function",
        "neural_collapse": "function",
        "shot_accuracy": "function",
    }
    assert report["functional"]["neural_collapse"] == "function"
    assert report["functional"]["shot_accuracy"] == "function"
    assert report["functional"]["minority_collapse"] == "function"
    assert report["functional"]["NC_KEYS"] == "tuple"
    assert report["same"] == [True, True, True]


@pytest.mark.parametrize(
    "order",
    [
        SUBMODULES,
        SUBMODULES[::-1],
        [
            "lt_lightning.metrics.shot_accuracy",
            "lt_lightning.metrics.functional.shot_accuracy",
            "lt_lightning.metrics.neural_collapse",
        ],
        ["lt_lightning.metrics.functional.nc_float32", "lt_lightning.compat", "lt_lightning.metrics"],
        ["lt_lightning.metrics.functional.geometry", "lt_lightning.metrics.functional.minority_collapse"],
    ],
    ids=["forward", "reverse", "metric_modules_first", "deep_module_first", "geometry_first"],
)
def test_submodules_import_in_any_order(order):
    (report,) = _probe([[None, order]])  # one fresh interpreter per order
    _check_report(report)


def test_package_init_lines_work_in_any_order(tmp_path):
    """Every permutation of the import lines of ``metrics/__init__.py`` imports and binds the same names."""
    shutil.copytree(
        REPO / "lt_lightning", tmp_path / "lt_lightning", ignore=shutil.ignore_patterns("__pycache__")
    )
    init_file = tmp_path / "lt_lightning" / "metrics" / "__init__.py"
    lines = init_file.read_text(encoding="utf-8").splitlines()
    imports = [i for i, line in enumerate(lines) if line.startswith(("from ", "import "))]
    assert len(imports) >= 3  # the permutations below permute something
    cases = []
    for perm in itertools.permutations([lines[i] for i in imports]):
        shuffled = list(lines)
        for i, line in zip(imports, perm):
            shuffled[i] = line
        cases.append(["\n".join(shuffled) + "\n", ["lt_lightning.metrics"]])
    reports = _probe(cases, pythonpath=tmp_path, init_file=init_file)
    assert len(reports) == len(cases) == math.factorial(len(imports))
    for report in reports:
        _check_report(report)


def _imports(path: Path) -> list[str]:
    """Every module an import statement in ``path`` names, deferred (in-function) imports included."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names += [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_metrics_never_imports_data():
    files = sorted(METRICS.rglob("*.py"))
    assert len(files) >= 10  # the walk found the package (functional/ included)
    every = {name for path in files for name in _imports(path)}
    assert "lt_lightning.spec.resolve_shot_groups" in every  # the walk sees imports: the check can fail
    bad = {
        str(path.relative_to(REPO)): name
        for path in files
        for name in _imports(path)
        if name == "lt_lightning.data" or name.startswith("lt_lightning.data.")
    }
    assert not bad, (
        f"lt_lightning.metrics must not import lt_lightning.data (spec owns the shot groups): {bad}"
    )


def test_submodules_never_import_their_own_package():
    """A submodule importing its package's ``__init__`` makes the circle the import-cycle tool reports."""
    offenders = {}
    for path in sorted(METRICS.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        own = {"lt_lightning.metrics", "lt_lightning.metrics.functional"}
        hits = [n for n in _imports(path) if n in own]
        if hits:
            offenders[str(path.relative_to(REPO))] = hits
    assert not offenders, offenders


def test_public_names_keep_their_old_paths():
    from lt_lightning.metrics.functional import (
        MINORITY_COLLAPSE_KEYS,
        NC_KEYS,
        SHOT_GROUP_NAMES,
        UndefinedMetricWarning,
        minority_collapse,
        neural_collapse,
        shot_accuracy,
    )
    from lt_lightning.metrics.shot_accuracy import shot_accuracy as old_shot_accuracy
    from lt_lightning.spec import SHOT_GROUP_NAMES as SPEC_NAMES

    assert SHOT_GROUP_NAMES is SPEC_NAMES  # one owner of the shot-group names
    assert NC_KEYS[0] == "nc1" and len(MINORITY_COLLAPSE_KEYS) == 14
    assert issubclass(UndefinedMetricWarning, UserWarning)
    assert old_shot_accuracy is shot_accuracy
    assert all(callable(f) for f in (minority_collapse, neural_collapse, shot_accuracy))
    assert set(lt_lightning.metrics.functional.__all__) >= {
        "neural_collapse",
        "minority_collapse",
        "shot_accuracy",
        "NC_KEYS",
        "MINORITY_COLLAPSE_KEYS",
        "SHOT_GROUP_NAMES",
        "UndefinedMetricWarning",
    }


def test_functional_modules_stay_small():
    sizes = {
        p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in (METRICS / "functional").glob("*.py")
    }
    assert len(sizes) >= 7 and max(sizes.values()) < 500, sizes
