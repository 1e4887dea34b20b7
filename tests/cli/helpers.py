"""Shared pieces of the command-line tests: paths, a subprocess of this worktree's ``lt-lightning``, and
independent references (a test accuracy computed by hand from a checkpoint file)."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import yaml

from lt_lightning.cli import build_cli
from lt_lightning.models import JointModule

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "configs"
DIGITS = CONFIGS / "digits_lt"
LEGACY = ROOT / "tests" / "fixtures" / "legacy_checkpoints"
FIT_SCRIPT = Path(__file__).with_name("fit_script.py")
#: a quiet in-process run (the configs show the progress bar)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def digits(method: str) -> str:
    """The shipped digits-LT config of ``method`` (``configs/digits_lt/<method>.yaml``)."""
    return str(DIGITS / f"{method}.yaml")


@functools.cache
def resolved_config(config: str | Path, *args: str, subcommand: str = "fit") -> dict:
    """The config ``lt-lightning SUBCOMMAND -c CONFIG ARGS`` runs, as the CLI resolves it (includes,
    defaults and overrides applied: ``--print_config``), never by reading the YAML file itself."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            build_cli([subcommand, "-c", str(config), *args, "--print_config"])
        except SystemExit as exit_:
            assert exit_.code in (0, None), f"{config}: --print_config exited with {exit_.code}"
    return yaml.safe_load(out.getvalue())


def cli_env(home: Path | None = None, wandb: str = "disabled") -> dict[str, str]:
    """The environment of a subprocess that runs this worktree's code (``PYTHONPATH``), one thread, with
    W&B ``wandb`` (``"disabled"`` or ``"offline"``, no network) and its files under ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": wandb, "WANDB_SILENT": "true"})
    env.pop("LT_LIGHTNING_TRACEBACK", None)
    if home is not None:
        env["HOME"] = str(home)
    return env


def run_cli(
    cwd: Path, *args: str, wandb: str = "disabled", timeout: float = 300
) -> subprocess.CompletedProcess:
    """``lt-lightning ARGS`` as a user runs it (``python -m lt_lightning.cli``: the console script of the
    environment may point at another checkout), in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "lt_lightning.cli", *args],
        cwd=cwd,
        env=cli_env(cwd, wandb),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_fit(cwd: Path, kill: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``lt-lightning fit ARGS`` through :mod:`tests.cli.fit_script` (SIGKILL-ed at ``kill`` unless it is
    ``"none"``); its return code must be 0 or -9 (anything else fails with the run's stderr)."""
    proc = subprocess.run(
        [sys.executable, str(FIT_SCRIPT), kill, *args],
        cwd=cwd,
        env=cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode in (0, -9), proc.stderr[-4000:]
    return proc


def accuracy_by_hand(model: torch.nn.Module, datamodule) -> float:
    """Top-1 of ``model`` on ``datamodule``'s test split, by hand (eval mode, no Lightning)."""
    datamodule.setup("test")
    model.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in datamodule.test_dataloader():
            correct += int((model(x).argmax(1) == y).sum())
            n += len(y)
    return correct / n


def assert_same_state(a: dict, b: dict, keys: Sequence[str] | None = None) -> None:
    """Every tensor of two state dicts is equal (bit for bit)."""
    assert a.keys() == b.keys() if keys is None else set(keys) <= a.keys() & b.keys()
    for key in keys if keys is not None else a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------ parts a test names on the command line
class LrJump(L.Callback):
    """From epoch ``epoch`` on, an absurd learning rate (``--trainer.callbacks+={class_path:
    tests.cli.helpers.LrJump}``): the loss of the step after the first update at that rate is not finite."""

    def __init__(self, epoch: int = 1, lr: float = 1e30) -> None:
        self.epoch, self.lr = epoch, lr

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = self.lr


class NaNFeaturesJointModule(JointModule):
    """A ``JointModule`` whose training features are NaN at global step ``nan_step``."""

    def __init__(self, nan_step: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_step = nan_step

    def extract_features(self, x):
        features = super().extract_features(x)
        if self.training and self.global_step == self.nan_step:
            features = features * torch.nan
        return features


class RecordTrainBatches(L.Callback):
    """Keeps the labels of every training batch and the global step each one started at."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((trainer.global_step, batch[1].detach().cpu().clone()))
