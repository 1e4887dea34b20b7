"""ImplicitETFModule (models/implicit_etf.py): the classifier is exactly the nearest-ETF construction
(Markou et al.), replayed by hand from the class means the module used; both solvers agree. (Its exact
resume, buffers and solver state included, is in tests/models/test_contract.py.)"""

from __future__ import annotations

import math

import pytest
import torch

from lt_lightning.data.augment import Mixup
from lt_lightning.models import ImplicitETFModule
from lt_lightning.models.implicit_etf import etf_classifier_from_q
from lt_lightning.nn.functional import nearest_simplex_etf
from tests.models.helpers import model_kwargs, synthetic_dm


def _batch(dm, n=48):
    dm.setup()
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(len(dm.train_dataset), generator=g)[:n]
    return dm.train_dataset.inputs[idx], dm.train_dataset.targets[idx]


def test_classifier_from_q_definition():
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(9, 5, generator=g, dtype=torch.float64))[0].T  # [5, 9], Q Q^T = I
    mu = torch.randn(9, generator=g, dtype=torch.float64)
    w, b = etf_classifier_from_q(q, mu)
    k = 5
    c = torch.eye(k, dtype=torch.float64) - 1.0 / k
    torch.testing.assert_close(w, math.sqrt(k / (k - 1)) * c @ q)
    torch.testing.assert_close(b, -(w @ mu))
    gram = w @ w.T  # a simplex ETF: unit norms, cosines -1/(K-1)
    torch.testing.assert_close(torch.diagonal(gram), torch.ones(k, dtype=torch.float64))
    torch.testing.assert_close(gram[0, 1], torch.tensor(-1.0 / (k - 1), dtype=torch.float64))


def test_first_call_protocol_and_buffers():
    dm = synthetic_dm()
    model = ImplicitETFModule(**model_kwargs(dm))
    model.train()
    x, y = _batch(dm)
    feats = model.extract_features(x)
    # independent recomputation of the class means of the first step (alpha_1 = 1: F = m)
    mu = feats.mean(0)
    m = torch.stack([feats[y == c].mean(0) - mu for c in range(dm.num_classes)])
    yhat = (m / m.norm()).detach()
    model.on_train_features(feats, y)
    logits = model.forward_head(feats)
    y_used = model.class_means.normalized_means()
    torch.testing.assert_close(y_used, yhat, atol=1e-6, rtol=1e-6)
    # Without the proximal term the minimiser is not unique (C has rank K-1): Q's component along
    # 1/sqrt(K) is arbitrary and moves a lot with 1e-8 changes of Y, while C Q (the classifier) does not.
    # So the protocol is replayed on the exact Y the module used.
    q0 = nearest_simplex_etf(y_used, None)
    expected_q = nearest_simplex_etf(y_used, q0, init=q0)
    torch.testing.assert_close(model.head.q, expected_q, atol=1e-5, rtol=1e-5)
    w, b = etf_classifier_from_q(expected_q, mu.detach())
    torch.testing.assert_close(model.head.weight, w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.head.bias, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits.detach(), feats.detach() @ w.T + b, atol=1e-4, rtol=1e-4)
    # the loss reaches the backbone through the class means as well as through h
    loss = torch.nn.functional.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, [p for p in model.backbone.parameters()], allow_unused=True)
    assert all(gr is not None for gr in grads)
    # evaluation uses the stored classifier
    model.eval()
    torch.testing.assert_close(
        model.forward_head(feats.detach()), feats.detach() @ model.head.weight.T + model.head.bias
    )


def test_pymanopt_and_procrustes_steps_agree():
    """From the same state (a warm start / proximal point), one training step of either solver gives
    the same Q, classifier and gradients."""
    dm = synthetic_dm()
    x, y = _batch(dm)
    g = torch.Generator().manual_seed(3)
    prox = torch.linalg.qr(
        torch.randn(model_kwargs(dm)["backbone_kwargs"]["hidden"][0], dm.num_classes, generator=g)
    )[0].T
    out = {}
    for solver in ("procrustes", "pymanopt"):
        torch.manual_seed(0)
        model = ImplicitETFModule(**model_kwargs(dm, solver=solver, max_iterations=100))
        model.train()
        model.head.q.copy_(prox)
        model.head.initialized.fill_(True)
        model._initialized = True
        feats = model.extract_features(x)
        model.on_train_features(feats, y)
        loss = torch.nn.functional.cross_entropy(model.forward_head(feats), y)
        loss.backward()
        out[solver] = (
            model.head.q.clone(),
            model.head.weight.clone(),
            model.backbone.layers[1].weight.grad.clone(),
        )
    for a, b in zip(out["procrustes"], out["pymanopt"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"solver": "adam"}, "unknown solver 'adam'"),
        ({"delta": 0.0}, "delta must be > 0"),
        ({"mixup": Mixup(0.2)}, "does not support mixup"),
        (
            {"backbone_kwargs": {"in_features": 16, "hidden": [32], "out_features": 4}},
            "needs feature dimension d >= K",
        ),
    ],
)
def test_bad_configuration(kwargs, match):
    dm = synthetic_dm()
    with pytest.raises(ValueError, match=match):
        ImplicitETFModule(**model_kwargs(dm, **kwargs))


def test_a_resumed_module_knows_its_solver_was_initialised(tmp_path):
    from tests.models.helpers import cpu_trainer

    dm = synthetic_dm()
    model = ImplicitETFModule(**model_kwargs(dm))
    trainer = cpu_trainer(tmp_path, max_epochs=1, max_steps=2)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = ImplicitETFModule.load_from_checkpoint(tmp_path / "m.ckpt")
    # the host mirror follows the buffer: a second feasibility solve would throw away Q_prev
    assert loaded._initialized is True and bool(loaded.head.initialized)
    assert ImplicitETFModule(**model_kwargs(dm))._initialized is False
