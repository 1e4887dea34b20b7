"""callbacks/finite.py: ``FiniteGuard`` stops a diverging run at the step it diverged without a host read
per step. A module made to go non-finite at a chosen batch is the reference: the error names that
step, the quantity and the step it was noticed at (the first multiple of ``check_every_n_steps``
after it, or the next checkpoint); that step's update is skipped (parameters equal the ones before it,
through ``found_inf`` for fused optimizers and AGD); no checkpoint is written after it; under DDP both
ranks stop at the same step; the flags are read once every N steps."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lt_lightning.callbacks import FiniteGuard, NonFiniteError
from lt_lightning.checkpoints import load_checkpoint_file
from lt_lightning.models import FixedETFModule, JointModule
from lt_lightning.optim import AGD, LRSchedule
from tests.models.helpers import D, cpu_trainer, model_kwargs, sgd, synthetic_dm

SCRIPT = Path(__file__).with_name("ddp_finite_script.py")


class Inject:
    """Makes the loss and/or the features of training batch ``bad_batch`` (epoch 0) non-finite."""

    bad_batch = -1
    what = "loss"  # "loss", "features" or "loss and features"

    def training_step(self, batch, batch_idx):
        self._now = batch_idx if self.current_epoch == 0 else -2
        return super().training_step(batch, batch_idx)

    def _bad(self) -> bool:
        return self.training and getattr(self, "_now", -2) == self.bad_batch

    def extract_features(self, x):
        features = super().extract_features(x)
        if self._bad() and "features" in self.what:
            features = features.index_fill(0, torch.tensor([0]), torch.nan)
        return features

    def compute_loss(self, logits, features, targets, count_labels):
        # features only: a loss that ignores the NaN logits (the loss flag stays true)
        clean = logits.nan_to_num(0.0) if self.what == "features" else logits
        loss = super().compute_loss(clean, features, targets, count_labels)
        return loss * torch.nan if self._bad() and "loss" in self.what else loss


class BadJoint(Inject, JointModule):
    pass


class BadETF(Inject, FixedETFModule):
    pass


class _BiasFreeMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D, 32, bias=False), nn.ReLU())
        self.out_features = 32

    def forward(self, x):
        return self.net(x)


def _model(optimizer: str = "sgd", bad_batch: int = 3, what: str = "loss"):
    dm = synthetic_dm()
    torch.manual_seed(0)
    if optimizer == "agd":
        kwargs = {"backbone": _BiasFreeMLP(), "neck": "l2", "optimizer": functools.partial(AGD, gain=2.0)}
        model = BadETF(**model_kwargs(dm, **kwargs))
    else:
        parts = {
            "sgd": sgd(),
            "sgd-fused": sgd(fused=True),
            "adamw": functools.partial(torch.optim.AdamW, lr=0.01),
        }
        model = BadJoint(**model_kwargs(dm, optimizer=parts[optimizer], lr_schedule=LRSchedule("constant")))
    model.bad_batch, model.what = bad_batch, what
    return dm, model


def noticed_at(bad_step: int, every: int) -> int:
    """The first step after ``bad_step`` at which the flags are read: a multiple of ``every``."""
    return -(-(bad_step + 1) // every) * every


@pytest.mark.parametrize("what", ["loss", "features", "loss and features"])
@pytest.mark.parametrize("every", [1, 4])
def test_the_first_bad_step_and_the_quantity_are_named(tmp_path, what, every):
    dm, model = _model(bad_batch=5, what=what)
    trainer = cpu_trainer(tmp_path, max_epochs=1, callbacks=[FiniteGuard(check_every_n_steps=every)])
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(model, datamodule=dm)
    expected = f"non-finite {what} (NaN or inf) at training step 5 (noticed at step {noticed_at(5, every)});"
    assert str(info.value).startswith(expected), str(info.value)
    assert trainer.global_step == noticed_at(5, every)  # it stopped there


def test_the_default_period_is_log_every_n_steps(tmp_path):
    dm, model = _model(bad_batch=2)
    trainer = cpu_trainer(tmp_path, max_epochs=1, log_every_n_steps=7, callbacks=[FiniteGuard()])
    with pytest.raises(NonFiniteError, match=r"at training step 2 \(noticed at step 7\)"):
        trainer.fit(model, datamodule=dm)


class _Record(L.Callback):
    """After every step (and after the guard put a bad step's parameters back): parameters, found_inf."""

    def __init__(self) -> None:
        self.params: list[dict[str, torch.Tensor]] = []
        self.found_inf: list[float | None] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.params.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})
        inner = trainer.optimizers[0]
        flag = getattr(inner, "found_inf", None)
        self.found_inf.append(None if flag is None else float(flag))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "sgd-fused", "agd"])
