"""FixedETFModule (models/fixed_etf.py): a frozen simplex ETF classifier (a buffer, never trained) with the
DR loss of lt_lightning.losses (referenced against Yang's formula in tests/test_losses.py) or a
temperature CE; the DR loss stays float32 under autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lt_lightning.losses import dot_regression_loss
from lt_lightning.models import FixedETFModule
from lt_lightning.nn.functional import simplex_etf
from tests.models.helpers import D, cpu_trainer, model_kwargs, synthetic_dm


def _batch(dm, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g), torch.arange(n) % dm.num_classes


def test_the_etf_is_a_frozen_buffer_that_training_leaves_alone(tmp_path):
    dm = synthetic_dm()
    model = FixedETFModule(**model_kwargs(dm, etf_seed=3))
    etf = model.head.etf.clone()
    assert "head.etf" in model.state_dict() and not any(p is model.head.etf for p in model.parameters())
    # the ETF of etf_seed 3 (unit rows, cosines -1/(K-1)): built by the head from the seed
    expected = simplex_etf(dm.num_classes, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(etf, expected)
    w0 = model.backbone.layers[1].weight.detach().clone()
    cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    assert torch.equal(model.head.etf, etf)
    assert not torch.equal(model.backbone.layers[1].weight, w0)  # the features did train


def test_dr_loss_is_the_dot_regression_loss_on_the_etf():
    dm = synthetic_dm()
    model = FixedETFModule(**model_kwargs(dm, reg_lambda=0.1, class_balanced=True))
    x, y = _batch(dm)
    f = model.extract_features(x)
    count_labels = y.roll(1)  # under mixup the counts come from the un-mixed labels
    got = model.compute_loss(model.forward_head(f), f, y, count_labels)
    expected = dot_regression_loss(
        f, model.head.etf, y, class_balanced=True, reg_lambda=0.1, count_labels=count_labels
    )
    torch.testing.assert_close(got, expected)


def test_ce_loss_divides_the_logits_by_the_temperature():
    dm = synthetic_dm()
    model = FixedETFModule(**model_kwargs(dm, loss="ce", temperature=0.1))
    x, y = _batch(dm)
    f = model.extract_features(x)
    logits = model.forward_head(f)
    torch.testing.assert_close(logits, f @ model.head.etf.T)  # no bias by default
    torch.testing.assert_close(model.compute_loss(logits, f, y, y), F.cross_entropy(logits / 0.1, y))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["dr", "ce"])
def test_both_losses_learn_the_synthetic_problem(tmp_path, loss):
    dm = synthetic_dm()
    torch.manual_seed(0)
    model = FixedETFModule(**model_kwargs(dm, loss=loss, temperature=0.1))
    trainer = cpu_trainer(tmp_path, max_epochs=6)
    trainer.fit(model, datamodule=dm)
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert res["test/acc"] > 1.0 / dm.num_classes + 0.4, res


def test_fixed_etf_needs_d_at_least_k_minus_1():
    dm = synthetic_dm(num_classes=12)
    narrow = {"in_features": D, "hidden": [32], "out_features": 8}
    with pytest.raises(ValueError, match=r"feature dimension >= K-1=11, got d=8; set fixdim=True"):
        FixedETFModule(**model_kwargs(dm, backbone_kwargs=narrow))
    assert FixedETFModule(**model_kwargs(dm, fixdim=True, backbone_kwargs=narrow)).feature_dim == 12


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"loss": "mse"}, "unknown loss 'mse'"), ({"temperature": 0.0}, "temperature")]
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FixedETFModule(**model_kwargs(synthetic_dm(), **kwargs))


def test_dot_regression_loss_stays_float32_under_autocast():
    dm = synthetic_dm()
    model = FixedETFModule(**model_kwargs(dm))
    etf = model.head.etf
    y = torch.arange(8) % dm.num_classes
    feats = etf[y] * 3.0 + 1e-3 * torch.randn(8, etf.shape[1])  # near collapse
    h16 = feats.bfloat16()  # what a bfloat16 backbone hands over
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model.compute_loss(None, h16, y, y)
    assert got.dtype == torch.float32
    # the same values in float32 give the same loss: no norm or product was rounded to bfloat16 (a
    # bfloat16 ‖h‖ moves h·w − ‖w‖‖h‖, a difference of nearly equal terms, by far more than 1e-6)
    torch.testing.assert_close(got, model.compute_loss(None, h16.float(), y, y), rtol=1e-6, atol=0)
