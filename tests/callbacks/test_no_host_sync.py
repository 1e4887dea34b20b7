"""A training step makes no host synchronisation: with a shipped config's callbacks, lt_lightning's code
(the module, the finite guard, the NC callback, the loaders) reads no tensor back to the host between
``on_train_batch_start`` and ``on_train_batch_end``. The finite guard reads its flags every
``log_every_n_steps`` steps, after the step, when Lightning reads the logged values anyway.

Counted on the CPU by wrapping the tensor methods that return host values; on a GPU the same runs under
``torch.cuda.set_sync_debug_mode("error")``, which catches any synchronisation, Lightning's included.
"""

from __future__ import annotations

import sys
from collections import Counter

import lightning as L
import pytest
import torch

from lt_lightning.cli import build_cli

pytestmark = pytest.mark.slow

#: tensor methods whose result lives on the host: each is a device synchronisation on a GPU
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
#: reads that are no extra synchronisation on a GPU, at most one per step each (the implicit ETF's
#: first step solves twice: + 1); more still fails
NOT_A_SYNC = {
    # mixup's lam comes from a CPU generator: int() of a CPU tensor, never of a device tensor
    "lt_lightning.data.augment:mixup_batch": "a CPU tensor",
    # the implicit ETF's solve validates its input in one read right before torch.linalg.svd, which
    # synchronises the device with the CPU anyway (torch's docs: it checks its result on the host)
    "lt_lightning.nn.nearest_etf:_check_values": "next to the SVD's own synchronisation",
}


class _HostReads(L.Callback):
    """Counts host reads made by lt_lightning frames while a training batch runs."""

    def __init__(self) -> None:
        self.active = False
        self.inside: Counter[str] = Counter()
        self.outside: Counter[str] = Counter()
        self.steps = 0
        self.checkpoints = 0
        self.evaluations = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.active = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.active = False
        self.steps += 1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.checkpoints += 1

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.evaluations += 1  # the sanity check included


@pytest.fixture
def counted(monkeypatch):
    counter = _HostReads()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, __original=original, __name=name, **kwargs):
            frame = sys._getframe(1)
            module = frame.f_globals.get("__name__", "")
            if module.startswith("lt_lightning"):
                where = f"{module}:{frame.f_code.co_name}:{frame.f_lineno} .{__name}"
                (counter.inside if counter.active else counter.outside)[where] += 1
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return counter


def _fit(config: str, counter: _HostReads, tmp_path, *extra: str) -> L.Trainer:
    args = [  # run=False: no subcommand, the trainer's fit is called below
        "-c",
        config,
        "--trainer.max_epochs",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger",  # the configs' LearningRateMonitor needs a logger; W&B is off in tests
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(tmp_path),
        "--trainer.callbacks+=lt_lightning.callbacks.NeuralCollapseCallback",
        "--trainer.callbacks.every_n_epochs",
        "1",
        *extra,
    ]
    cli = build_cli(args, run=False)
    cli.trainer.callbacks.insert(0, counter)  # first: its batch-end hook closes the window before the others
    for cb in cli.trainer.checkpoint_callbacks:
        cb.dirpath = str(tmp_path / "ckpt")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.trainer


#: every shipped digits config that trains (stage 2 needs a stage-1 checkpoint), with its callbacks
TRAINING_CONFIGS = {
    "joint": ("configs/digits_lt/joint.yaml", ()),
    "joint-device": ("configs/digits_lt/joint.yaml", ("--data.init_args.pipeline", "device")),
    # the shipped progress bar (its per-step postfix) on, as a user runs it
    "joint-progress-bar": ("configs/digits_lt/joint.yaml", ("--trainer.enable_progress_bar", "true")),
    "fixed_etf": ("configs/digits_lt/fixed_etf.yaml", ()),
    "fixed_etf-mixup": ("configs/digits_lt/fixed_etf.yaml", ("--model.init_args.mixup", "{alpha: 1.0}")),
    "fixed_etf_ce": ("configs/digits_lt/fixed_etf_ce.yaml", ()),
    "tde": ("configs/digits_lt/tde.yaml", ()),
    "implicit_etf": ("configs/digits_lt/implicit_etf.yaml", ()),
    "ldam_drw": ("configs/digits_lt/ldam_drw.yaml", ()),
    "balanced_softmax": ("configs/digits_lt/balanced_softmax.yaml", ()),
    "logit_adjust": ("configs/digits_lt/logit_adjust.yaml", ()),
}


