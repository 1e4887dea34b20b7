"""models/hooks.py: the callbacks a method adds for its parts. ``AGDInit`` gives AGD's orthogonal
initialisation (every weight's singular values equal to its spectral scale, the reference of
tests/test_optim.py) at the start of the first fit only, refuses what AGD cannot train by name, and
logs AGD's step size."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from torch import nn

from lt_lightning.models import FixedETFModule, ImplicitETFModule, JointModule
from lt_lightning.models.hooks import AGDInit, method_callbacks
from lt_lightning.optim import AGD, LRSchedule, agd_scale
from tests.models.helpers import D, cpu_trainer, model_kwargs, synthetic_dm

CONSTANT = LRSchedule("constant")


class _BiasFreeMLP(nn.Module):
    """Two bias-free linear layers: what AGD trains."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(D, 32, bias=False), nn.ReLU(), nn.Linear(32, 32, bias=False), nn.ReLU()
        )
        self.out_features = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _agd_module(dm, **kwargs) -> ImplicitETFModule:
    args = model_kwargs(
        dm,
        backbone=_BiasFreeMLP(),
        neck="l2",
        feature_scale=5.0,
        optimizer=functools.partial(AGD, gain=10.0),
        lr_schedule=CONSTANT,
    )
    args.update(kwargs)
    return ImplicitETFModule(**args)


def _trainable(model) -> list[torch.Tensor]:
    return [p for _, p in model.named_trainable_parameters()]


def test_method_callbacks_add_agd_init_for_agd_only():
    dm = synthetic_dm()
    assert [type(c) for c in method_callbacks(_agd_module(dm))] == [AGDInit]
    assert [type(c) for c in _agd_module(dm, optimizer=AGD).configure_callbacks()] == [AGDInit]
    assert JointModule(**model_kwargs(dm)).configure_callbacks() == []


def test_agd_init_at_the_first_fit_then_training(tmp_path):
    torch.manual_seed(0)
    dm = synthetic_dm()
    model = _agd_module(dm)
    AGDInit().setup(None, model, "fit")
    for p in _trainable(model):
        sv = torch.linalg.svdvals(p.detach())
        torch.testing.assert_close(sv, torch.full_like(sv, agd_scale(p.shape)), rtol=1e-5, atol=1e-6)
    before = [p.detach().clone() for p in _trainable(model)]
    AGDInit().setup(None, model, "fit")  # a second fit does not re-initialise
    AGDInit().setup(None, model, "validate")
    assert all(torch.equal(a, p) for a, p in zip(before, _trainable(model)))
    trainer = cpu_trainer(tmp_path, max_epochs=4)
    trainer.fit(model, datamodule=dm)
    assert isinstance(trainer.optimizers[0], AGD) and trainer.optimizers[0].depth == 2
    logged = trainer.callback_metrics
    assert "train/agd_log_step_epoch" in logged
    assert logged["train/loss_epoch"] < 1.0  # CE at K=6 starts near log 6 = 1.79
    assert trainer.validate(model, datamodule=dm, verbose=False)[0]["val/acc"] > 0.6


def test_a_fit_initialises_through_the_modules_callback(tmp_path):
    torch.manual_seed(0)
    dm = synthetic_dm()
    model = _agd_module(dm)
    seen = []

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):  # after every callback's setup
            seen.extend((p.shape, torch.linalg.svdvals(p.detach())) for p in _trainable(pl_module))

    cpu_trainer(tmp_path, max_epochs=1, max_steps=1, callbacks=[Probe()]).fit(model, datamodule=dm)
    assert len(seen) == 2
    for shape, sv in seen:
        torch.testing.assert_close(sv, torch.full_like(sv, agd_scale(shape)), rtol=1e-5, atol=1e-6)


def test_resumed_and_loaded_agd_weights_are_not_reinitialised(tmp_path):
    torch.manual_seed(0)
    dm = synthetic_dm()
    model = _agd_module(dm)
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(ckpt)
    trained = [p.detach().clone() for p in _trainable(model)]
    # resume: Lightning restores the checkpoint after setup's init
    resumed = _agd_module(dm)
    cpu_trainer(tmp_path, max_epochs=1).fit(resumed, datamodule=dm, ckpt_path=ckpt)
    assert all(torch.equal(a, p) for a, p in zip(trained, _trainable(resumed)))
    # load_from_checkpoint, then a new fit: not re-initialised (the backbone module is given again)
    loaded = ImplicitETFModule.load_from_checkpoint(ckpt, backbone=_BiasFreeMLP())
    AGDInit().setup(None, loaded, "fit")
    assert all(torch.equal(a, p) for a, p in zip(trained, _trainable(loaded)))


def test_agd_refuses_what_it_cannot_train_by_name():
    dm = synthetic_dm()
    batchnorm = _agd_module(
        dm, backbone="mlp", backbone_kwargs={"in_features": D, "hidden": [32], "batchnorm": True}
    )
    with pytest.raises(ValueError, match=r"backbone\.layers\.2\.weight.*bias or a BatchNorm"):
        AGDInit().setup(None, batchnorm, "fit")  # BatchNorm1d affine: refused before any training
    joint = JointModule(**model_kwargs(dm, backbone=_BiasFreeMLP(), optimizer=AGD, lr_schedule=CONSTANT))
    with pytest.raises(ValueError, match=r"'head\.bias'"):  # the linear head's bias
        AGDInit().setup(None, joint, "fit")
    etf = FixedETFModule(
        **model_kwargs(dm, backbone=_BiasFreeMLP(), neck="l2", optimizer=AGD, lr_schedule=CONSTANT)
    )
    AGDInit().setup(None, etf, "fit")  # a frozen ETF and an L2 neck: nothing but 2-d weights
