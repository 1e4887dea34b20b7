"""A failed run leaves no W&B offline run that ``wandb sync`` would upload."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_a_failed_offline_run_is_set_aside(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HOME": str(tmp_path)})
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-m", "lt_lightning.cli", "fit", "-c", str(ROOT / "configs/digits_lt/joint.yaml")]
    cmd += ["--model.init_args.lr", "1e8"]  # diverges in the first epoch: NonFiniteError
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "NonFiniteError" in proc.stderr
    # `wandb sync runs/wandb` (or `wandb sync runs`) takes every <dir>/*.wandb one level down: none left
    assert list((tmp_path / "runs/wandb").glob("*/*.wandb")) == []
    assert list((tmp_path / "runs").glob("*/*.wandb")) == []
    failed = list((tmp_path / "runs/wandb-failed").glob("offline-run-*"))
    assert len(failed) == 1 and list(failed[0].glob("run-*.wandb"))  # kept for inspection
    assert "set aside" in proc.stdout
