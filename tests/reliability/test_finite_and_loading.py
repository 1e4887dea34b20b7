"""Non-finite guard, non-finite inputs to the NC metrics, and checkpoint files that cannot run code."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from lt_lightning.callbacks import FiniteGuard, NonFiniteError
from lt_lightning.checkpoints import AtomicCheckpointIO, load_checkpoint_file
from lt_lightning.metrics import NeuralCollapse
from lt_lightning.metrics.functional import neural_collapse
from lt_lightning.models import DecoupledModule, FixedETFModule, JointModule, TDEModule
from lt_lightning.models.base import CLASS_PATH_KEY, load_module_from_checkpoint
from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm

pytestmark = pytest.mark.slow  # a few short fits each


class _LrJump(L.Callback):
    """From epoch 1 on, an absurd learning rate (what ``lr 1e8`` does from the start)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = 1e30


def _guarded_trainer(tmp_path, *callbacks, max_epochs=3):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=1)
    return cpu_trainer(
        tmp_path,
        max_epochs=max_epochs,
        enable_checkpointing=True,
        callbacks=[FiniteGuard(), *callbacks, ckpt],
        plugins=[AtomicCheckpointIO()],
    )


def test_diverging_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm))
    trainer = _guarded_trainer(tmp_path, _LrJump())
    with pytest.raises(NonFiniteError, match=r"non-finite loss.* at training step (\d+) \(epoch 1") as info:
        trainer.fit(model, datamodule=dm)
    steps_per_epoch = trainer.num_training_batches
    step = int(re.search(r"training step (\d+)", str(info.value)).group(1))
    assert step == steps_per_epoch + 1  # one step at lr 1e30, then the loss of the next is not finite
    # stopped before the optimizer step: the weights in memory are still finite
    assert all(torch.isfinite(p).all() for p in model.parameters())
    last = load_checkpoint_file(tmp_path / "last.ckpt")
    assert last["epoch"] == 0 and last["global_step"] == steps_per_epoch  # epoch 0's, untouched
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


class _NaNFeatures(JointModule):
    def extract_features(self, x):
        features = super().extract_features(x)
        if self.training and self.global_step == 3:
            features = features * torch.nan
        return features


def test_non_finite_features_are_named(tmp_path):
    dm = synthetic_dm()
    trainer = _guarded_trainer(tmp_path)
    with pytest.raises(NonFiniteError, match=r"non-finite loss and features .* at training step 3 "):
        trainer.fit(_NaNFeatures(**model_kwargs(dm)), datamodule=dm)