def test_the_update_of_the_bad_step_is_skipped(tmp_path, optimizer):
    bad = 3
    dm, model = _model(optimizer, bad_batch=bad)
    record = _Record()
    guard = FiniteGuard(check_every_n_steps=100)  # read at the end: the run goes on after the bad step
    trainer = cpu_trainer(tmp_path, max_epochs=1, max_steps=6, callbacks=[guard, record])
    with pytest.raises(NonFiniteError, match=rf"at training step {bad} \(noticed at step 6\)"):
        trainer.fit(model, datamodule=dm)
    before, after, next_ = record.params[bad - 1], record.params[bad], record.params[bad + 1]
    assert all(torch.equal(after[n], before[n]) for n in before)  # skipped, bit for bit
    assert any(not torch.equal(next_[n], after[n]) for n in after)  # a good step does move them
    assert all(torch.isfinite(p).all() for p in record.params[-1].values())
    if optimizer in ("sgd-fused", "agd"):  # skipped on the device by the optimizer (GradScaler's protocol)
        assert record.found_inf == [1.0 if i == bad else 0.0 for i in range(6)]
    else:  # gradients zeroed and the parameters put back
        assert record.found_inf == [None] * 6


def test_under_gradient_accumulation_every_micro_batch_counts(tmp_path):
    # regression: only the last micro-batch's flags were read, so a NaN in the first one went through
    # (its NaN update applied) and was reported one step late as "loss and features"
    dm, model = _model(bad_batch=2)  # batch 2 = the first micro-batch of step 1
    record = _Record()
    guard = FiniteGuard(check_every_n_steps=100)
    trainer = cpu_trainer(
        tmp_path, max_epochs=1, max_steps=4, accumulate_grad_batches=2, callbacks=[guard, record]
    )
    with pytest.raises(NonFiniteError, match=r"^non-finite loss \(NaN or inf\) at training step 1 "):
        trainer.fit(model, datamodule=dm)
    steps = record.params[1::2]  # after each optimizer step
    assert all(torch.equal(steps[1][n], steps[0][n]) for n in steps[0])
    assert all(torch.isfinite(p).all() for p in record.params[-1].values())


def test_no_checkpoint_is_written_after_the_bad_step(tmp_path):
    bad = 3
    dm, model = _model(bad_batch=bad)
    save = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=1,
        enable_checkpointing=True,
        callbacks=[FiniteGuard(check_every_n_steps=100), save],
    )
    with pytest.raises(NonFiniteError, match=rf"at training step {bad} \(noticed at step {bad + 1}\)"):
        trainer.fit(model, datamodule=dm)
    written = sorted(int(p.stem.rpartition("step=")[2]) for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert written == list(range(1, bad + 1))  # after steps 0..bad-1; none after the bad step
    for path in (tmp_path / "ckpt").glob("*.ckpt"):
        state = load_checkpoint_file(path)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_a_checkpoint_with_non_finite_weights_is_refused_naming_them(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm))
    trainer = cpu_trainer(tmp_path, max_epochs=1, callbacks=[FiniteGuard()])
    trainer.fit(model, datamodule=dm)
    with torch.no_grad():
        model.head.weight[0, 0] = torch.inf
    with pytest.raises(NonFiniteError, match=r"at step \d+: non-finite weights in head\.weight$"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()
    with torch.no_grad():
        for value in model.state_dict().values():  # parameters and BatchNorm statistics
            if value.is_floating_point():
                value.fill_(torch.nan)
    with pytest.raises(
        NonFiniteError, match=r"non-finite weights in backbone\.layers\.1\.weight, .* and \d+ more"
    ):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")


def test_a_resumed_run_counts_steps_from_the_checkpoint(tmp_path):
    dm, model = _model(bad_batch=-1)
    save = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    cpu_trainer(tmp_path, max_epochs=1, max_steps=4, enable_checkpointing=True, callbacks=[save]).fit(
        model, datamodule=dm
    )
    dm, resumed = _model(bad_batch=6)  # batch 6 of epoch 0 is training step 6
    trainer = cpu_trainer(tmp_path, max_epochs=1, callbacks=[FiniteGuard(check_every_n_steps=1)])
    with pytest.raises(NonFiniteError, match=r"at training step 6 \(noticed at step 7\)"):
        trainer.fit(resumed, datamodule=dm, ckpt_path=str(tmp_path / "ckpt/epoch=0-step=4.ckpt"))


def test_a_finite_run_is_untouched_and_a_module_without_flags_is_ignored(tmp_path):
    dm, model = _model(bad_batch=-1)
    torch.manual_seed(0)
    dm2, plain = _model(bad_batch=-1)
    cpu_trainer(tmp_path, max_epochs=1, callbacks=[FiniteGuard(check_every_n_steps=1)]).fit(
        model, datamodule=dm
    )
    cpu_trainer(tmp_path, max_epochs=1).fit(plain, datamodule=dm2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))

    class NoFlags(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(D, 6)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_val_batches=0, callbacks=[FiniteGuard()])
    trainer.fit(NoFlags(), datamodule=synthetic_dm())
    assert trainer.global_step > 0


