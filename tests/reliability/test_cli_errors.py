"""Errors from ``lt-lightning``: one line naming the option, the bad value and what is valid; no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lt_lightning.cli import build_cli, format_error

ROOT = Path(__file__).parents[2]
DIGITS = ROOT / "configs" / "digits_lt"


@pytest.mark.parametrize(
    ("config", "args", "expected"),
    [
        (
            "joint",
            ["--data.init_args.sampler", "classs"],
            "--data.init_args.sampler: got 'classs'; valid: instance, class, sqrt, power, progressive, stratified",
        ),
        (
            "joint",
            ["--model.init_args.lr_schedule", "cosin"],
            "--model.init_args.lr_schedule: got 'cosin'; valid: constant, cosine, multistep",
        ),
        (
            "joint",
            ["--model.init_args.optimizer", "adam"],
            "--model.init_args.optimizer: got 'adam'; valid: sgd, adamw, agd",
        ),
        (
            "joint",
            ["--model.init_args.neck", "bn2"],
            "--model.init_args.neck: got 'bn2'; valid: none, bn, l2, bn_l2",
        ),
        (
            "crt",
            ["--model.init_args.mode", "cb"],
            "--model.init_args.mode: got 'cb'; valid: crt, lws, tau_norm, ncm",
        ),
        ("joint", ["--trainer.max_epochs", "abc"], "--trainer.max_epochs: expected int, got 'abc'"),
        ("joint", ["--data.init_args.batch_size", "x"], "--data.init_args.batch_size: expected int, got 'x'"),
        (
            "joint",
            ["--data.init_args.imbalance_ratio", "0.5"],
            "DigitsLTDataModule: imbalance_ratio must be >= 1 (n_max / n_min), got 0.5",
        ),
        (
            "crt",
            ["--model.init_args.stage1_checkpoint", "missing.ckpt"],
            "DecoupledModule: stage-1 checkpoint not found: 'missing.ckpt'",
        ),
    ],
)
def test_bad_values_give_one_line(tmp_path, monkeypatch, config, args, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception) as info:
        build_cli(["fit", "--config", str(DIGITS / f"{config}.yaml"), *args])
    assert format_error(info.value) == expected


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lt_lightning.cli", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_console_prints_one_line_and_exits_non_zero(tmp_path):
    proc = _cli(tmp_path, "fit", "-c", str(DIGITS / "joint.yaml"), "--data.init_args.sampler", "classs")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lt-lightning: error: --data.init_args.sampler: got 'classs'; valid: instance, class, sqrt, power, "
        "progressive, stratified"
    ]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_diverging_run_exits_non_zero_without_a_checkpoint(tmp_path):
    proc = _cli(tmp_path, "fit", "-c", str(DIGITS / "joint.yaml"), "--model.init_args.lr", "1e8")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lt-lightning: error: NonFiniteError: non-finite loss")
    assert "at training step" in last
    assert not list(tmp_path.glob("runs/digits_lt/joint/seed0/*.ckpt"))  # diverged in epoch 0: nothing saved
