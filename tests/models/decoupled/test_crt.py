"""cRT and LWS (models/decoupled/crt.py): cRT trains a freshly initialised linear classifier on the frozen
representation; LWS learns per-class scales of the frozen stage-1 logits, ``z_i = s_i (w_i·x + b_i)``
(the stage-1 checkpoint's classifier is the reference)."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.models import CRTModule, JointModule, LWSModule, TDEModule, load_module_from_checkpoint
from tests.models.helpers import cpu_trainer, fit_stage1, outputs_on, stage2_kwargs, synthetic_dm


def test_crt_trains_only_a_fresh_linear_classifier(stage1_ckpt, tmp_path):
    stage1 = load_module_from_checkpoint(stage1_ckpt)
    dm = synthetic_dm(sampler="class")
    model = CRTModule(**stage2_kwargs(dm, stage1_ckpt, bn_mode="frozen"))
    assert not torch.equal(model.head.weight, stage1.head.weight)  # re-initialised
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    trainer = cpu_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, datamodule=dm)
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert res["test/acc"] > 0.6
    # the logits are the new linear classifier on the stage-1 features
    x = dm.test_dataset.inputs
    feats = outputs_on(stage1.backbone, x)
    torch.testing.assert_close(outputs_on(model, x), feats @ model.head.weight.T + model.head.bias)


def test_lws_learns_the_scales_of_the_stage1_logits_only(stage1_ckpt, tmp_path):
    stage1 = load_module_from_checkpoint(stage1_ckpt)
    dm = synthetic_dm(sampler="class")
    model = LWSModule(**stage2_kwargs(dm, stage1_ckpt, bn_mode="frozen"))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.scales"]
    dm.setup("test")
    x = dm.test_dataset.inputs
    torch.testing.assert_close(outputs_on(model, x), outputs_on(stage1, x))  # scales 1: stage 1 itself
    cpu_trainer(tmp_path, max_epochs=3).fit(model, datamodule=dm)
    scales = model.head.scales.detach()
    assert not torch.allclose(scales, torch.ones(dm.num_classes))
    torch.testing.assert_close(model.head.base_weight, stage1.head.weight)
    torch.testing.assert_close(outputs_on(model, x), outputs_on(stage1, x) * scales)


def test_lws_refuses_a_stage1_head_that_is_not_linear(tmp_path):
    dm = synthetic_dm()
    for cls, kwargs in ((TDEModule, {}), (JointModule, {"loss": "ldam"})):  # causal-norm, cosine heads
        path = fit_stage1(tmp_path / cls.__name__, cls=cls, max_epochs=1, **kwargs)
        with pytest.raises(ValueError, match="lws rescales a linear classifier's logits"):
            LWSModule(**stage2_kwargs(dm, path))
        CRTModule(**stage2_kwargs(dm, path))  # cRT replaces the head: any stage 1 will do