@pytest.mark.parametrize("accumulate", [1, 2])
def test_the_flags_are_read_once_every_n_steps(tmp_path, monkeypatch, accumulate):
    reads = []
    original = torch.Tensor.tolist

    def counted(self):
        if sys._getframe(1).f_globals.get("__name__") == "lt_lightning.callbacks.finite":
            reads.append(self.numel())
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    dm, model = _model(bad_batch=-1)
    guard = FiniteGuard(check_every_n_steps=3)
    trainer = cpu_trainer(
        tmp_path, max_epochs=-1, max_steps=10, accumulate_grad_batches=accumulate, callbacks=[guard]
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 10
    assert len(reads) == 10 // 3 + 1  # steps 3, 6, 9 and the end of training; nothing per step


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_check_every_n_steps_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="check_every_n_steps must be a positive int or None"):
        FiniteGuard(check_every_n_steps=bad)


@pytest.mark.slow
@pytest.mark.ddp
def test_under_ddp_both_ranks_stop_at_the_same_step(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(SCRIPT.parents[2]),
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    # only rank 1's loss was NaN (at its batch 3); the flags are reduced, so rank 0 stops too
    expected = "non-finite loss (NaN or inf) at training step 3 (noticed at step 4);"
    assert r0["error"].startswith(expected) and r1["error"] == r0["error"]
    assert r0["global_step"] == r1["global_step"] == 4
    for key, value in r0["params"].items():  # the bad step skipped on both: the same finite weights
        assert torch.equal(value, r1["params"][key]) and torch.isfinite(value).all(), key


# ---------------------------------------------------------------------------------- evaluation data (issue 20)
def _nan_in_eval_data(dm, index: int = 70):
    """``dm`` with one NaN input in evaluation sample ``index`` (batch 2 of 32; val and test alike)."""
    setup = dm.setup

    def setup_then_poison(stage=None):
        setup(stage)
        for dataset in (dm.val_dataset, dm.test_dataset):
            if dataset is not None:
                dataset.inputs[index, 3] = torch.nan

    dm.setup = setup_then_poison
    return dm


def test_nan_in_the_validation_data_warns_once_naming_the_split_and_the_batch(tmp_path):
    dm = _nan_in_eval_data(synthetic_dm())
    model = JointModule(**model_kwargs(dm))
    trainer = cpu_trainer(tmp_path, max_epochs=3, callbacks=[FiniteGuard()])
    with pytest.warns(
        UserWarning, match=r"the val data holds NaN or inf inputs \(first in val batch 2\)"
    ) as record:
        trainer.fit(model, datamodule=dm)
    assert sum("the val data holds NaN" in str(w.message) for w in record) == 1  # once, not every epoch
    assert torch.isnan(trainer.callback_metrics["val/loss"])  # what the warning explains
    with pytest.warns(UserWarning, match=r"the test data holds NaN or inf inputs \(first in test batch 2\)"):
        trainer.test(model, datamodule=dm, verbose=False)


def test_clean_validation_data_gives_no_warning(tmp_path, recwarn):
    dm = synthetic_dm()
    trainer = cpu_trainer(tmp_path, max_epochs=1, callbacks=[FiniteGuard()])
    trainer.fit(JointModule(**model_kwargs(dm)), datamodule=dm)
    assert not [w for w in recwarn if "holds NaN or inf inputs" in str(w.message)]


@pytest.mark.parametrize("is_bad", [True, False])
def test_skip_and_restore_are_exact_over_mixed_dtypes_and_shapes(is_bad):
    # the non-fused path (gradients zeroed in place, a snapshot put back by torch.where): every parameter
    # and gradient must come back bit for bit (a bad step) or be left alone (a good one), NaN included
    from lt_lightning.callbacks.finite import _restore, _skip_update

    torch.manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(3, 4)),
        torch.nn.Parameter(torch.randn(5, dtype=torch.float64)),
        torch.nn.Parameter(torch.randn(2, 1, 3)),
        torch.nn.Parameter(torch.randn(())),
    ]
    frozen = torch.nn.Parameter(torch.randn(2))  # no gradient: not touched
    for p in params:
        p.grad = torch.randn_like(p)
    params[0].grad[1, 2] = float("nan")
    opt = torch.optim.SGD([*params, frozen], lr=0.1, momentum=0.9)
    before = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    bad = torch.tensor(is_bad)
    saved = _skip_update(opt, bad)
    for p, g in zip(params, grads):
        expected = torch.zeros_like(g) if is_bad else g
        torch.testing.assert_close(p.grad, expected, rtol=0, atol=0, equal_nan=True)
    with torch.no_grad():
        for p in params:
            p.add_(1.0).mul_(float("nan") if is_bad else 2.0)  # a step that wrecks the weights
    after_step = [p.detach().clone() for p in params]
    _restore(saved, bad)
    for p, b, a in zip(params, before, after_step):
        assert p.dtype == b.dtype and p.shape == b.shape
        assert torch.equal(p, b) if is_bad else torch.equal(p, a)
