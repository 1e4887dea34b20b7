"""lt_lightning.nn.functional against slow references written from the papers' definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lt_lightning.nn.functional import (
    causal_norm_logit_parts,
    causal_norm_logits,
    class_centroids,
    lws_logits,
    ncm_logits,
    ncm_transform,
    simplex_etf,
    tau_normalize,
)

# ----------------------------------------------------------------------------------------------------
# references (numpy, loops, straight from the definitions)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else np.zeros_like(v)


def ref_causal_norm(x, w, num_heads, tau, gamma, embed=None, alpha=0.0):
    """Tang et al.: sum over heads of (tau/H) <x_hat_k - alpha cos(x_k, d_hat_k) d_hat_k, w_hat_ik>."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n, d = x.shape
    k_cls = w.shape[0]
    m = d // num_heads
    out = np.zeros((n, k_cls))
    for s in range(n):
        for i in range(k_cls):
            total = 0.0
            for h in range(num_heads):
                sl = slice(h * m, (h + 1) * m)
                xs, ws = x[s, sl], w[i, sl]
                x_hat = _unit(xs)
                w_hat = ws / (np.linalg.norm(ws) + gamma)
                if alpha > 0:
                    d_hat = _unit(np.asarray(embed, np.float64)[sl])
                    cos = float(np.dot(x_hat, d_hat))
                    x_hat = x_hat - alpha * cos * d_hat
                total += tau / num_heads * float(np.dot(x_hat, w_hat))
            out[s, i] = total
    return out


def ref_centroids(feats, labels, k, global_mean, normalize):
    out = np.zeros((k, feats.shape[1]))
    for c in range(k):
        rows = []
        for x, y in zip(feats, labels):
            if y != c:
                continue
            v = x - global_mean if global_mean is not None else x.copy()
            if normalize:
                v = _unit(v)
            rows.append(v)
        out[c] = np.mean(rows, axis=0)
    return out


# ----------------------------------------------------------------------------------------------------
# simplex_etf

ETF_SHAPES = [(2, 1), (2, 5), (3, 2), (5, 4), (5, 5), (10, 9), (10, 10), (10, 64), (100, 99), (100, 128)]


def _check_etf(e: torch.Tensor, k: int, d: int) -> None:
    e = e.double()
    assert e.shape == (k, d)
    assert torch.allclose(e.norm(dim=1), torch.ones(k, dtype=e.dtype), atol=1e-10)
    gram = e @ e.T
    expected = torch.full((k, k), -1.0 / (k - 1), dtype=e.dtype)
    expected.fill_diagonal_(1.0)
    assert torch.allclose(gram, expected, atol=1e-10)
    # rows are centred (C E = E), rank K - 1
    assert torch.allclose(e.sum(0), torch.zeros(d, dtype=e.dtype), atol=1e-10)
    assert int(torch.linalg.matrix_rank(e)) == k - 1


@pytest.mark.parametrize(("k", "d"), ETF_SHAPES)
@pytest.mark.parametrize("canonical", [False, True])
def test_simplex_etf_geometry(k: int, d: int, canonical: bool) -> None:
    e = simplex_etf(
        k, d, generator=torch.Generator().manual_seed(3), canonical=canonical, dtype=torch.float64
    )
    _check_etf(e, k, d)


