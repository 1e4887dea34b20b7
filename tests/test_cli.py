"""The ``lt-lightning`` CLI: links, the two-stage flow on digits-LT, and W&B (offline, full config)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lt_lightning.cli import build_cli
from lt_lightning.loggers import wandb_mode

CONFIGS = Path(__file__).parents[1] / "configs"
FAST = ["--trainer.max_epochs", "2", "--trainer.limit_val_batches", "2"]


def test_datamodule_facts_are_linked_into_the_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", str(CONFIGS / "digits_lt/tde.yaml")], run=False)
    assert cli.model.num_classes == cli.datamodule.num_classes == 10
    assert cli.model.class_counts == cli.datamodule.class_counts
    assert cli.model.hparams.many_threshold == 60  # digits' own shot thresholds reach the model


@pytest.mark.slow
def test_two_stage_flow_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_cli(["fit", "--config", str(CONFIGS / "digits_lt/joint.yaml"), *FAST])
    ckpt = tmp_path / "runs/digits_lt/joint/seed0/last.ckpt"
    assert ckpt.is_file()
    for method in ("crt", "lws"):
        build_cli(["fit", "--config", str(CONFIGS / f"digits_lt/{method}.yaml"), *FAST])
        assert (tmp_path / f"runs/digits_lt/{method}/seed0/last.ckpt").is_file()
    for method in ("tau_norm", "ncm"):
        cli = build_cli(["test", "--config", str(CONFIGS / f"digits_lt/{method}.yaml")])
        metrics = cli.trainer.callback_metrics
        assert 0.0 <= float(metrics["test/acc"]) <= 1.0
        assert "test/few_acc" in metrics


def test_wandb_mode_decision(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home-for-netrc")
    assert wandb_mode() == "offline"  # no key: never try the network
    assert wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"
    with pytest.raises(ValueError, match="unknown W&B mode 'cloud'"):
        wandb_mode("cloud")


@pytest.mark.slow
def test_wandb_offline_run_gets_the_full_config(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HOME": str(tmp_path)})
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    cmd = [
        sys.executable,
        "-m",
        "lt_lightning.cli",
        "fit",
        "--config",
        str(CONFIGS / "digits_lt/joint.yaml"),
        "--trainer.max_epochs",
        "1",
        "--trainer.callbacks",
        "[]",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "runs/wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # An offline run keeps its records in run-*.wandb (protobuf); the config update is stored as JSON
    # text. The data and trainer sections only reach W&B through our full-config callback, not through
    # Lightning's hyper-parameter logging.
    blob = next(runs[0].glob("run-*.wandb")).read_bytes()
    for text in (b"lt_lightning.data.DigitsLTDataModule", b"max_epochs", b"lt_lightning.models.JointModule"):
        assert text in blob, text
