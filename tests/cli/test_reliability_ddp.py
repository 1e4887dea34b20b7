"""Issue 20, items 1 and 4: a 2-process DDP fit with mixup and the stratified sampler, SIGKILL-ed
mid-epoch after a step checkpoint and resumed with ``--ckpt_path``, ends bit-identical to an
uninterrupted 2-process run; resuming that mid-epoch checkpoint with another process count (2 -> 1, and
a 1-process one with 2: tests/data/test_loading.py) is refused in one line naming the count it was
taken with.

(The issue's crash: rank 1 segfaulted in ``Generator.set_state`` of mixup's checkpointed generator; since
issue 15 mixup keeps no state, it is seeded per epoch, rank and batch.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lt_lightning.checkpoints import load_checkpoint_file
from tests.cli.helpers import FIT_SCRIPT, assert_same_state, cli_env, digits

pytestmark = [pytest.mark.slow, pytest.mark.ddp]

RUN = Path("runs/digits_lt/fixed_etf/seed0")
DDP = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
STEPS = (
    "--trainer.callbacks+={class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: "
    '{dirpath: "runs/digits_lt/fixed_etf/seed{seed}/steps", every_n_train_steps: 3, save_last: true}}'
)
ARGS = [
    "--config",
    digits("fixed_etf"),
    "--trainer.deterministic",
    "true",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.max_epochs",
    "2",
    "--model.init_args.mixup",
    "{alpha: 1.0}",
    "--data.init_args.sampler",
    "stratified",
    STEPS,
]


def _fit(cwd: Path, kill: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(FIT_SCRIPT), kill, *ARGS, *args],
        cwd=cwd,
        env=cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("lt-lightning: error:")]


@pytest.fixture(scope="module")
def killed_ddp(tmp_path_factory) -> tuple[Path, Path]:
    """(the uninterrupted 2-process run's folder, the killed one's), and the killed run's step-15
    checkpoint kept as ``step15.ckpt`` (a resumed run replaces the step files)."""
    full, killed = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("killed")
    proc = _fit(full, "none", *DDP)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _fit(killed, "step:15", *DDP).returncode == -9  # both ranks SIGKILL-ed after step 15's checkpoint
    ckpt = killed / RUN / "steps" / "last.ckpt"
    shutil.copy(ckpt, killed / "step15.ckpt")
    return full, killed


def test_ddp_mixup_stratified_kill_9_mid_epoch_then_resume_is_bit_identical(killed_ddp):
    full, killed = killed_ddp
    per_epoch = load_checkpoint_file(full / RUN / "last.ckpt")["global_step"] // 2
    step15 = load_checkpoint_file(killed / "step15.ckpt")
    assert (
        step15["global_step"] == 15 and step15["epoch"] == 1 and per_epoch < 15 < 2 * per_epoch
    )  # mid epoch 1
    assert step15["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"samples_done": (15 - per_epoch) * 16, "batch_size": 16, "num_replicas": 2}
    ]
    resumed = _fit(killed, "none", *DDP, "--ckpt_path", str(killed / "step15.ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for sub in ("", "steps"):
        a, b = (
            load_checkpoint_file(full / RUN / sub / "last.ckpt"),
            load_checkpoint_file(killed / RUN / sub / "last.ckpt"),
        )
        assert a["global_step"] == b["global_step"] == 2 * per_epoch and a["epoch"] == b["epoch"]
        assert_same_state(a["state_dict"], b["state_dict"])


def test_resuming_a_2_process_checkpoint_mid_epoch_with_1_is_refused_in_one_line(killed_ddp, tmp_path):
    _, killed = killed_ddp
    errors = _one_line(_fit(tmp_path, "none", "--ckpt_path", str(killed / "step15.ckpt")))
    assert len(errors) == 1, errors
    # the global batch of 32 is 16 a process with 2, 32 with 1: both differences are named
    assert "mid-epoch with batch size 16 (this run: 32) and 2 processes (this run: 1)" in errors[0]
