"""lt_lightning.losses against references written from the papers' definitions: the dot-regression loss
(Yang et al.) as a per-sample numpy loop, mixup's cross-entropy as a loop over smoothed targets, and the
long-tail losses (logit adjustment / balanced softmax, LDAM from kaidic/LDAM-DRW's ``LDAMLoss``,
class-balanced weights) in float64, values and gradients. Mixing itself is lt_lightning.data.augment
(tests/data/test_augment.py)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lt_lightning.data.augment import mixup_batch
from lt_lightning.losses import (
    class_balanced_weights,
    dot_regression_loss,
    ldam_loss,
    ldam_margins,
    logit_adjusted_cross_entropy,
    mixup_cross_entropy,
)
from lt_lightning.nn.functional import simplex_etf


def ref_dot_regression(h, etf, labels, *, class_balanced=True, reg_lambda=0.0, count_labels=None):
    """Per-sample losses, straight from Yang et al.'s definition (numpy, float64)."""
    h, etf = np.asarray(h, np.float64), np.asarray(etf, np.float64)
    labels = [int(y) for y in labels]
    cl = labels if count_labels is None else [int(y) for y in count_labels]
    counts = Counter(cl)
    gamma = len(cl) / len(counts)
    out = []
    for hi, y in zip(h, labels):
        w = etf[y] * (math.sqrt(gamma / counts[y]) if class_balanced else 1.0)
        hn, wn = np.linalg.norm(hi), np.linalg.norm(w)
        out.append(0.5 * (np.dot(hi, w) - wn * hn) ** 2 / hn + reg_lambda * hn)
    return np.array(out)


def _batch(n=12, k=5, d=8, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64)
    etf = simplex_etf(k, d, generator=g, dtype=torch.float64)
    if labels is None:
        labels = torch.randint(0, k, (n,), generator=g)
    return h, etf, labels


LABEL_CASES = {
    "random": None,
    "long_tail": torch.tensor([0] * 8 + [1] * 3 + [3]),  # classes 2 and 4 absent
    "single_class": torch.full((12,), 2),
}


@pytest.mark.parametrize("case", list(LABEL_CASES))
@pytest.mark.parametrize("class_balanced", [True, False])
@pytest.mark.parametrize("reg_lambda", [0.0, 0.3])
def test_dot_regression_loss_vs_loop(case, class_balanced, reg_lambda) -> None:
    h, etf, labels = _batch(labels=LABEL_CASES[case])
    per = dot_regression_loss(
        h, etf, labels, class_balanced=class_balanced, reg_lambda=reg_lambda, reduction="none"
    )
    ref = ref_dot_regression(h, etf, labels, class_balanced=class_balanced, reg_lambda=reg_lambda)
    assert np.allclose(per.numpy(), ref, rtol=1e-10, atol=1e-12)
    mean = dot_regression_loss(h, etf, labels, class_balanced=class_balanced, reg_lambda=reg_lambda)
    total = dot_regression_loss(
        h, etf, labels, class_balanced=class_balanced, reg_lambda=reg_lambda, reduction="sum"
    )
    assert math.isclose(float(mean), ref.mean(), rel_tol=1e-10)
    assert math.isclose(float(total), ref.sum(), rel_tol=1e-10)


def test_dot_regression_loss_more_classes_than_batch() -> None:
    h, etf, labels = _batch(n=4, k=20, d=32, labels=torch.tensor([17, 3, 3, 0]))
    got = dot_regression_loss(h, etf, labels, reduction="none")
    assert np.allclose(got.numpy(), ref_dot_regression(h, etf, labels), rtol=1e-10)


def test_dot_regression_loss_class_balance_property() -> None:
    # with the rescaling, every present class carries the same total squared target norm gamma
    h, etf, labels = _batch(labels=LABEL_CASES["long_tail"])
    counts = Counter(labels.tolist())
    gamma = labels.numel() / len(counts)
    # for h = target direction, l_i = 0; for h orthogonal to it, l_i = ||w||^2 ||h|| / 2 = ||w||^2 / 2
    for c, n_c in counts.items():  # n_c samples share gamma / 2 between them
        w = etf[c]
        ortho = torch.randn(8, dtype=torch.float64)
        ortho = ortho - (ortho @ w) * w  # unit rows: remove the component along w
        ortho = ortho / ortho.norm()
        feats = h.clone()
        feats[labels == c] = ortho
        per = dot_regression_loss(feats, etf, labels, reduction="none")
        assert torch.allclose(per[labels == c].sum(), torch.tensor(gamma / 2, dtype=torch.float64))
        assert n_c > 0


