"""lt_lightning.loops: the one evaluation pass a hook runs. ``evaluation_mode`` gives eval mode and no
gradients and puts back every submodule's mode and the global RNGs (torch, numpy, Python), exception
or not; ``evaluation_pass`` hands the step ``(x, y)`` batches converted by the trainer's precision
plugin (bfloat16 under ``bf16-true``). Its three users (the NC callback, NCM fitting, τ selection)
leave the RNGs and the modes as they were (the reference: the states recorded before the pass)."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.callbacks import NeuralCollapseCallback
from lt_lightning.loops import evaluation_mode, evaluation_pass
from lt_lightning.models import JointModule, NCMModule, TauNormModule
from tests.models.helpers import cpu_trainer, model_kwargs, stage2_kwargs, synthetic_dm


def _rng_state() -> tuple:
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _assert_same_rng(before: tuple, after: tuple) -> None:
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])
    assert before[2] == after[2]


def _modes(module: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in module.named_modules()}


def _mixed() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 2)))
    net.train()
    net[1].eval()  # a frozen BatchNorm inside a training model: .train() would undo it
    return net


def test_evaluation_mode_restores_every_mode_and_every_rng():
    net = _mixed()
    modes, rng = _modes(net), _rng_state()
    with evaluation_mode(net):
        assert not any(m.training for m in net.modules()) and not torch.is_grad_enabled()
        torch.rand(3), np.random.rand(3), random.random()  # what a DataLoader iterator draws
    assert _modes(net) == modes and torch.is_grad_enabled()
    _assert_same_rng(rng, _rng_state())
    torch.rand(1)
    assert not torch.equal(rng[0], torch.get_rng_state())  # the comparison can fail


def test_after_an_exception_the_modes_come_back():
    # (the RNGs do not: Lightning's isolate_rng restores them on a normal exit only)
    net = _mixed()
    modes = _modes(net)
    with pytest.raises(RuntimeError, match="inside"), evaluation_mode(net):
        raise RuntimeError("inside")
    assert _modes(net) == modes and torch.is_grad_enabled()


def _loader(n=10, batch=4):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % 2), batch_size=batch)


def test_evaluation_pass_yields_the_step_of_every_batch():
    net = nn.Linear(4, 2)
    loader = _loader()
    got = list(evaluation_pass(None, net, loader, lambda x: x * 2, desc="t"))
    expected = [(x * 2, y) for x, y in loader]
    assert len(got) == len(expected) == 3
    for (a, ya), (b, yb) in zip(got, expected):
        assert torch.equal(a, b) and torch.equal(ya, yb) and a.dtype == torch.float32
    assert len(list(evaluation_pass(None, net, loader, lambda x: x, desc="t", max_batches=2))) == 2
    with pytest.raises(TypeError, match=r"expected \(x, y\) batches from the datamodule, got Tensor"):
        list(evaluation_pass(None, net, [torch.zeros(2, 4)], lambda x: x, desc="t"))


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-true", torch.bfloat16), ("32-true", torch.float32)])
def test_evaluation_pass_converts_the_inputs_with_the_precision_plugin(precision, dtype):
    trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False)
    seen = [x.dtype for x, _ in evaluation_pass(trainer, nn.Linear(4, 2), _loader(), lambda x: x, desc="t")]
    assert seen == [dtype] * 3
    ys = [y for _, y in evaluation_pass(trainer, nn.Linear(4, 2), _loader(), lambda x: x, desc="t")]
    assert all(y.dtype == torch.long for y in ys)  # labels are not converted


# ---- the three users ----------------------------------------------------------------------------------
def _shuffled(dm, split: str) -> DataLoader:
    """A loader whose iterator draws from torch's global generator (shuffle): the reason for isolate_rng."""
    dm.setup("fit")
    dataset = dm.train_eval_dataset if split == "train" else dm.val_dataset
    return DataLoader(dataset, batch_size=32, shuffle=True)


def _check_pass_leaves_state(module, run):
    module.train()
    module.head.eval()  # a mode the pass must not change back to train
    modes, rng = _modes(module), _rng_state()
    run()
    assert _modes(module) == modes
    _assert_same_rng(rng, _rng_state())


def test_ncm_fitting_leaves_the_rngs_and_modes(stage1_ckpt):
    dm = synthetic_dm()
    model = NCMModule(**stage2_kwargs(dm, stage1_ckpt))
    _check_pass_leaves_state(model, lambda: model.fit_ncm(_shuffled(dm, "train")))
    assert bool(model.post_hoc_ready)


def test_tau_selection_leaves_the_rngs_and_modes(stage1_ckpt):
    dm = synthetic_dm(val_per_class=10)
    model = TauNormModule(**stage2_kwargs(dm, stage1_ckpt, tau_grid=[0.0, 1.0]))
    _check_pass_leaves_state(model, lambda: model.select_tau(_shuffled(dm, "val")))
    assert bool(model.post_hoc_ready)


class _Probe(L.Callback):
    """Around the NC callback at the end of a training epoch: sets a mixed mode, records, compares."""

    def __init__(self, first: bool, shared: dict) -> None:
        self.first, self.shared = first, shared

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.first:
            pl_module.head.eval()
            self.shared["before"] = (_modes(pl_module), _rng_state())
        else:
            modes, rng = self.shared["before"]
            self.shared["same_modes"] = _modes(pl_module) == modes
            _assert_same_rng(rng, _rng_state())
            self.shared["checked"] = self.shared.get("checked", 0) + 1
            pl_module.head.train()


def test_the_nc_callback_leaves_the_rngs_and_modes(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm))
    shared: dict = {}
    nc = NeuralCollapseCallback(every_n_epochs=1, on=("train", "val"), log_figures=False)
    callbacks = [_Probe(True, shared), nc, _Probe(False, shared)]
    cpu_trainer(
        tmp_path, max_epochs=2, callbacks=callbacks, logger=L.pytorch.loggers.CSVLogger(tmp_path)
    ).fit(model, datamodule=dm)
    assert shared["checked"] == 2 and shared["same_modes"]


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
@pytest.mark.parametrize("cls", [NCMModule, TauNormModule], ids=lambda c: c.__name__)
def test_under_bf16_true_the_fitting_pass_gets_bfloat16_inputs(stage1_ckpt, tmp_path, monkeypatch, cls):
    dm = synthetic_dm(val_per_class=8)
    model = cls(
        **stage2_kwargs(dm, stage1_ckpt, **({"tau_grid": [0.0, 1.0]} if cls is TauNormModule else {}))
    )
    seen = []
    original = cls.extract_features

    def spy(self, x):
        seen.append(x.dtype)
        return original(self, x)

    monkeypatch.setattr(cls, "extract_features", spy)
    monkeypatch.setattr(cls, "test_step", lambda self, batch, idx: None)  # only the fitting pass is spied
    cpu_trainer(tmp_path, precision="bf16-true").test(model, datamodule=dm, verbose=False)
    assert seen and set(seen) == {torch.bfloat16}
