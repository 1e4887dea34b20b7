"""Stage2Module (models/decoupled/stage2.py): the one reader of the stage-1 checkpoint. It reads the file
once, weights-only, rebuilds the stage-1 representation with the builders (no stage-1 LightningModule),
freezes it, records it as ``stage1_module`` so its own checkpoint reloads without the stage-1 file, and
records only its own options (the reference for the weights is the stage-1 checkpoint's state dict)."""

from __future__ import annotations

import shutil

import pytest
import torch

import lt_lightning.models.decoupled.stage2 as stage2
from lt_lightning.models import (
    CRTModule,
    DecoupledModule,
    JointModule,
    LWSModule,
    NCMModule,
    TauNormModule,
    load_module_from_checkpoint,
)
from lt_lightning.models.decoupled.stage2 import read_stage1, stage2_options
from tests.models.helpers import cpu_trainer, fit_stage1, stage2_kwargs, synthetic_dm

STAGE2 = [CRTModule, LWSModule, TauNormModule, NCMModule]


def _prefixed(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def test_read_stage1_rebuilds_the_representation_with_the_checkpoints_weights(stage1_ckpt, monkeypatch):
    state = torch.load(stage1_ckpt, weights_only=True)["state_dict"]
    # no stage-1 LightningModule is built on the way
    monkeypatch.setattr(JointModule, "__init__", lambda *a, **k: pytest.fail("stage 1 instantiated"))
    stage1 = read_stage1(stage1_ckpt, None, num_classes=6)
    for prefix, part in (("backbone.", stage1.backbone), ("neck.", stage1.neck), ("head.", stage1.head)):
        got = part.state_dict()
        expected = _prefixed(state, prefix)
        assert got.keys() == expected.keys() and all(torch.equal(got[k], v) for k, v in expected.items())
    assert stage1.record["class_path"] == "lt_lightning.models.joint.JointModule"
    assert stage1.record["init_args"]["backbone_kwargs"] == {"in_features": 16, "hidden": [32]}


@pytest.mark.parametrize("cls", STAGE2, ids=lambda c: c.__name__)
def test_the_stage1_file_is_read_once_weights_only_and_the_representation_frozen(
    stage1_ckpt, monkeypatch, cls
):
    reads = []
    real = stage2.load_checkpoint_file

    def counted(path, *args, **kwargs):
        reads.append(path)
        return real(path, *args, **kwargs)  # torch.load(weights_only=True) inside

    monkeypatch.setattr(stage2, "load_checkpoint_file", counted)
    model = cls(**stage2_kwargs(synthetic_dm(), stage1_ckpt))
    assert reads == [stage1_ckpt]
    assert not any(p.requires_grad for p in (*model.backbone.parameters(), *model.neck.parameters()))
    state = torch.load(stage1_ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if k.startswith("backbone."))
    weight, bias = model.stage1_classifier
    assert torch.equal(weight, state["head.weight"]) and torch.equal(bias, state["head.bias"])


@pytest.mark.parametrize("cls", STAGE2, ids=lambda c: c.__name__)
def test_only_the_classes_own_options_are_recorded(stage1_ckpt, cls):
    # regression: LongTailModule's representation options (backbone_kwargs, fixdim, ...) were recorded
    # too, so that Cls.load_from_checkpoint of every stage-2 checkpoint failed with a TypeError
    model = cls(**stage2_kwargs(synthetic_dm(), stage1_ckpt))
    assert set(model.hparams) == stage2_options(cls) | {"stage1_module"}
    assert not {"backbone", "backbone_kwargs", "fixdim", "neck", "channels_last"} & set(model.hparams)
    assert {"stage1_checkpoint", "bn_mode", "optimizer", "num_classes"} <= stage2_options(cls)


def test_a_stage2_checkpoint_reloads_without_the_stage1_file(stage1_ckpt, tmp_path):
    copy = tmp_path / "stage1.ckpt"
    shutil.copy(stage1_ckpt, copy)
    dm = synthetic_dm()
    model = NCMModule(**stage2_kwargs(dm, copy))
    trainer = cpu_trainer(tmp_path)
    trainer.test(model, datamodule=dm, verbose=False)
    trainer.save_checkpoint(tmp_path / "ncm.ckpt")
    copy.unlink()
    loaded = load_module_from_checkpoint(tmp_path / "ncm.ckpt")
    x = torch.randn(5, 16)
    model.eval(), loaded.eval()
    assert torch.equal(loaded(x), model(x))
    assert loaded.hparams.stage1_module == model.hparams.stage1_module


def test_bn_mode_frozen_keeps_the_batchnorm_statistics(stage1_ckpt, tmp_path):
    # regression: Lightning calls no .train() when a fit starts, so the train() override alone never ran
    # and the statistics followed the stage-2 sampler under "frozen" too
    dm = synthetic_dm(sampler="class")
    model = CRTModule(**stage2_kwargs(dm, stage1_ckpt, bn_mode="frozen"))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert any("running_mean" in k for k in before)  # the stage-1 MLP has BatchNorm
    cpu_trainer(tmp_path, max_epochs=2).fit(model, datamodule=dm)
    assert all(torch.equal(v, before[k]) for k, v in model.backbone.state_dict().items())
    model.train()
    assert not model.backbone.training and model.head.training


def test_bn_mode_reestimate_updates_the_batchnorm_statistics_only(stage1_ckpt, tmp_path):
    dm = synthetic_dm(sampler="class")
    model = CRTModule(**stage2_kwargs(dm, stage1_ckpt, bn_mode="reestimate"))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    after = model.backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("running" in k or "num_batches" in k for k in changed)


def test_stage2_errors(stage1_ckpt, tmp_path):
    dm = synthetic_dm()
    with pytest.raises(FileNotFoundError, match="stage-1 checkpoint not found"):
        CRTModule(**stage2_kwargs(dm, tmp_path / "missing.ckpt"))
    other = synthetic_dm(num_classes=5)
    with pytest.raises(ValueError, match="has 6 classes but the data has num_classes=5"):
        CRTModule(**stage2_kwargs(other, stage1_ckpt))
    with pytest.raises(ValueError, match="unknown bn_mode 'train'"):
        CRTModule(**stage2_kwargs(dm, stage1_ckpt, bn_mode="train"))
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not a checkpoint of an lt_lightning module"):
        CRTModule(**stage2_kwargs(dm, bad))
    with pytest.raises(ValueError, match="nothing to train"):
        cpu_trainer(tmp_path).fit(NCMModule(**stage2_kwargs(dm, stage1_ckpt)), datamodule=dm)


def test_a_stage2_checkpoint_is_not_a_stage1_checkpoint(stage1_ckpt, tmp_path):
    dm = synthetic_dm()
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(CRTModule(**stage2_kwargs(dm, stage1_ckpt)), datamodule=dm)
    trainer.save_checkpoint(tmp_path / "crt.ckpt")
    with pytest.raises(ValueError, match="is a CRTModule checkpoint \\(a stage-2 method\\)"):
        LWSModule(**stage2_kwargs(dm, tmp_path / "crt.ckpt"))


@pytest.mark.parametrize("option", ["neck", "backbone", "fixdim"])
def test_stage2_classes_take_no_representation_options(stage1_ckpt, option):
    # the representation is the stage-1 checkpoint's; there is no option to change it
    dm = synthetic_dm()
    with pytest.raises(TypeError, match=option):
        CRTModule(**stage2_kwargs(dm, stage1_ckpt, **{option: "bn"}))
    with pytest.raises(TypeError, match=option):
        DecoupledModule(**stage2_kwargs(dm, stage1_ckpt, **{option: "bn"}))


def test_any_stage1_method_can_be_the_stage1(tmp_path):
    from lt_lightning.models import FixedETFModule, TDEModule

    dm = synthetic_dm()
    for cls in (FixedETFModule, TDEModule):
        path = fit_stage1(tmp_path / cls.__name__, cls=cls, max_epochs=1)
        model = CRTModule(**stage2_kwargs(dm, path))
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if k.startswith("neck."))
        weight, bias = load_module_from_checkpoint(path).classifier_weight_bias()
        assert torch.equal(model.stage1_classifier[0], weight)
        assert (bias is None) == (model.stage1_classifier[1] is None)