def test_dot_regression_loss_zero_at_target_and_scale_invariance() -> None:
    _, etf, labels = _batch()
    h = 3.0 * etf[labels]
    assert float(dot_regression_loss(h, etf, labels, class_balanced=False)) == pytest.approx(0.0, abs=1e-20)
    # class-balanced targets are rescaled copies of the rows: still zero loss along them
    assert float(dot_regression_loss(h, etf, labels)) == pytest.approx(0.0, abs=1e-20)


def test_dot_regression_loss_zero_feature_is_finite() -> None:
    h, etf, labels = _batch()
    h[0] = 0.0
    h.requires_grad_(True)
    loss = dot_regression_loss(h, etf, labels, reg_lambda=0.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()


def _frozen_norm_loss(h: np.ndarray, targets: np.ndarray, w_len: np.ndarray, h_len: np.ndarray) -> float:
    """Mean DR loss with both norms held at constants (what detaching means)."""
    dots = np.sum(h * targets, axis=1)
    return float(np.mean(0.5 * (dots - w_len * h_len) ** 2 / h_len))


@pytest.mark.parametrize("class_balanced", [True, False])
def test_dot_regression_loss_gradient_uses_detached_norms(class_balanced: bool) -> None:
    h, etf, labels = _batch(n=6, k=4, d=5, seed=3, labels=torch.tensor([0, 0, 0, 1, 2, 2]))
    h.requires_grad_(True)
    dot_regression_loss(h, etf, labels, class_balanced=class_balanced).backward()
    got = h.grad.numpy()

    hn = h.detach().numpy()
    counts = Counter(labels.tolist())
    gamma = labels.numel() / len(counts)
    scale = np.array([math.sqrt(gamma / counts[int(y)]) if class_balanced else 1.0 for y in labels])
    targets = etf.numpy()[labels.numpy()] * scale[:, None]
    w_len, h_len = np.linalg.norm(targets, axis=1), np.linalg.norm(hn, axis=1)
    # analytic: dl_i/dh_i = (h.w - ||w|| ||h||) w / ||h||, divided by N for the mean
    analytic = ((np.sum(hn * targets, 1) - w_len * h_len) / h_len)[:, None] * targets / len(hn)
    assert np.allclose(got, analytic, rtol=1e-9, atol=1e-12)
    # central finite differences of the frozen-norm loss
    eps = 1e-6
    fd = np.zeros_like(hn)
    for i in range(hn.shape[0]):
        for j in range(hn.shape[1]):
            plus, minus = hn.copy(), hn.copy()
            plus[i, j] += eps
            minus[i, j] -= eps
            fd[i, j] = (
                _frozen_norm_loss(plus, targets, w_len, h_len)
                - _frozen_norm_loss(minus, targets, w_len, h_len)
            ) / (2 * eps)
    assert np.allclose(got, fd, rtol=1e-5, atol=1e-8)

    # the test can fail: the non-detached formula has a visibly different gradient
    h2 = h.detach().clone().requires_grad_(True)
    t = torch.from_numpy(targets)
    hl = h2.norm(dim=1)
    (0.5 * ((h2 * t).sum(1) - t.norm(dim=1) * hl).pow(2) / hl).mean().backward()
    assert not np.allclose(h2.grad.numpy(), got, rtol=1e-3)


def test_dot_regression_loss_reg_gradient_not_detached() -> None:
    h, etf, labels = _batch(seed=5)
    h.requires_grad_(True)
    base = torch.autograd.grad(dot_regression_loss(h, etf, labels), h)[0]
    with_reg = torch.autograd.grad(dot_regression_loss(h, etf, labels, reg_lambda=0.5), h)[0]
    hd = h.detach()
    expected = 0.5 * hd / hd.norm(dim=1, keepdim=True) / hd.shape[0]
    assert torch.allclose(with_reg - base, expected, atol=1e-12)


def test_dot_regression_loss_mixup_counts_from_unmixed_labels() -> None:
    h, etf, y = _batch(n=10, labels=torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 3, 4]))
    x_mixed, y_a, y_b, lam = mixup_batch(h, y, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.bincount(y_b, minlength=5), torch.bincount(y_a, minlength=5))
    got = lam * dot_regression_loss(x_mixed, etf, y_a, count_labels=y) + (1 - lam) * dot_regression_loss(
        x_mixed, etf, y_b, count_labels=y
    )
    ref = (
        lam * ref_dot_regression(x_mixed, etf, y_a, count_labels=y).mean()
        + (1 - lam) * ref_dot_regression(x_mixed, etf, y_b, count_labels=y).mean()
    )
    assert math.isclose(float(got), ref, rel_tol=1e-10)
    # count_labels really drives the scaling
    other = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    per = dot_regression_loss(h, etf, y, count_labels=other, reduction="none")
    assert np.allclose(per.numpy(), ref_dot_regression(h, etf, y, count_labels=other), rtol=1e-10)
    assert not torch.allclose(per, dot_regression_loss(h, etf, y, reduction="none"))


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"reduction": "max"}, ValueError),
        ({"reg_lambda": -1.0}, ValueError),
        ({"labels": torch.zeros(3, dtype=torch.long)}, ValueError),
        ({"labels": torch.zeros(12)}, TypeError),
        ({"etf": torch.randn(5, 7, dtype=torch.float64)}, ValueError),
        ({"features": torch.randn(12, dtype=torch.float64)}, ValueError),
    ],
)
def test_dot_regression_loss_bad_input(kwargs, exc) -> None:
    h, etf, labels = _batch()
    args = {"features": h, "etf": etf, "labels": labels}
    extra = {k: v for k, v in kwargs.items() if k not in args}
    args.update({k: v for k, v in kwargs.items() if k in args})
    with pytest.raises(exc):
        dot_regression_loss(args["features"], args["etf"], args["labels"], **extra)


