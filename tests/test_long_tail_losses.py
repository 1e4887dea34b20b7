"""Long-tail losses against slow references written from the papers' definitions (and, for LDAM, from the
formulas of kaidic/LDAM-DRW's ``LDAMLoss``), values and gradients in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lt_lightning.losses import (
    class_balanced_weights,
    ldam_loss,
    ldam_margins,
    logit_adjusted_cross_entropy,
)

F64 = torch.float64
COUNTS = [500, 120, 40, 9, 2]


def _problem(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, len(COUNTS), generator=g, dtype=F64) * 2.0
    targets = torch.randint(0, len(COUNTS), (n,), generator=g)
    targets[: len(COUNTS)] = torch.arange(len(COUNTS))  # every class present
    return logits, targets


# ---- slow references (per-sample Python loops over the definitions) --------------------------------
def _la_reference(logits: np.ndarray, targets: np.ndarray, counts, tau: float, weight=None) -> float:
    """Menon et al. eq. 10: l = -log( pi_y^tau e^{f_y} / sum_c pi_c^tau e^{f_c} ); weighted mean."""
    prior = np.asarray(counts, float) / sum(counts)
    num = den = 0.0
    for z, y in zip(logits, targets):
        terms = [prior[c] ** tau * math.exp(z[c]) for c in range(len(z))]
        li = -math.log(terms[y] / sum(terms))
        w = 1.0 if weight is None else weight[y]
        num += w * li
        den += w
    return num / den


def _ldam_reference(logits: np.ndarray, targets: np.ndarray, counts, max_m, s, weight=None):
    """kaidic/LDAM-DRW LDAMLoss: m = 1/sqrt(sqrt(n)), m *= max_m / max(m); x_m = x - m[y] on the target
    entry only; F.cross_entropy(s * output, y, weight) (weighted mean). Returns (loss, dloss/dlogits)."""
    m = 1.0 / np.sqrt(np.sqrt(np.asarray(counts, float)))
    m = m * (max_m / np.max(m))
    n, k = logits.shape
    w = np.ones(k) if weight is None else np.asarray(weight, float)
    total_w = sum(w[y] for y in targets)
    loss = 0.0
    grad = np.zeros_like(logits)
    for i in range(n):
        y = targets[i]
        out = logits[i].copy()
        out[y] -= m[y]
        z = s * out
        p = np.exp(z - z.max())
        p /= p.sum()
        loss += w[y] * -math.log(p[y]) / total_w
        onehot = np.zeros(k)
        onehot[y] = 1.0
        grad[i] = w[y] * s * (p - onehot) / total_w  # d/dx of CE(s * (x - m_y e_y))
    return loss, grad


# ---- logit adjustment / balanced softmax -----------------------------------------------------------
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_logit_adjusted_ce_value_and_gradient(tau, weighted):
    logits, targets = _problem()
    weight = torch.tensor([0.3, 0.5, 1.0, 1.5, 1.7], dtype=F64) if weighted else None
    logits.requires_grad_(True)
    loss = logit_adjusted_cross_entropy(logits, targets, COUNTS, tau=tau, weight=weight)
    ref = _la_reference(
        logits.detach().numpy(), targets.numpy(), COUNTS, tau, None if weight is None else weight.numpy()
    )
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    (grad,) = torch.autograd.grad(loss, logits)
    # d l_i / d f = softmax(f + tau log pi) - e_y, weighted by w_y / sum w
    prior = torch.tensor(COUNTS, dtype=F64) / sum(COUNTS)
    p = torch.softmax(logits.detach() + tau * prior.log(), dim=1)
    w = torch.ones(len(targets), dtype=F64) if weight is None else weight[targets]
    expected = (p - F.one_hot(targets, len(COUNTS)).to(F64)) * (w / w.sum())[:, None]
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(
        lambda z: logit_adjusted_cross_entropy(z, targets, COUNTS, tau=tau, weight=weight),
        (logits.detach().clone().requires_grad_(True),),
    )


def test_balanced_softmax_is_count_weighted_softmax():
    """Ren et al. eq. 4: phi_y = n_y e^{f_y} / sum_c n_c e^{f_c}, i.e. logit adjustment with tau = 1."""
    logits, targets = _problem(seed=3)
    n = torch.tensor(COUNTS, dtype=F64)
    ren = -(n[targets] * logits.gather(1, targets[:, None]).squeeze(1).exp()).log() + (
        (n[None] * logits.exp()).sum(1).log()
    )
    ours = logit_adjusted_cross_entropy(logits, targets, torch.tensor(COUNTS), tau=1.0, reduction="none")
    torch.testing.assert_close(ours, ren, rtol=1e-12, atol=1e-12)


def test_logit_adjusted_tau_zero_is_ce_and_reductions():
    logits, targets = _problem(seed=1)
    torch.testing.assert_close(
        logit_adjusted_cross_entropy(logits, targets, COUNTS, tau=0.0), F.cross_entropy(logits, targets)
    )
    per = logit_adjusted_cross_entropy(logits, targets, COUNTS, reduction="none")
    assert per.shape == targets.shape
    torch.testing.assert_close(
        per.sum(), logit_adjusted_cross_entropy(logits, targets, COUNTS, reduction="sum")
    )


# ---- LDAM -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("max_m", "s"), [(0.5, 30.0), (0.3, 1.0), (1.0, 10.0)])
@pytest.mark.parametrize("weighted", [False, True])
def test_ldam_matches_authors_formulas(max_m, s, weighted):
    logits, targets = _problem(n=16, seed=2)
    logits = torch.tanh(logits)  # cosines, as from the normalised classifier
    weight = class_balanced_weights(COUNTS, 0.9999, like=logits) if weighted else None
    x = logits.clone().requires_grad_(True)
    loss = ldam_loss(x, targets, COUNTS, max_margin=max_m, scale=s, weight=weight)
    ref, ref_grad = _ldam_reference(
        logits.numpy(), targets.numpy(), COUNTS, max_m, s, None if weight is None else weight.numpy()
    )
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    (grad,) = torch.autograd.grad(loss, x)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-10, atol=1e-14)


def test_ldam_margins_follow_n_to_the_minus_quarter():
    m = ldam_margins(COUNTS, 0.5, like=torch.empty(len(COUNTS), dtype=F64))
    assert m.max().item() == pytest.approx(0.5)
    assert m[-1].item() == pytest.approx(0.5)  # the rarest class has the largest margin
    n = torch.tensor(COUNTS, dtype=F64)
    torch.testing.assert_close(m * n.pow(0.25), torch.full_like(m, 0.5 * 2**0.25))


def test_ldam_zero_margin_is_scaled_ce():
    logits, targets = _problem(seed=4)
    torch.testing.assert_close(
        ldam_loss(logits, targets, COUNTS, max_margin=0.0, scale=7.0), F.cross_entropy(7.0 * logits, targets)
    )


# ---- class-balanced weights ------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999, 0.9999])
def test_class_balanced_weights_formula(beta):
    w = class_balanced_weights(COUNTS, beta, like=torch.empty(0, dtype=F64))
    n = np.asarray(COUNTS, float)
    ref = np.array([(1 - beta) / (1 - beta**c) for c in n])  # Cui et al. eq. (1/E_n)
    ref = ref / ref.sum() * len(n)
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-12)
    assert w.sum().item() == pytest.approx(len(COUNTS))
    if beta == 0.0:
        np.testing.assert_allclose(w.numpy(), 1.0)
    else:
        assert torch.all(w[1:] > w[:-1])  # rarer classes weigh more


def test_class_balanced_weights_default_dtype_and_tensor_counts():
    w = class_balanced_weights(torch.tensor(COUNTS))
    assert w.dtype == torch.float32 and w.shape == (len(COUNTS),)


# ---- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (logit_adjusted_cross_entropy, {"tau": -1.0}, "tau"),
        (logit_adjusted_cross_entropy, {"reduction": "avg"}, "reduction"),
        (ldam_loss, {"scale": 0.0}, "scale"),
        (ldam_loss, {"max_margin": -0.1}, "max_margin"),
    ],
)
def test_bad_arguments(fn, kwargs, match):
    logits, targets = _problem()
    with pytest.raises(ValueError, match=match):
        fn(logits, targets, COUNTS, **kwargs)


def test_bad_counts_and_shapes():
    logits, targets = _problem()
    with pytest.raises(ValueError, match=r"class_counts must have shape \[5\]"):
        logit_adjusted_cross_entropy(logits, targets, [1, 2, 3])
    with pytest.raises(ValueError, match="must all be > 0"):
        ldam_loss(logits, targets, [5, 4, 3, 0, 1])
    with pytest.raises(ValueError, match="logits must be"):
        ldam_loss(logits[0], targets, COUNTS)
    with pytest.raises(TypeError, match="integer"):
        logit_adjusted_cross_entropy(logits, targets.double(), COUNTS)
    with pytest.raises(ValueError, match="beta"):
        class_balanced_weights(COUNTS, 1.0)


def test_half_precision_logits_with_large_counts_stay_finite():
    """fp16 cannot hold a total count above 65504 (ImageNet-LT: 115,846): the prior is built in float32."""
    counts = [1280, 50000, 40000, 20000, 4566]
    logits, targets = _problem()
    ref = logit_adjusted_cross_entropy(logits, targets, counts)
    got = logit_adjusted_cross_entropy(logits.half(), targets, counts)
    assert torch.isfinite(got) and got.item() == pytest.approx(ref.item(), rel=2e-3)
    w = class_balanced_weights(counts, like=logits.half())
    assert torch.isfinite(ldam_loss(logits.half().tanh(), targets, torch.tensor(counts), weight=w))
    assert torch.isfinite(logit_adjusted_cross_entropy(logits.half(), targets, counts, weight=w))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_long_tail_losses_have_no_host_sync_on_cuda():
    dev = torch.device("cuda")
    logits = torch.randn(32, len(COUNTS), device=dev, requires_grad=True)
    y = torch.randint(0, len(COUNTS), (32,), device=dev)
    counts = torch.tensor(COUNTS, device=dev)
    weight = class_balanced_weights(counts, like=logits)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = logit_adjusted_cross_entropy(logits, y, counts, weight=weight)
        loss = loss + ldam_loss(logits.tanh(), y, counts, weight=weight)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert logits.grad is not None
