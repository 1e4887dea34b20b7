"""Weight balancing's stage 2 (models/decoupled/maxnorm.py): the MaxNorm radius and projection against a
row-by-row numpy reference of the rule in ShadeAlsha/LTR-weight-balancing (``MaxNorm_via_PGD``), the
constraint after every optimiser step, the bias left alone, and the radius kept across a resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from lt_lightning.models import DecoupledModule, WeightBalancingModule, load_module_from_checkpoint
from lt_lightning.models.decoupled.maxnorm import max_norm_threshold, project_max_norm
from tests.models.helpers import cpu_trainer, sgd, stage2_kwargs, synthetic_dm


def _reference(weight: np.ndarray, thresh: float) -> tuple[float, np.ndarray]:
    """The rule from its description, one row at a time: radius from the row norms, rows above it rescaled."""
    norms = [math.sqrt(sum(float(v) ** 2 for v in row)) for row in weight]
    radius = min(norms) + thresh * (max(norms) - min(norms))
    out = weight.copy()
    for c, n in enumerate(norms):
        if n > radius:
            out[c] = weight[c] * (radius / n)
    return radius, out


@pytest.mark.parametrize("thresh", [0.0, 0.1, 0.5, 1.0])
def test_radius_and_projection_equal_the_rule_on_a_seeded_case(thresh):
    g = torch.Generator().manual_seed(0)
    # long-tailed row norms (head rows long) as a stage-1 classifier has them
    w = (
        torch.randn(10, 8, generator=g, dtype=torch.float64)
        * torch.logspace(0, -1, 10, dtype=torch.float64)[:, None]
    )
    radius, expected = _reference(w.numpy(), thresh)
    got = max_norm_threshold(w, thresh)
    assert got.item() == pytest.approx(radius, rel=1e-12)
    projected = w.clone()
    project_max_norm(projected, got)
    np.testing.assert_allclose(projected.numpy(), expected, rtol=1e-12, atol=0)
    if 0 < thresh < 1:
        assert (torch.linalg.vector_norm(w, dim=1) > got).sum() >= 1  # some rows really were projected


def test_projection_is_idempotent_and_keeps_short_rows():
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    project_max_norm(w, torch.tensor(1.0))
    torch.testing.assert_close(w, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))
    again = w.clone()
    project_max_norm(again, torch.tensor(1.0))
    torch.testing.assert_close(again, w)


def test_module_starts_from_the_stage1_classifier_with_its_radius(stage1_ckpt):
    stage1 = load_module_from_checkpoint(stage1_ckpt)
    model = WeightBalancingModule(**stage2_kwargs(synthetic_dm(), stage1_ckpt, maxnorm_thresh=0.1))
    torch.testing.assert_close(model.head.weight, stage1.head.weight)
    torch.testing.assert_close(model.head.bias, stage1.head.bias)
    radius, _ = _reference(stage1.head.weight.detach().double().numpy(), 0.1)
    assert model.max_norm_threshold.item() == pytest.approx(radius, rel=1e-6)
    assert "max_norm_threshold" in model.state_dict()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]


def test_loss_is_cui_class_balanced_cross_entropy(stage1_ckpt):
    dm = synthetic_dm()
    model = WeightBalancingModule(**stage2_kwargs(dm, stage1_ckpt, cb_beta=0.99))
    counts = np.array(dm.class_counts, dtype=np.float64)
    w = (1 - 0.99) / (1 - 0.99**counts)
    w = w / w.sum() * len(counts)
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(20, len(counts), generator=g), torch.randint(0, len(counts), (20,), generator=g)
    expected = F.cross_entropy(logits, y, weight=torch.tensor(w, dtype=torch.float32))
    torch.testing.assert_close(model.compute_loss(logits, torch.empty(0), y, y), expected)


class _RowNorms(Callback):
    """Largest row norm of the classifier after every training batch (after the step, and its projection)."""

    def __init__(self) -> None:
        self.after_step: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after_step.append(torch.linalg.vector_norm(pl_module.head.weight.detach(), dim=1).max().item())


def _fit(stage1_ckpt, tmp_path, **kwargs) -> tuple[WeightBalancingModule, _RowNorms]:
    torch.manual_seed(0)
    # a large step and no weight decay: the rows grow, so the constraint is active
    model = WeightBalancingModule(
        **stage2_kwargs(synthetic_dm(), stage1_ckpt, optimizer=sgd(lr=0.5, weight_decay=0.0), **kwargs)
    )
    norms = _RowNorms()
    cpu_trainer(tmp_path, max_epochs=2, callbacks=[norms]).fit(model, datamodule=synthetic_dm())
    return model, norms


def test_rows_never_exceed_the_radius_after_any_step(stage1_ckpt, tmp_path):
    model, norms = _fit(stage1_ckpt, tmp_path / "on", maxnorm_thresh=0.1)
    radius = model.max_norm_threshold.item()
    assert max(norms.after_step) <= radius * (1 + 1e-6)
    free, free_norms = _fit(stage1_ckpt, tmp_path / "off", maxnorm_thresh=None)
    assert max(free_norms.after_step) > radius * 1.01  # without MaxNorm the same run leaves the ball
    assert math.isinf(free.max_norm_threshold.item())


def test_epoch_projection_only_at_the_end_of_each_epoch(stage1_ckpt, tmp_path):
    model, norms = _fit(stage1_ckpt, tmp_path, maxnorm_thresh=0.1, pgd_every="epoch")
    radius = model.max_norm_threshold.item()
    assert max(norms.after_step) > radius * 1.01  # inside an epoch the rows are free
    assert torch.linalg.vector_norm(model.head.weight.detach(), dim=1).max().item() <= radius * (1 + 1e-6)


def test_projection_leaves_the_bias_alone(stage1_ckpt):
    model = WeightBalancingModule(**stage2_kwargs(synthetic_dm(), stage1_ckpt, maxnorm_thresh=0.0))
    with torch.no_grad():
        model.head.bias.fill_(100.0)
        model.head.weight.mul_(10.0)
    model.project()
    assert torch.all(model.head.bias == 100.0)
    norms = torch.linalg.vector_norm(model.head.weight.detach(), dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, model.max_norm_threshold.item()))


def test_resume_keeps_the_radius_and_equals_the_uninterrupted_run(stage1_ckpt, tmp_path):
    def build():
        torch.manual_seed(0)
        return WeightBalancingModule(**stage2_kwargs(synthetic_dm(), stage1_ckpt, optimizer=sgd(lr=0.5)))

    whole = build()
    cpu_trainer(tmp_path / "whole", max_epochs=3).fit(whole, datamodule=synthetic_dm())
    first = build()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    cpu_trainer(tmp_path / "a", max_epochs=1, enable_checkpointing=True, callbacks=[ckpt]).fit(
        first, datamodule=synthetic_dm()
    )
    resumed = build()
    resumed.max_norm_threshold.fill_(123.0)  # the checkpoint's radius must replace the built one
    cpu_trainer(tmp_path / "b", max_epochs=3).fit(
        resumed, datamodule=synthetic_dm(), ckpt_path=str(tmp_path / "ck" / "last.ckpt")
    )
    assert resumed.max_norm_threshold.item() == whole.max_norm_threshold.item()
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_factory_builds_it_and_refuses_foreign_options(stage1_ckpt):
    dm = synthetic_dm()
    model = DecoupledModule(mode="weight_balancing", **stage2_kwargs(dm, stage1_ckpt, maxnorm_thresh=0.2))
    assert type(model) is WeightBalancingModule and model.hparams.maxnorm_thresh == 0.2
    with pytest.raises(ValueError, match="maxnorm_thresh do not apply to mode 'crt'"):
        DecoupledModule(mode="crt", **stage2_kwargs(dm, stage1_ckpt, maxnorm_thresh=0.2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"maxnorm_thresh": -0.1}, "maxnorm_thresh must be >= 0"),
        ({"pgd_every": "batch"}, "unknown pgd_every"),
    ],
)
def test_bad_options_are_named(stage1_ckpt, kwargs, match):
    with pytest.raises(ValueError, match=match):
        WeightBalancingModule(**stage2_kwargs(synthetic_dm(), stage1_ckpt, **kwargs))


def test_counts_are_required(stage1_ckpt):
    with pytest.raises(ValueError, match="needs the training class_counts"):
        WeightBalancingModule(**stage2_kwargs(synthetic_dm(), stage1_ckpt, class_counts=None))
