"""SELI distances (metrics/functional/seli.py) against a numpy reference written from the definitions
(Thrampoulidis et al. 2022): the label matrix Ẑ built sample by sample, its square root by SVD, the
distances d(A, T) = ‖A/‖A‖_F − T/‖T‖_F‖_F; random, long-tailed, one class of size 1, balanced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lt_lightning.metrics import NeuralCollapse
from lt_lightning.metrics.functional import SELI_KEYS, neural_collapse, seli_targets


def _d(a: np.ndarray, t: np.ndarray) -> float:
    return float(np.linalg.norm(a / np.linalg.norm(a) - t / np.linalg.norm(t)))


def reference(features: np.ndarray, labels: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """From the definitions: Ẑ [K, N] entry by entry, S = U Λ Uᵀ from Ẑ's SVD, S⁺ = U Λ⁻¹ Uᵀ (rank K − 1)."""
    k, n = weight.shape[0], len(labels)
    z = np.empty((k, n))
    for c in range(k):
        for i in range(n):
            z[c, i] = (1.0 - 1.0 / k) if labels[i] == c else -1.0 / k
    u, lam, _ = np.linalg.svd(z, full_matrices=False)
    r = int((lam > 1e-9 * lam[0]).sum())
    u, lam = u[:, :r], lam[:r]
    s, s_pinv = (u * lam) @ u.T, (u / lam) @ u.T
    means = np.stack([features[labels == c].mean(0) for c in range(k)])
    c = np.eye(k) - np.ones((k, k)) / k
    cw, cm = c @ weight, c @ means
    return {"seli_w": _d(cw @ cw.T, s), "seli_h": _d(cm @ cm.T, s_pinv), "seli_wh": _d(cw @ cm.T, c)}


def _problem(counts: list[int], d: int, seed: int):
    g = np.random.default_rng(seed)
    k = len(counts)
    labels = np.repeat(np.arange(k), counts)
    centres = 3.0 * g.standard_normal((k, d))
    features = centres[labels] + g.standard_normal((len(labels), d))
    weight = g.standard_normal((k, d))
    return features, labels, weight


CASES = {
    "random": ([13, 7, 22, 9, 15], 6),
    "long_tailed": ([200, 90, 40, 18, 8, 4, 2], 10),
    "class_of_size_one": ([30, 12, 5, 1], 5),
    "balanced": ([10, 10, 10, 10, 10, 10], 8),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_seli_distances_equal_the_reference(case, precision):
    counts, d = CASES[case]
    x, y, w = _problem(counts, d, seed=len(case))
    res = neural_collapse(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w), precision=precision)
    ref = reference(x, y, w)
    tol = 1e-10 if precision == "float64" else 1e-5
    for key in SELI_KEYS:
        assert res[key] == pytest.approx(ref[key], abs=tol), key
    assert all(0 < ref[k] < 2 for k in SELI_KEYS)  # generic data is far from any of the targets


def test_balanced_targets_are_the_etf_and_centred_distances_equal_nc2_nc3():
    counts, d = CASES["balanced"]
    x, y, w = _problem(counts, d, seed=4)
    k = len(counts)
    c = np.eye(k) - 1.0 / k
    targets = seli_targets(torch.tensor(counts))
    for key, t in targets.items():
        np.testing.assert_allclose(
            t.numpy() / np.linalg.norm(t.numpy()), c / np.sqrt(k - 1), atol=1e-12, err_msg=key
        )
    w_centred = w - w.mean(0, keepdims=True)  # CW = W: SELI's centring changes nothing
    res = neural_collapse(
        torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w_centred), precision="float64"
    )
    assert res["seli_w"] == pytest.approx(res["nc2"], abs=1e-12)
    assert res["seli_h"] == pytest.approx(res["nc2_h"], abs=1e-12)
    assert res["seli_wh"] == pytest.approx(res["nc3"], abs=1e-12)


def test_the_seli_geometry_itself_is_at_distance_zero_and_far_from_the_etf_under_imbalance():
    counts = torch.tensor([50, 20, 8, 3, 1])
    k = len(counts)
    t = seli_targets(counts)
    # a classifier with W Wᵀ = S and class means with M Mᵀ = S⁺ (both rank K − 1, centred)
    evals, evecs = torch.linalg.eigh(t["w"])
    w = evecs * evals.clamp_min(0).sqrt()
    evals_h, evecs_h = torch.linalg.eigh(t["h"])
    means = evecs_h * evals_h.clamp_min(0).sqrt()
    labels = torch.repeat_interleave(torch.arange(k), counts)
    res = neural_collapse(means[labels], labels, w, precision="float64")
    assert res["seli_w"] == pytest.approx(0.0, abs=1e-7) and res["seli_h"] == pytest.approx(0.0, abs=1e-7)
    assert res["nc2"] > 0.1 and res["nc2_h"] > 0.1  # SELI is not the ETF here


def test_streaming_metric_and_groups_equal_the_one_shot_function():
    counts, d = CASES["long_tailed"]
    x, y, w = _problem(counts, d, seed=9)
    groups = [0, 0, 1, 1, 1, 2, 2]
    x_t, y_t, w_t = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w)
    one = neural_collapse(x_t, y_t, w_t, shot_groups=groups, precision="float64")
    metric = NeuralCollapse(len(counts), d, shot_groups=groups)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    for idx in perm.chunk(4):
        metric.update(x_t[idx], y_t[idx])
    metric.set_classifier(w_t)
    got = metric.compute()
    for key in SELI_KEYS:
        assert float(got[key]) == pytest.approx(one[key], abs=1e-10)
        for name in ("many", "medium", "few"):
            assert float(got[f"{key}/{name}"]) == pytest.approx(one[f"{key}/{name}"], abs=1e-10)
    # the few block against a reference of the blocks
    ref_c = np.eye(7) - 1 / 7
    cw = ref_c @ w
    few = [5, 6]
    t = seli_targets(torch.tensor(counts)).get("w").numpy()
    assert one["seli_w/few"] == pytest.approx(
        _d((cw @ cw.T)[np.ix_(few, few)], t[np.ix_(few, few)]), abs=1e-10
    )
