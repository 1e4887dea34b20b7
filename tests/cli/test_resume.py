"""kill -9 during a real ``lt-lightning fit``, then ``--ckpt_path``: the resumed run ends with the weights of
an uninterrupted one, at an epoch boundary and mid-epoch (every sampler position, mixup, method state).

The mid-epoch position is the one mechanism of :mod:`lt_lightning.data.loading`, applied for every
sampler (bug 1 of issue 15: the stratified sampler ignored it and replayed the epoch).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lt_lightning.checkpoints import load_checkpoint_file
from tests.cli.helpers import assert_same_state, digits, run_fit

pytestmark = pytest.mark.slow  # three short subprocess fits each

DETERMINISTIC = ["--trainer.deterministic", "true", "--trainer.enable_progress_bar", "false"]


def _args(method: str, *extra: str) -> list[str]:
    return ["--config", digits(method), *DETERMINISTIC, *extra]  # later options win


def _last(cwd: Path, method: str, sub: str = "") -> dict:
    return load_checkpoint_file(cwd / f"runs/digits_lt/{method}/seed0" / sub / "last.ckpt")


def _assert_same_run(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert_same_state(a["state_dict"], b["state_dict"])


@pytest.mark.parametrize("method", ["joint", "fixed_etf"])
def test_kill_9_after_an_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, method):
    full, killed = tmp_path / "full", tmp_path / "killed"
    full.mkdir(), killed.mkdir()
    args = _args(method, "--trainer.max_epochs", "4")
    assert run_fit(full, "none", *args).returncode == 0
    assert run_fit(killed, "epoch:1", *args).returncode == -9  # SIGKILL after epoch 1's checkpoint
    assert _last(killed, method)["epoch"] == 1
    ckpt = str(killed / f"runs/digits_lt/{method}/seed0/last.ckpt")
    assert run_fit(killed, "none", *args, "--ckpt_path", ckpt).returncode == 0
    _assert_same_run(_last(full, method), _last(killed, method))


@pytest.fixture(scope="module")
def stage1_ckpt(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("stage1")
    assert run_fit(out, "none", *_args("joint", "--trainer.max_epochs", "1")).returncode == 0
    return str(out / "runs/digits_lt/joint/seed0/last.ckpt")


def _step_checkpoints(method: str, every: int) -> str:
    """A ModelCheckpoint every ``every`` steps into ``<run>/steps`` (the long-epoch configs have one)."""
    init = f'dirpath: "runs/digits_lt/{method}/seed{{seed}}/steps", every_n_train_steps: {every}, save_last: true'
    return f"--trainer.callbacks+={{class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {{{init}}}}}"


@pytest.mark.parametrize(
    ("method", "extra", "resume_from"),
    [
        # bug 1: the stratified sampler replayed the interrupted epoch (weights 0.04 off); `last` is the
        # newest last.ckpt of the run's checkpoint callbacks: the step checkpoint
        ("joint", ("--data.init_args.sampler", "stratified"), "last"),
        ("fixed_etf", ("--model.init_args.mixup", "{alpha: 1.0}"), "steps"),  # sampler position + mixup
        ("tde", (), "steps"),  # the moving-average feature
        ("implicit_etf", (), "steps"),  # tracked class means and the solved Q
        ("crt", (), "steps"),  # stage 2, class-balanced sampler
    ],
    ids=["stratified", "fixed_etf-mixup", "tde", "implicit_etf", "crt"],
)
def test_kill_9_mid_epoch_then_resume_is_exact(tmp_path, stage1_ckpt, method, extra, resume_from):
    args = _args(method, *extra, "--trainer.max_epochs", "2", _step_checkpoints(method, 6))
    if method == "crt":
        args += ["--model.init_args.stage1_checkpoint", stage1_ckpt]
    full, killed = tmp_path / "full", tmp_path / "killed"
    full.mkdir(), killed.mkdir()
    assert run_fit(full, "none", *args).returncode == 0
    assert run_fit(killed, "step:18", *args).returncode == -9  # mid epoch 1
    per_epoch = _last(full, method)["global_step"] // 2
    assert 6 < per_epoch < 18  # the checkpoint of step 18 is inside the second epoch
    ckpt = _last(killed, method, "steps")
    assert ckpt["global_step"] == 18 and ckpt["epoch"] == 1
    # the loader's position: the samples of the interrupted epoch already trained (data/loading.py)
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"samples_done": (18 - per_epoch) * 32, "batch_size": 32, "num_replicas": 1}
    ]
    path = "last" if resume_from == "last" else str(killed / f"runs/digits_lt/{method}/seed0/steps/last.ckpt")
    resumed = run_fit(killed, "none", *args, "--ckpt_path", path)
    assert resumed.returncode == 0
    # Lightning names the file it restored: the step checkpoint, also when chosen as `last`
    assert "Restored all states from the checkpoint at " in resumed.stderr + resumed.stdout
    assert str(Path("seed0", "steps", "last.ckpt")) in resumed.stderr + resumed.stdout
    _assert_same_run(_last(full, method), _last(killed, method))
