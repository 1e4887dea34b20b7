"""Issue 20, item 3: SIGTERM (what SLURM, Kubernetes and ``timeout`` send before a kill) stops a real
``lt-lightning fit`` with exit status 143, a checkpoint at the step it was trained to, and the command
that resumes it; the resumed run ends with the weights of an uninterrupted one.

The signal comes from outside the fit (this test sends it with ``os.kill``); a callback only holds the
fit at a known step until Lightning's handler has seen the signal, so the step is deterministic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lt_lightning.callbacks.signals import SIGTERM_EXIT_STATUS, SaveOnSigterm
from lt_lightning.checkpoints import load_checkpoint_file
from tests.cli.helpers import FIT_SCRIPT, assert_same_state, cli_env, digits, run_fit

RUN = Path("runs/digits_lt/joint/seed0")
ARGS = ["--config", digits("joint"), "--trainer.max_epochs", "2", "--trainer.deterministic", "true"]
ARGS += ["--trainer.enable_progress_bar", "false"]


class HoldUntilSigterm(L.Callback):
    """At the start of global step ``step``: write ``marker`` and wait until the trainer has received
    SIGTERM (Lightning's handler sets ``received_sigterm``); the batch then trains and the fit stops."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            Path(self.marker).touch()
            while not trainer.received_sigterm:
                time.sleep(0.05)


def _sigterm_at(cwd: Path, step: int) -> subprocess.CompletedProcess:
    marker = cwd / "at_step"
    hold = f"--trainer.callbacks+={{class_path: tests.cli.test_signals.HoldUntilSigterm, init_args: {{step: {step}, marker: '{marker}'}}}}"
    proc = subprocess.Popen(
        [sys.executable, str(FIT_SCRIPT), "none", *ARGS, hold],
        cwd=cwd,
        env=cli_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_exits_143_and_the_resumed_run_matches(tmp_path):
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    full.mkdir(), stopped.mkdir()
    assert run_fit(full, "none", *ARGS).returncode == 0
    per_epoch = load_checkpoint_file(full / RUN / "last.ckpt")["global_step"] // 2
    step = per_epoch + 5  # mid epoch 1
    proc = _sigterm_at(stopped, step)
    assert proc.returncode == SIGTERM_EXIT_STATUS == 143, proc.stderr[-3000:]
    ckpt_path = stopped / RUN / "last.ckpt"
    assert f"stopped by SIGTERM at epoch 1, step {step + 1}; checkpoint {ckpt_path}" in proc.stderr
    assert f"--ckpt_path {ckpt_path}" in proc.stderr  # how to resume
    ckpt = load_checkpoint_file(ckpt_path)
    assert (
        ckpt["global_step"] == step + 1 and ckpt["epoch"] == 1
    )  # the batch in flight was trained, then saved
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"samples_done": (step + 1 - per_epoch) * 32, "batch_size": 32, "num_replicas": 1}
    ]
    assert not [p for p in ckpt_path.parent.iterdir() if p.name.endswith(".tmp")]  # written atomically
    resumed = run_fit(stopped, "none", *ARGS, "--ckpt_path", str(ckpt_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_checkpoint_file(full / RUN / "last.ckpt"), load_checkpoint_file(ckpt_path)
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert_same_state(a["state_dict"], b["state_dict"])


class _Trainer:
    """What :class:`SaveOnSigterm` reads of a trainer."""

    def __init__(self, tmp_path: Path, fn: str = "fit") -> None:
        self.checkpoint_callback = L.pytorch.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpts"))
        self.default_root_dir = str(tmp_path)
        self.state = type("State", (), {"fn": fn})()
        self.is_global_zero, self.current_epoch, self.global_step = True, 0, 7
        self.saved: list[str] = []

    def save_checkpoint(self, path, weights_only=None):
        self.saved.append(path)


def test_only_sigterm_during_fit_is_handled(tmp_path, capsys):
    callback = SaveOnSigterm()
    trainer = _Trainer(tmp_path)
    callback.on_exception(trainer, None, ValueError("not a signal"))
    callback.on_exception(_Trainer(tmp_path, fn="validate"), None, SIGTERMException())
    assert trainer.saved == [] and callback.saved_path is None
    exc = SIGTERMException()
    callback.on_exception(trainer, None, exc)
    assert trainer.saved == [str(tmp_path / "ckpts" / "last.ckpt")] and exc.code == 143
    assert "Resume with the same command and --ckpt_path" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must be a file name"):
        SaveOnSigterm(filename=os.path.join("a", "b.ckpt"))