@pytest.mark.parametrize("config, extra", list(TRAINING_CONFIGS.values()), ids=list(TRAINING_CONFIGS))
def test_training_steps_read_nothing_back_to_the_host(counted, tmp_path, config, extra):
    trainer = _fit(config, counted, tmp_path, *extra)
    assert counted.steps == trainer.global_step > 0
    inside = {k: n for k, n in counted.inside.items() if k.rpartition(":")[0] not in NOT_A_SYNC}
    assert not inside, dict(counted.inside)
    assert all(n <= counted.steps + 1 for n in counted.inside.values()), dict(counted.inside)
    # outside the steps the finite guard reads its flags once every log_every_n_steps steps, once per
    # checkpoint (with the weights' finiteness in the same read) and once when training ends; its check of
    # the evaluation inputs reads once per validation epoch
    guard = {k: n for k, n in counted.outside.items() if "callbacks.finite" in k}
    eval_reads = sum(n for k, n in guard.items() if ":_eval_end:" in k)
    guard_reads = sum(guard.values()) - eval_reads
    expected = trainer.global_step // trainer.log_every_n_steps + counted.checkpoints + 1
    assert counted.checkpoints > 0 and guard_reads == expected, dict(counted.outside)
    assert eval_reads == counted.evaluations > 0, dict(counted.outside)


def test_the_counter_sees_a_host_read_in_a_step(counted, tmp_path, monkeypatch):
    # the test can fail: a step whose lt_lightning code reads the loss back is caught
    import lt_lightning.models.base as base

    namespace = {"__name__": "lt_lightning.models.base", "torch": torch}
    exec(  # a finite_flags that also reads the loss, compiled as lt_lightning code
        "def finite_flags(loss, features):\n"
        "    loss.item()\n"
        "    return torch.stack((torch.isfinite(loss).all(), torch.isfinite(features).all()))\n",
        namespace,
    )
    monkeypatch.setattr(base, "finite_flags", namespace["finite_flags"])
    trainer = _fit("configs/digits_lt/joint.yaml", counted, tmp_path)
    reads = [k for k in counted.inside if k.endswith(".item")]
    assert reads and sum(counted.inside[k] for k in reads) == trainer.global_step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "name", ["joint-device", "joint-progress-bar", "fixed_etf-mixup", "tde", "implicit_etf"]
)
def test_no_synchronisation_in_a_step_on_a_gpu(tmp_path, name):
    # any synchronisation between a batch's start and end raises, Lightning's and torch's included, with
    # the config's own log_every_n_steps (the steps that log their loss)
    config, extra = TRAINING_CONFIGS[name]

    class _SyncErrors(L.Callback):
        def on_train_batch_start(self, *args) -> None:
            torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, *args) -> None:
            torch.cuda.set_sync_debug_mode("default")

    cli = build_cli(
        [
            "-c",
            config,
            "--trainer.accelerator",
            "gpu",
            "--trainer.max_epochs",
            "1",
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir",
            str(tmp_path),
            "--data.init_args.pipeline",
            "device",
            "--trainer.default_root_dir",
            str(tmp_path),
            *extra,
        ],
        run=False,
    )
    cli.trainer.callbacks.insert(0, _SyncErrors())
    for cb in cli.trainer.checkpoint_callbacks:
        cb.dirpath = str(tmp_path / "ckpt")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step > 0