def test_simplex_etf_matches_reference_construction() -> None:
    k, d = 6, 11
    e = simplex_etf(k, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    # independent: the same Gaussian draw, numpy QR, then sqrt(K/(K-1)) C P^T
    gauss = torch.randn(d, k, generator=torch.Generator().manual_seed(5), dtype=torch.float64).numpy()
    p, _ = np.linalg.qr(gauss)
    c = np.eye(k) - np.ones((k, k)) / k
    ref = math.sqrt(k / (k - 1)) * c @ p.T
    # both QRs are LAPACK Householder, so even the column signs agree
    assert np.allclose(e.numpy(), ref, atol=1e-10)


def test_simplex_etf_canonical_is_centering_matrix() -> None:
    k, d = 4, 7
    e = simplex_etf(k, d, canonical=True, dtype=torch.float64)
    ref = torch.zeros(k, d, dtype=torch.float64)
    ref[:, :k] = math.sqrt(k / (k - 1)) * (torch.eye(k, dtype=torch.float64) - 1.0 / k)
    assert torch.allclose(e, ref)


def test_simplex_etf_determinism_and_randomness() -> None:
    a = simplex_etf(10, 32, generator=torch.Generator().manual_seed(0))
    b = simplex_etf(10, 32, generator=torch.Generator().manual_seed(0))
    c = simplex_etf(10, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)
    # d = K - 1 uses a random rotation too
    assert not torch.allclose(
        simplex_etf(10, 9, generator=torch.Generator().manual_seed(0)),
        simplex_etf(10, 9, generator=torch.Generator().manual_seed(1)),
        atol=1e-3,
    )
    assert a.dtype == torch.get_default_dtype()


@pytest.mark.parametrize(("k", "d"), [(10, 8), (100, 64), (3, 1)])
def test_simplex_etf_too_narrow(k: int, d: int) -> None:
    with pytest.raises(ValueError, match="fixdim"):
        simplex_etf(k, d)


@pytest.mark.parametrize(("k", "d", "exc"), [(1, 5, ValueError), (2.0, 5, TypeError), (4, 0, ValueError)])
def test_simplex_etf_bad_args(k, d, exc) -> None:
    with pytest.raises(exc):
        simplex_etf(k, d)


# ----------------------------------------------------------------------------------------------------
# causal_norm_logits


@pytest.mark.parametrize(("n", "k", "d", "heads"), [(5, 3, 8, 2), (4, 7, 6, 1), (3, 4, 12, 4), (6, 5, 5, 5)])
@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_causal_norm_logits_vs_loop(n, k, d, heads, alpha) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(k, d, generator=g, dtype=torch.float64) * 3
    embed = torch.randn(d, generator=g, dtype=torch.float64) * 10
    got = causal_norm_logits(x, w, num_heads=heads, tau=16.0, gamma=1 / 32, embed=embed, alpha=alpha)
    ref = ref_causal_norm(x.numpy(), w.numpy(), heads, 16.0, 1 / 32, embed.numpy(), alpha)
    assert np.allclose(got.numpy(), ref, atol=1e-10)


def test_causal_norm_logits_differs_with_alpha_and_ignores_embed_scale() -> None:
    g = torch.Generator().manual_seed(0)
    x, w, e = torch.randn(4, 8, generator=g), torch.randn(3, 8, generator=g), torch.randn(8, generator=g)
    plain = causal_norm_logits(x, w, embed=e, alpha=0.0)
    tde = causal_norm_logits(x, w, embed=e, alpha=1.0)
    assert not torch.allclose(plain, tde)
    assert torch.allclose(plain, causal_norm_logits(x, w))
    # only the direction of the moving average matters (Tang)
    assert torch.allclose(tde, causal_norm_logits(x, w, embed=7.0 * e, alpha=1.0), atol=1e-5)


def test_causal_norm_logits_zero_vectors_are_safe() -> None:
    x = torch.randn(3, 8, dtype=torch.float64)
    x[0] = 0.0
    x[1, :4] = 0.0  # one head empty
    w = torch.randn(5, 8, dtype=torch.float64)
    w[2] = 0.0
    embed = torch.zeros(8, dtype=torch.float64)
    embed[4:] = 1.0  # first head's embed is zero
    got = causal_norm_logits(x, w, num_heads=2, embed=embed, alpha=2.0)
    assert torch.isfinite(got).all()
    ref = ref_causal_norm(x.numpy(), w.numpy(), 2, 16.0, 1 / 32, embed.numpy(), 2.0)
    assert np.allclose(got.numpy(), ref, atol=1e-10)
    assert torch.all(got[0] == 0)


def test_causal_norm_logit_parts_compose() -> None:
    g = torch.Generator().manual_seed(1)
    x, w, e = torch.randn(5, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(6, generator=g)
    plain, cf = causal_norm_logit_parts(x, w, num_heads=3, tau=10.0, gamma=0.1, embed=e)
    for alpha in (0.5, 2.0):
        direct = causal_norm_logits(x, w, num_heads=3, tau=10.0, gamma=0.1, embed=e, alpha=alpha)
        assert torch.allclose(plain - alpha * cf, direct, atol=1e-5)
    assert causal_norm_logit_parts(x, w, num_heads=3)[1] is None


def test_causal_norm_logits_gradcheck() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, e: causal_norm_logits(x, w, num_heads=3, tau=4.0, gamma=0.2, embed=e, alpha=1.3),
        (x, w, e),
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_heads": 3}, "divide"),
        ({"num_heads": 0}, ">= 1"),
        ({"alpha": -1.0, "embed": torch.zeros(8)}, "alpha"),
        ({"alpha": 1.0}, "embed"),
        ({"alpha": 1.0, "embed": torch.zeros(4)}, "embed"),
        ({"gamma": -0.1}, "gamma"),
    ],
)
def test_causal_norm_logits_bad_args(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        causal_norm_logits(torch.randn(2, 8), torch.randn(3, 8), **kwargs)


def test_causal_norm_logits_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="feature dimension"):
        causal_norm_logits(torch.randn(2, 8), torch.randn(3, 6))
    with pytest.raises(ValueError, match="2-D"):
        causal_norm_logits(torch.randn(8), torch.randn(3, 8))


# ----------------------------------------------------------------------------------------------------
# tau_normalize


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0, 2.0])
def test_tau_normalize_vs_loop(tau: float) -> None:
    w = torch.randn(7, 5, dtype=torch.float64) * torch.logspace(-2, 2, 7, dtype=torch.float64)[:, None]
    got = tau_normalize(w, tau)
    ref = np.stack([row / np.linalg.norm(row) ** tau for row in w.numpy()])
    assert np.allclose(got.numpy(), ref, rtol=1e-12)
    if tau == 0.0:
        assert torch.equal(got, w)
    if tau == 1.0:
        assert torch.allclose(got.norm(dim=1), torch.ones(7, dtype=torch.float64))


