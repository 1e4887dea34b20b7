"""The notebooks are stored without outputs and run headless from top to bottom (fewer epochs in CI)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == [
        "01_quickstart",
        "02_neural_collapse",
        "03_decoupling",
        "04_minority_collapse",
        "05_beyond",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless(path, monkeypatch):
    from nbclient import NotebookClient

    # the kernel inherits the environment: short runs, no W&B
    monkeypatch.setenv("LT_EPOCHS", "4")
    monkeypatch.setenv("LT_UFM_STEPS", "120")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend captures the figures
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert images, "the notebook draws its figures"