# ----------------------------------------------------------------------------------------------------
# mixup's loss


def test_mixup_cross_entropy() -> None:
    logits = torch.randn(6, 4)
    ya, yb = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([3, 2, 1, 0, 0, 1])
    got = mixup_cross_entropy(logits, ya, yb, 0.3, label_smoothing=0.1)
    logp = torch.log_softmax(logits, 1)
    ref = 0.0
    for i in range(6):
        for lam, y in ((0.3, ya[i]), (0.7, yb[i])):
            smooth = torch.full((4,), 0.1 / 4)
            smooth[y] += 0.9
            ref += lam * float(-(smooth * logp[i]).sum()) / 6
    assert math.isclose(float(got), ref, rel_tol=1e-5)
    assert torch.allclose(mixup_cross_entropy(logits, ya, ya, 0.3), F.cross_entropy(logits, ya))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_path_has_no_host_sync_on_cuda() -> None:
    from lt_lightning.nn.functional import causal_norm_logits

    dev = torch.device("cuda")
    h = torch.randn(32, 16, device=dev, requires_grad=True)
    etf = simplex_etf(10, 16, device=dev)
    y = torch.randint(0, 10, (32,), device=dev)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        xm, ya, yb, lam = mixup_batch(h, y, 1.0)
        loss = lam * dot_regression_loss(xm, etf, ya, count_labels=y, reg_lambda=0.1) + (
            1 - lam
        ) * dot_regression_loss(xm, etf, yb, count_labels=y)
        loss = loss + causal_norm_logits(h, etf, embed=h[0].detach(), alpha=1.0).sum()
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert h.grad is not None


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("reg_lambda", [0.0, 0.01])
def test_dot_regression_loss_ddp_uses_global_batch_counts(tmp_path, reg_lambda) -> None:
    """2 gloo ranks with unequal shards: mean of rank losses == loss of the concatenated batch (Yang's
    DataParallel balancing), and the DDP-averaged gradient equals the concatenated batch's gradient."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.ddp_dr_loss_script import SPLIT, make_batch

    script = Path(__file__).with_name("ddp_dr_loss_script.py")
    root = script.parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    init = tmp_path / "init"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), str(init), str(tmp_path), str(reg_lambda)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))

    h, etf, y = make_batch()
    expected = ref_dot_regression(h, etf, y, reg_lambda=reg_lambda)  # counts of the whole batch
    np.testing.assert_allclose(torch.cat([r0["none"], r1["none"]]).numpy(), expected, rtol=1e-10)
    mean_over_ranks = (r0["loss"] + r1["loss"]) / 2
    assert mean_over_ranks.item() == pytest.approx(expected.mean(), rel=1e-10)
    # local balancing (what each rank would do on its own) gives a different loss: the test can fail
    local = [
        ref_dot_regression(h[s], etf, y[s], reg_lambda=reg_lambda)
        for s in (slice(0, SPLIT), slice(SPLIT, None))
    ]
    assert abs(np.mean([v.mean() for v in local]) - expected.mean()) > 1e-3

    hc = h.clone().requires_grad_(True)
    dot_regression_loss(hc, etf, y, reg_lambda=reg_lambda, sync_counts=False).backward()
    ddp_grad = torch.cat([r0["grad"], r1["grad"]]) / 2  # DDP averages gradients over the 2 ranks
    torch.testing.assert_close(ddp_grad, hc.grad, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# long-tail losses

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
