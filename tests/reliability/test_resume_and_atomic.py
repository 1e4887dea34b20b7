"""kill -9 during a real CLI fit, then ``--ckpt_path``: the resumed run equals an uninterrupted one; a kill
in the middle of writing ``last.ckpt`` leaves the previous good file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lt_lightning.checkpoints import load_checkpoint_file

ROOT = Path(__file__).parents[2]
SCRIPT = Path(__file__).with_name("fit_script.py")
CONFIGS = ROOT / "configs" / "digits_lt"


def _fit(cwd: Path, method: str, kill: str, ckpt: str = "-", *extra: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), kill, ckpt, "--config", str(CONFIGS / f"{method}.yaml")]
    cmd += ["--trainer.max_epochs", "4", "--trainer.deterministic", "true", *extra]  # later ones win
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, -9), proc.stderr[-3000:]
    return proc.returncode


def _last(cwd: Path, method: str) -> dict:
    return load_checkpoint_file(cwd / f"runs/digits_lt/{method}/seed0/last.ckpt")


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow
@pytest.mark.parametrize("method", ["joint", "fixed_etf"])
def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, method):
    (tmp_path / "full").mkdir(), (tmp_path / "killed").mkdir()
    assert _fit(tmp_path / "full", method, "none") == 0
    assert _fit(tmp_path / "killed", method, "epoch:1") == -9  # SIGKILL after epoch 1's checkpoint
    assert _last(tmp_path / "killed", method)["epoch"] == 1
    ckpt = str(tmp_path / "killed" / f"runs/digits_lt/{method}/seed0/last.ckpt")
    assert _fit(tmp_path / "killed", method, "none", ckpt) == 0
    _assert_same_weights(_last(tmp_path / "full", method), _last(tmp_path / "killed", method))


@pytest.mark.slow
def test_kill_while_writing_last_ckpt_keeps_the_previous_one(tmp_path):
    assert _fit(tmp_path, "joint", "save:2") == -9
    folder = tmp_path / "runs/digits_lt/joint/seed0"
    last = load_checkpoint_file(folder / "last.ckpt")  # loads: not truncated
    assert last["epoch"] == 1  # the good checkpoint of epoch 1, not a half-written epoch 2
    assert (folder / "epoch=2-step=39.ckpt").is_file()  # the save that died was the next one
    leftovers = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the half-written temp file
    # and the run resumes from it
    assert _fit(tmp_path, "joint", "none", str(folder / "last.ckpt")) == 0
    assert load_checkpoint_file(folder / "last.ckpt")["epoch"] == 3


@pytest.fixture(scope="module")
def stage1_ckpt(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("stage1")
    assert _fit(out, "joint", "none", "-", "--trainer.max_epochs", "1") == 0
    return str(out / "runs/digits_lt/joint/seed0/last.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("fixed_etf", ("--model.init_args.mixup_alpha", "1.0")),  # sampler position + mixup stream
        ("tde", ()),  # moving-average feature
        ("implicit_etf", ()),  # tracked class means and the solved Q
        ("crt", ()),  # stage 2, class-balanced sampler
    ],
)
def test_kill_9_mid_epoch_then_resume_is_exact(tmp_path, monkeypatch, stage1_ckpt, method, extra):
    monkeypatch.setenv("LT_TEST_STEP_CKPT", "6")  # checkpoints every 6 steps into <run>/steps
    extra = (*extra, "--trainer.max_epochs", "2")
    if method == "crt":
        extra = (*extra, "--model.init_args.stage1_checkpoint", stage1_ckpt)
    (tmp_path / "full").mkdir(), (tmp_path / "killed").mkdir()
    assert _fit(tmp_path / "full", method, "none", "-", *extra) == 0
    assert _fit(tmp_path / "killed", method, "step:18", "-", *extra) == -9  # mid epoch 1 (13 steps each)
    steps = tmp_path / "killed" / f"runs/digits_lt/{method}/seed0/steps/last.ckpt"
    ckpt = load_checkpoint_file(steps)
    assert ckpt["global_step"] == 18
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"batches_done": 5, "batch_size": 32}
    ]
    assert _fit(tmp_path / "killed", method, "none", str(steps), *extra) == 0
    _assert_same_weights(_last(tmp_path / "full", method), _last(tmp_path / "killed", method))
