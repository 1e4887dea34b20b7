"""The torchmetrics section of ``lt_lightning.compat``: the version check and the exact-merge hooks.

(``tests/metrics`` holds it because the Metrics are its only users so far; it tests ``lt_lightning/compat.py``.)
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchmetrics
from torchmetrics import Metric

import lt_lightning
from lt_lightning import compat
from lt_lightning.compat import ExactMergeMetric, TorchmetricsCompatError, check_torchmetrics
from lt_lightning.metrics import NeuralCollapse

PACKAGE = Path(lt_lightning.__file__).parent
REPO = PACKAGE.parent
#: The private torchmetrics attributes the design allows in the compatibility module only.
PRIVATE = {"_sync_dist", "_reduce_states", "_to_sync", "_should_unsync", "_computed", "_plot"}


# ---- the version check ------------------------------------------------------------------------------
def test_installed_torchmetrics_passes_the_check():
    check_torchmetrics()  # what the import ran; raising here would mean compat could not be imported
    check_torchmetrics(Metric, torchmetrics.__version__)


def _stand_in(**changes):
    """A copy of torchmetrics' Metric's relevant methods with ``changes`` applied (None removes one)."""
    namespace = {
        name: getattr(Metric, name)
        for name in ("_sync_dist", "_reduce_states", "_plot", "sync", "merge_state")
    }
    namespace.update(changes)
    return type("StandIn", (), {k: v for k, v in namespace.items() if v is not None})


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"_sync_dist": None}, r"Metric\._sync_dist no longer exists"),
        ({"_reduce_states": None}, r"Metric\._reduce_states no longer exists"),
        ({"_plot": None}, r"Metric\._plot no longer exists"),
        ({"_reduce_states": lambda self, state, strict: None}, r"_reduce_states takes \('state', 'strict'\)"),
        ({"_sync_dist": lambda self, fn, group=None: None}, r"_sync_dist takes"),
        ({"sync": lambda self, *args, **kwargs: None}, r"Metric\.sync no longer calls Metric\._sync_dist"),
        ({"merge_state": lambda self, incoming: None}, r"merge_state no longer calls Metric\._reduce_states"),
    ],
)
def test_check_names_the_version_and_the_attribute(changes, match):
    check_torchmetrics(_stand_in(), "0.0-test")  # the unchanged stand-in passes: the cases below can fail
    with pytest.raises(TorchmetricsCompatError, match=match) as err:
        check_torchmetrics(_stand_in(**changes), "0.0-test")
    assert "torchmetrics 0.0-test" in str(err.value)
    assert isinstance(err.value, ImportError)


def test_import_fails_clearly_when_torchmetrics_lost_an_override():
    code = (
        "import torchmetrics\n"
        "del torchmetrics.Metric._sync_dist\n"
        "try:\n"
        "    import lt_lightning.compat\n"
        "except ImportError as err:\n"
        "    print(type(err).__name__, err)\n"
        "else:\n"
        "    print('imported')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("TorchmetricsCompatError"), out.stdout
    assert f"torchmetrics {torchmetrics.__version__}" in out.stdout and "_sync_dist" in out.stdout


# ---- the base class hands torchmetrics' private calls to public hooks ------------------------------
class _Recorder(ExactMergeMetric):
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")
        self.calls: list[tuple] = []

    def update(self, x: torch.Tensor) -> None:
        self.total += x

    def compute(self) -> torch.Tensor:
        return self.total.clone()

    def sync_states(self, process_group):
        self.calls.append(("sync", process_group))
        self.total = self.total * 10  # a merge torchmetrics' "sum" would not do

    def merge_states(self, incoming_state):
        self.calls.append(("merge", sorted(incoming_state)))
        self.total = self.total - incoming_state["total"]  # ditto


def test_sync_and_merge_state_reach_the_public_hooks():
    metric = _Recorder(process_group="group-a")
    metric.update(torch.tensor([1.0, 2.0], dtype=torch.float64))
    with metric.sync_context(distributed_available=lambda: True):
        assert metric.total.tolist() == [10.0, 20.0]  # synced by sync_states, not by dist_reduce_fx
    assert metric.total.tolist() == [1.0, 2.0]  # and restored afterwards, as for any Metric
    other = _Recorder()
    other.update(torch.tensor([0.5, 0.5], dtype=torch.float64))
    metric.merge_state(other)
    assert metric.total.tolist() == [0.5, 1.5]
    assert metric.calls == [("sync", "group-a"), ("merge", ["total"])]


def test_base_class_refuses_dist_sync_fn_and_needs_both_hooks():
    with pytest.raises(ValueError, match="_Recorder merges ranks with its own all-reduces"):
        _Recorder(dist_sync_fn=lambda x, group=None: [x])

    class Incomplete(ExactMergeMetric):
        def update(self) -> None: ...
        def compute(self) -> None: ...
        def sync_states(self, process_group) -> None: ...

    with pytest.raises(TypeError, match="merge_states"):
        Incomplete()
    assert isinstance(NeuralCollapse(3, 2), ExactMergeMetric)
    assert not inspect.isabstract(NeuralCollapse)


# ---- the design rules the module exists for ---------------------------------------------------------
def _modules_touching(names: set[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        hits = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in names:
                hits.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
                hits.add(node.name)
            elif isinstance(node, ast.Constant) and node.value in names:
                hits.add(node.value)  # getattr(metric, "_computed") and the like
        if hits:
            found[str(path.relative_to(PACKAGE.parent))] = hits
    return found


def test_private_torchmetrics_attributes_only_in_compat():
    found = _modules_touching(PRIVATE)
    assert set(found) == {os.path.join("lt_lightning", "compat.py")}, found
    assert found[os.path.join("lt_lightning", "compat.py")] >= {"_sync_dist", "_reduce_states", "_plot"}


def test_compat_imports_nothing_of_lt_lightning():
    tree = ast.parse(Path(compat.__file__).read_text(encoding="utf-8"))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "torchmetrics" in imported  # the walk sees the imports (so the check below can fail)
    assert not [m for m in imported if m.split(".")[0] == "lt_lightning"], imported