def test_tau_normalize_zero_row_and_tensor_tau_and_grad() -> None:
    w = torch.randn(3, 4, dtype=torch.float64)
    w[1] = 0.0
    out = tau_normalize(w, 1.0)
    assert torch.isfinite(out).all() and torch.all(out[1] == 0)
    assert torch.allclose(tau_normalize(w, torch.tensor(0.5, dtype=torch.float64)), tau_normalize(w, 0.5))
    wg = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: tau_normalize(t, 0.7), (wg,))


@pytest.mark.parametrize(("tau", "exc"), [(-0.1, ValueError), (float("nan"), ValueError), ("1", TypeError)])
def test_tau_normalize_bad_tau(tau, exc) -> None:
    with pytest.raises(exc, match="tau"):
        tau_normalize(torch.randn(3, 4), tau)


# ----------------------------------------------------------------------------------------------------
# NCM


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_class_centroids_vs_loop(center: bool, normalize: bool) -> None:
    g = torch.Generator().manual_seed(0)
    k = 5
    labels = torch.tensor([0] * 20 + [1] * 7 + [2] * 3 + [3] * 1 + [4] * 2)  # long tail
    feats = torch.randn(labels.numel(), 6, generator=g, dtype=torch.float64) + 2.0
    gm = feats.mean(0) if center else None
    got = class_centroids(feats, labels, k, global_mean=gm, normalize=normalize)
    ref = ref_centroids(feats.numpy(), labels.numpy(), k, None if gm is None else gm.numpy(), normalize)
    assert np.allclose(got.numpy(), ref, atol=1e-12)
    if normalize:  # averages of unit vectors are not re-normalised
        assert (got.norm(dim=1) <= 1 + 1e-12).all() and (got.norm(dim=1) < 1 - 1e-6).any()


def test_class_centroids_empty_class_named() -> None:
    labels = torch.tensor([0, 0, 2, 2, 4])
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        class_centroids(torch.randn(5, 3), labels, 5)


@pytest.mark.parametrize("labels", [torch.tensor([0, 1, 5]), torch.tensor([-1, 0, 1])])
def test_class_centroids_labels_out_of_range(labels) -> None:
    with pytest.raises(ValueError, match="labels"):
        class_centroids(torch.randn(3, 2), labels, 3)


@pytest.mark.parametrize("normalize", [True, False])
def test_ncm_logits_euclidean_and_cosine_vs_loop(normalize: bool) -> None:
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(9, 4, generator=g, dtype=torch.float64)
    cents = torch.randn(6, 4, generator=g, dtype=torch.float64)  # K > N
    gm = torch.randn(4, generator=g, dtype=torch.float64)
    got = ncm_logits(feats, cents, global_mean=gm, normalize=normalize)
    got_cos = ncm_logits(feats, cents, global_mean=gm, normalize=normalize, metric="cosine")
    ref = np.zeros((9, 6))
    ref_cos = np.zeros((9, 6))
    for i, x in enumerate(feats.numpy()):
        v = x - gm.numpy()
        if normalize:
            v = _unit(v)
        for c, cen in enumerate(cents.numpy()):
            ref[i, c] = -np.sum((v - cen) ** 2)
            ref_cos[i, c] = np.dot(v, cen) / np.linalg.norm(v) / np.linalg.norm(cen)
    assert np.allclose(got.numpy(), ref, atol=1e-10)
    assert np.allclose(got_cos.numpy(), ref_cos, atol=1e-10)


def test_ncm_transform_and_bad_metric() -> None:
    x = torch.randn(4, 3)
    assert torch.allclose(ncm_transform(x, normalize=False), x)
    assert torch.allclose(ncm_transform(x).norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="metric"):
        ncm_logits(x, torch.randn(2, 3), metric="manhattan")
    with pytest.raises(ValueError, match="global_mean"):
        ncm_logits(x, torch.randn(2, 3), global_mean=torch.zeros(2))
    with pytest.raises(ValueError, match="centroids"):
        ncm_logits(x, torch.randn(2, 5))


# ----------------------------------------------------------------------------------------------------
# LWS


def test_lws_logits_vs_loop() -> None:
    g = torch.Generator().manual_seed(7)
    x, w = (
        torch.randn(4, 3, generator=g, dtype=torch.float64),
        torch.randn(5, 3, generator=g, dtype=torch.float64),
    )
    b, s = (
        torch.randn(5, generator=g, dtype=torch.float64),
        torch.rand(5, generator=g, dtype=torch.float64) + 0.5,
    )
    got = lws_logits(x, w, b, s)
    ref = np.array([[s[i] * (np.dot(w[i], xx) + b[i]) for i in range(5)] for xx in x.numpy()])
    assert np.allclose(got.numpy(), ref)
    assert torch.allclose(lws_logits(x, w, None, torch.ones(5, dtype=torch.float64)), x @ w.T)
    with pytest.raises(ValueError, match="scales"):
        lws_logits(x, w, b, torch.ones(4))
