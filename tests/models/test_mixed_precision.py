"""Every method under bf16-mixed (CPU autocast), 16-mixed where it can run, channels_last and compile."""

from __future__ import annotations

import math

import pytest
import torch

from lt_lightning.models import DecoupledModule, FixedETFModule, ImplicitETFModule, JointModule, TDEModule
from lt_lightning.nn.heads import CausalNormHead
from lt_lightning.nn.nearest_etf import nearest_simplex_etf
from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm
from tests.models.test_methods import stage1_ckpt  # noqa: F401  (fixture)


def _finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (JointModule, {}),
        (FixedETFModule, {}),
        (FixedETFModule, {"loss": "ce"}),
        (ImplicitETFModule, {}),
        (TDEModule, {}),
    ],
)
def test_stage1_methods_train_under_bf16_mixed(tmp_path, cls, kwargs):
    dm = synthetic_dm()
    model = cls(**model_kwargs(dm, **kwargs))
    trainer = cpu_trainer(tmp_path, max_epochs=2, precision="bf16-mixed")
    trainer.fit(model, datamodule=dm)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert _finite(model)
    # parameters and buffers stay float32 (autocast works on copies)
    assert all(p.dtype == torch.float32 for p in model.state_dict().values() if p.is_floating_point())
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert res["test/acc"] > 1.5 / dm.num_classes  # it learned something


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["crt", "lws", "tau_norm", "ncm"])
def test_decoupled_modes_under_bf16_mixed(tmp_path, stage1_ckpt, mode):  # noqa: F811
    # tau_norm picks tau on a validation split apart from the test split
    dm = synthetic_dm(
        sampler="class" if mode in ("crt", "lws") else "instance",
        val_per_class=8 if mode == "tau_norm" else 0,
    )
    kw = model_kwargs(dm, stage1_checkpoint=stage1_ckpt, mode=mode)
    kw.pop("backbone"), kw.pop("backbone_kwargs")
    model = DecoupledModule(**kw)
    trainer = cpu_trainer(tmp_path, max_epochs=1, precision="bf16-mixed")
    if mode in ("crt", "lws"):  # tau_norm and ncm have nothing to train
        trainer.fit(model, datamodule=dm)
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert _finite(model) and res["test/acc"] > 1.5 / dm.num_classes


def test_implicit_etf_solve_under_autocast_is_float32():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(5, 12, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = nearest_simplex_etf(means.bfloat16())
        loss = (q @ torch.randn(12, 3, generator=g)).square().sum()
    assert q.dtype == torch.float32
    torch.testing.assert_close(q @ q.T, torch.eye(5), atol=1e-5, rtol=0)
    loss.backward()  # the bf16 crash was here (float32 U, bfloat16 V in the adjoint)
    assert means.grad is not None and torch.isfinite(means.grad).all()
    # same Q as a float32 solve of the same (bfloat16-rounded) means
    torch.testing.assert_close(q, nearest_simplex_etf(means.detach().bfloat16().float()), atol=1e-6, rtol=0)


def test_causal_norm_head_stays_float32_under_autocast():
    head = CausalNormHead(16, 5, num_heads=2)
    head.embed.copy_(torch.randn(16))
    x = torch.randn(8, 16)
    head.eval()
    head.alpha = 1.0
    ref = head(x, counterfactual=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head(x, counterfactual=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)  # not bfloat16's ~1e-2


@pytest.mark.slow
def test_channels_last_same_values(tmp_path):
    torch.manual_seed(0)
    plain = JointModule(num_classes=10, backbone="resnet32")
    torch.manual_seed(0)
    cl = JointModule(num_classes=10, backbone="resnet32", channels_last=True)
    conv = next(m for m in cl.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32)
    plain.eval(), cl.eval()
    torch.testing.assert_close(cl(x), plain(x), atol=1e-5, rtol=1e-5)
    assert cl.state_dict().keys() == plain.state_dict().keys()


@pytest.mark.slow
def test_compiled_backbone_same_outputs_and_keys():
    dm = synthetic_dm()
    torch.manual_seed(0)
    plain = JointModule(**model_kwargs(dm))
    torch.manual_seed(0)
    compiled = JointModule(**model_kwargs(dm, compile_backbone=True))
    compiled.setup("fit")
    assert compiled._compiled_backbone is not None
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(8, 16)
    torch.testing.assert_close(compiled(x), plain(x), atol=1e-5, rtol=1e-5)


def test_sixteen_mixed_on_cpu_autocast_float16():
    """What 16-mixed needs of our code, checked on CPU: float16 autocast through the ETF solve and TDE."""
    means = torch.randn(4, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.float16):
        q = nearest_simplex_etf(means.half())
        head = CausalNormHead(8, 4)
        logits = head(torch.randn(3, 8).half())
    assert q.dtype == torch.float32 and logits.dtype == torch.float32
    q.sum().backward()
    assert torch.isfinite(means.grad).all()


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", [JointModule, FixedETFModule, ImplicitETFModule, TDEModule])
def test_sixteen_mixed_on_cuda(tmp_path, cls):
    dm = synthetic_dm()
    model = cls(**model_kwargs(dm))
    trainer = cpu_trainer(tmp_path, max_epochs=2, precision="16-mixed", accelerator="cuda")
    trainer.fit(model, datamodule=dm)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"])) and _finite(model)


def test_dot_regression_loss_stays_float32_under_autocast():
    dm = synthetic_dm()
    model = FixedETFModule(**model_kwargs(dm))
    etf = model.head.etf
    y = torch.arange(8) % dm.num_classes
    feats = (etf[y] * 3.0 + 1e-3 * torch.randn(8, etf.shape[1])).requires_grad_(True)  # near collapse
    h16 = feats.detach().bfloat16()  # what a bfloat16 backbone hands over
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model.compute_loss(None, h16, y, y)
    assert got.dtype == torch.float32
    # the same values in float32 give the same loss: no norm or product was rounded to bfloat16 (a
    # bfloat16 ‖h‖ moves h·w − ‖w‖‖h‖, a difference of nearly equal terms, by far more than 1e-6)
    torch.testing.assert_close(got, model.compute_loss(None, h16.float(), y, y), rtol=1e-6, atol=0)