def test_no_checkpoint_with_non_finite_weights_is_written(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm))
    trainer = _guarded_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    with torch.no_grad():
        model.head.weight[0, 0] = torch.inf
    with pytest.raises(NonFiniteError, match=r"non-finite weights in head\.weight"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_nc_metrics_reject_non_finite_features():
    g = torch.Generator().manual_seed(0)
    features, labels = torch.randn(20, 4, generator=g, dtype=torch.float64), torch.arange(20) % 3
    weight = torch.randn(3, 4, generator=g, dtype=torch.float64)
    features[5, 1] = torch.nan
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        neural_collapse(features, labels, weight)
    metric = NeuralCollapse(3, 4)  # no per-batch check (validate_args=False): caught at compute
    metric.update(features, labels)
    metric.set_classifier(weight)
    with pytest.raises(ValueError, match="not finite"):
        metric.compute()


# ---------------------------------------------------------------------------------- loading files
class _Payload:
    """Pickles to a call that creates a marker file: what a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _stage1(tmp_path: Path, cls=JointModule, **kwargs) -> Path:
    dm = synthetic_dm()
    trainer = cpu_trainer(tmp_path, max_epochs=1, plugins=[AtomicCheckpointIO()])
    trainer.fit(cls(**model_kwargs(dm, **kwargs)), datamodule=dm)
    path = tmp_path / f"{cls.__name__}.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_pickle_payload_in_a_stage1_checkpoint_is_refused_not_run(tmp_path):
    good = torch.load(_stage1(tmp_path), weights_only=True)
    marker = tmp_path / "pwned"
    good["hyper_parameters"]["note"] = _Payload(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(good, evil)
    with pytest.raises(ValueError, match=r"evil\.ckpt.*could run code.*weights_only=True"):
        load_module_from_checkpoint(str(evil))
    dm = synthetic_dm()
    kw = model_kwargs(dm, stage1_checkpoint=str(evil), mode="crt")
    kw.pop("backbone"), kw.pop("backbone_kwargs")
    with pytest.raises(ValueError, match="could run code"):
        DecoupledModule(**kw)
    with pytest.raises(ValueError, match="could run code"):
        AtomicCheckpointIO().load_checkpoint(evil)  # --ckpt_path resumes go through it too
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(JointModule, {}), (FixedETFModule, {"mixup_alpha": 1.0}), (TDEModule, {})],
)
def test_every_methods_checkpoint_loads_weights_only(tmp_path, cls, kwargs):
    path = _stage1(tmp_path, cls, **kwargs)
    module = load_module_from_checkpoint(str(path))
    assert type(module) is cls
    saved = load_checkpoint_file(path)["state_dict"]
    for key, value in module.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_implicit_and_stage2_checkpoints_load_weights_only(tmp_path):
    from lt_lightning.models import ImplicitETFModule

    path = _stage1(tmp_path, ImplicitETFModule)
    assert type(load_module_from_checkpoint(str(path))) is ImplicitETFModule
    dm = synthetic_dm(sampler="class")
    kw = model_kwargs(dm, stage1_checkpoint=str(_stage1(tmp_path)), mode="lws")
    kw.pop("backbone"), kw.pop("backbone_kwargs")
    trainer = cpu_trainer(tmp_path, max_epochs=1, plugins=[AtomicCheckpointIO()])
    trainer.fit(DecoupledModule(**kw), datamodule=dm)
    trainer.save_checkpoint(tmp_path / "stage2.ckpt")
    assert isinstance(load_module_from_checkpoint(str(tmp_path / "stage2.ckpt")), DecoupledModule)


def test_bad_checkpoint_files_name_the_file(tmp_path):
    good = _stage1(tmp_path).read_bytes()
    cases = {
        "missing.ckpt": None,
        "empty.ckpt": b"",
        "garbage.ckpt": b"this is not a checkpoint at all" * 10,
        "truncated.ckpt": good[: len(good) // 2],
        "pickle.ckpt": pickle.dumps({"a": 1}),
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    with pytest.raises(FileNotFoundError, match=r"stage-1 checkpoint not found: .*missing\.ckpt"):
        load_module_from_checkpoint(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match=r"empty\.ckpt' is empty"):
        load_module_from_checkpoint(str(tmp_path / "empty.ckpt"))
    for name in ("garbage.ckpt", "truncated.ckpt", "pickle.ckpt"):
        with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}'"):
            load_module_from_checkpoint(str(tmp_path / name))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 0}, foreign)
    with pytest.raises(ValueError, match=f"not a checkpoint of an lt_lightning module .*{CLASS_PATH_KEY}"):
        load_module_from_checkpoint(str(foreign))
    torch.save({"state_dict": {}, CLASS_PATH_KEY: "os.system"}, foreign)
    with pytest.raises(ValueError, match="not an lt_lightning LongTailModule"):
        load_module_from_checkpoint(str(foreign))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("row", [0, 150, 299])  # among a class's shift samples, past them, the last row
def test_float32_nc_path_rejects_non_finite_features_anywhere(value, row):
    # the float32 path checks finiteness on its class statistics, not with a pass over the features:
    # a non-finite value in any row must still be reported as such
    g = torch.Generator().manual_seed(1)
    features, labels = torch.randn(300, 6, generator=g), torch.arange(300) % 2
    weight = torch.randn(2, 6, generator=g)
    features[row, 3] = value
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        neural_collapse(features, labels, weight)
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        neural_collapse(features, labels, weight, precision="float64")


def test_float32_nc_overflow_is_named_apart_from_non_finite_input():
    g = torch.Generator().manual_seed(2)
    features, labels = (
        torch.randn(40, 3, generator=g) * 1e30,
        torch.arange(40) % 2,
    )  # finite, squares overflow
    weight = torch.randn(2, 3, generator=g)
    with pytest.raises(ValueError, match="overflowed"):
        neural_collapse(features, labels, weight)
