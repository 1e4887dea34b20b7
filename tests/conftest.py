import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

# one intra-op thread per pytest-xdist worker (`-n 2` on 2 cores would otherwise run 4 threads)
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _no_wandb_network(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def stage1_ckpt(tmp_path_factory) -> str:
    """A small stage-1 checkpoint for every stage-2 test of the session: a ``JointModule`` (MLP with
    BatchNorm, linear head) trained 4 epochs on ``tests.models.helpers.synthetic_dm()``."""
    from tests.models.helpers import fit_stage1

    return fit_stage1(tmp_path_factory.mktemp("stage1"))
