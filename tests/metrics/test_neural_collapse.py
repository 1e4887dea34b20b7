"""Neural-collapse metrics against a slow numpy reference written from the definitions (REFERENCE.md)."""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
import scipy.linalg
import torch

from lt_lightning.metrics import NeuralCollapse
from lt_lightning.metrics import neural_collapse as package_level_function
from lt_lightning.metrics.functional import NC_KEYS, SHOT_GROUP_NAMES, neural_collapse


# --------------------------------------------------------------------------------------------------
# reference: per-class / per-sample Python loops, np.linalg / scipy pinv of the d x d Σ_B
# --------------------------------------------------------------------------------------------------
def _etf_dist(g: np.ndarray) -> float:
    k = g.shape[0]
    c = np.eye(k) - np.ones((k, k)) / k
    return float(np.linalg.norm(g / np.linalg.norm(g) - c / math.sqrt(k - 1)))


def reference_nc(h, y, w, b=None, classes=None, logits=None, preds=None, rtol=None, global_mean="sample"):
    """Every metric from its definition; ``classes`` restricts the problem to those classes."""
    h, y, w = np.asarray(h, np.float64), np.asarray(y), np.asarray(w, np.float64)
    k_all, d = w.shape
    b = np.zeros(k_all) if b is None else np.asarray(b, np.float64)
    if logits is None and preds is None:
        logits = h @ w.T + b
    cls = list(range(k_all)) if classes is None else list(classes)
    keep = np.array([yi in cls for yi in y])
    h, y = h[keep], y[keep]
    logits = None if logits is None else np.asarray(logits, np.float64)[keep]
    preds = None if preds is None else np.asarray(preds)[keep]
    n, k = len(y), len(cls)
    mu = {}
    for c in cls:
        rows = [h[i] for i in range(n) if y[i] == c]
        mu[c] = np.sum(rows, axis=0) / len(rows)
    mu_g = h.mean(0) if global_mean == "sample" else np.mean([mu[c] for c in cls], axis=0)
    sw = np.zeros((d, d))
    for i in range(n):
        v = h[i] - mu[y[i]]
        sw += np.outer(v, v)
    sw /= n
    hbar = np.stack([mu[c] - mu_g for c in cls])
    sb = sum(np.outer(r, r) for r in hbar) / k
    out = {"nc1": float(np.trace(sw @ scipy.linalg.pinv(sb, rtol=rtol)) / k)}
    wc = w[cls]
    out["nc2"] = _etf_dist(wc @ wc.T)
    out["nc2_h"] = _etf_dist(hbar @ hbar.T)
    out["nc3"] = _etf_dist(wc @ hbar.T)
    out["bias_collapse"] = float(np.linalg.norm(wc @ mu_g + b[cls]))
    wn = np.linalg.norm(wc, axis=1)
    hn = np.linalg.norm(hbar, axis=1)
    out["equinorm_w"] = float(wn.std(ddof=1) / wn.mean())
    out["equinorm_h"] = float(hn.std(ddof=1) / hn.mean())
    mism = 0
    for i in range(n):
        ncm = cls[int(np.argmin([np.linalg.norm(h[i] - mu[c]) for c in cls]))]
        net = preds[i] if preds is not None else cls[int(np.argmax(logits[i, cls]))]
        mism += int(ncm != net)
    out["nc4"] = mism / n
    var = {c: np.mean([np.sum((h[i] - mu[c]) ** 2) for i in range(n) if y[i] == c]) for c in cls}
    pairs = [
        (var[a] + var[c]) / (2 * np.sum((mu[a] - mu[c]) ** 2)) for a, c in itertools.combinations(cls, 2)
    ]
    out["cdnv"] = float(np.mean(pairs))
    return out


def _assert_close(got: dict, ref: dict, rtol=1e-9, atol=1e-10, keys=NC_KEYS, suffix=""):
    for key in keys:
        assert math.isclose(got[key + suffix], ref[key], rel_tol=rtol, abs_tol=atol), (
            key + suffix,
            got[key + suffix],
            ref[key],
        )


def _make_data(counts, d, *, seed=0, spread=0.5, offset=0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    k = len(counts)
    means = torch.randn(k, d, generator=g, dtype=torch.float64) * 2
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    feats = means[labels] + spread * torch.randn(len(labels), d, generator=g, dtype=torch.float64) + offset
    w = torch.randn(k, d, generator=g, dtype=torch.float64)
    b = torch.randn(k, generator=g, dtype=torch.float64)
    return feats.to(dtype), labels, w.to(dtype), b.to(dtype)


CASES = {
    "balanced": ([12, 12, 12, 12, 12], 8),
    "long_tail": ([40, 17, 9, 5, 3, 2], 7),
    "d_equals_k": ([9, 7, 6, 5, 4, 3], 6),
    "k_greater_d": ([8, 7, 6, 5, 5, 4, 3, 3], 3),
}


# --------------------------------------------------------------------------------------------------
# functional
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_functional_matches_reference(case, with_bias):
    counts, d = CASES[case]
    h, y, w, b = _make_data(counts, d, seed=len(case))
    b = b if with_bias else None
    got = neural_collapse(h, y, w, b)
    ref = reference_nc(h.numpy(), y.numpy(), w.numpy(), None if b is None else b.numpy())
    _assert_close(got, ref)
    assert 0 < got["nc4"] < 1  # random classifier: the comparison is not trivially 0


def test_functional_class_weighted_global_mean():
    h, y, w, b = _make_data([30, 10, 4, 2], 5, seed=3)
    got = neural_collapse(h, y, w, b, global_mean="class")
    ref = reference_nc(h.numpy(), y.numpy(), w.numpy(), b.numpy(), global_mean="class")
    _assert_close(got, ref)
    assert not math.isclose(got["bias_collapse"], neural_collapse(h, y, w, b)["bias_collapse"])


@pytest.mark.parametrize("pred_kind", ["indices", "logits"])
def test_functional_given_predictions(pred_kind):
    h, y, w, b = _make_data([20, 15, 10, 5], 6, seed=4)
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(len(y), 4, generator=g, dtype=torch.float64)
    if pred_kind == "indices":
        got = neural_collapse(h, y, w, b, predictions=logits.argmax(1))
        ref = reference_nc(h.numpy(), y.numpy(), w.numpy(), b.numpy(), preds=logits.argmax(1).numpy())
    else:
        got = neural_collapse(h, y, w, b, predictions=logits)
        ref = reference_nc(h.numpy(), y.numpy(), w.numpy(), b.numpy(), logits=logits.numpy())
    assert got["nc4"] == pytest.approx(ref["nc4"], abs=0)
    assert got["nc4"] > 0.3  # random predictions disagree with the nearest mean most of the time


@pytest.mark.parametrize("k, d", [(4, 4), (5, 12), (4, 3)])
def test_functional_exact_collapse(k, d):
    """Features equal to simplex-ETF means (d >= K - 1, incl. d = K - 1 < K) and W = those means, plus
    a common offset cancelled by the bias: NC1 = NC2 = NC3 = bias collapse = equinorms = 0, nc4 = 0."""
    g = torch.Generator().manual_seed(k)
    rotation = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    c = torch.eye(k, dtype=torch.float64) - 1.0 / k
    # E: orthonormal basis of 1^⊥ in R^K (E Eᵀ = C); rotated into R^d by K - 1 orthonormal rows.
    e = torch.linalg.svd(c)[0][:, : k - 1]
    etf = e @ rotation[: k - 1]
    assert torch.allclose(etf @ etf.T, c, atol=1e-12)
    counts = [7, 5, 3, 2, 2][:k]
    labels = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)])
    offset = torch.full((d,), 3.0, dtype=torch.float64)
    res = neural_collapse(etf[labels] + offset, labels, etf, -etf @ offset, global_mean="class")
    assert abs(res["nc1"]) < 1e-20
    assert res["nc4"] == 0.0
    assert abs(res["cdnv"]) < 1e-20
    for key in ("nc2", "nc2_h", "nc3", "bias_collapse", "equinorm_w", "equinorm_h"):
        assert abs(res[key]) < 1e-12, (key, res[key])
    # With the sample-weighted global mean (the default) the class means are not centred: NC2(H) > 0.
    assert neural_collapse(etf[labels], labels, etf)["nc2_h"] > 1e-3


def test_functional_empty_class_error_names_index():
    h, y, w, b = _make_data([10, 10, 10, 10, 10], 4)
    keep = (y != 1) & (y != 3)
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        neural_collapse(h[keep], y[keep], w, b)


def test_functional_classes_path_matches_reference():
    h, y, w, b = _make_data([25, 12, 9, 6, 4], 5, seed=2)
    keep = y != 2  # class 2 has no samples
    got = neural_collapse(h[keep], y[keep], w, b, classes=[0, 1, 3, 4])
    ref = reference_nc(h[keep].numpy(), y[keep].numpy(), w.numpy(), b.numpy(), classes=[0, 1, 3, 4])
    _assert_close(got, ref)
    # Samples of classes outside `classes` are left out: passing them changes nothing.
    assert neural_collapse(h, y, w, b, classes=[0, 1, 3, 4]) == got
    with pytest.raises(ValueError, match=r"\[2\]"):
        neural_collapse(h[keep], y[keep], w, b, classes=[0, 2, 3])


def test_functional_shot_groups_match_reference_on_group_classes():
    counts = [150, 120, 60, 40, 25, 12, 8, 5]
    h, y, w, b = _make_data(counts, 9, seed=7, spread=1.0)
    groups = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    got = neural_collapse(h, y, w, b, shot_groups=groups)
    _assert_close(got, reference_nc(h.numpy(), y.numpy(), w.numpy(), b.numpy()))
    for g, name in enumerate(SHOT_GROUP_NAMES):
        cls = torch.nonzero(groups == g).flatten().tolist()
        ref = reference_nc(h.numpy(), y.numpy(), w.numpy(), b.numpy(), classes=cls)
        _assert_close(got, ref, suffix=f"/{name}")


def test_functional_empty_and_single_class_groups_are_nan():
    h, y, w, b = _make_data([150, 130, 50, 30], 5, seed=1)
    got = neural_collapse(h, y, w, b, shot_groups=[0, 0, 1, 1])
    assert all(math.isnan(got[f"{key}/few"]) for key in NC_KEYS)
    assert not math.isnan(got["nc1/many"])
    got = neural_collapse(h, y, w, b, shot_groups=[0, 0, 0, 1])  # one medium class: no geometry
    assert math.isnan(got["nc1/medium"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"features": torch.zeros(4)}, "features must be"),
        ({"labels": torch.zeros(5, dtype=torch.long)}, "labels must be"),
        ({"labels": torch.tensor([0.0, 1.0, 2.0, 0.0])}, "integer"),
        ({"labels": torch.tensor([0, 1, 2, 3])}, r"\[0, 2\]"),
        ({"weight": torch.zeros(3, 5)}, "weight must be"),
        ({"bias": torch.zeros(4)}, "bias must be"),
        ({"num_classes": 4}, "num_classes=4"),
        ({"classes": [0]}, "at least 2"),
        ({"classes": [0, 0, 1]}, "distinct"),
        ({"predictions": torch.zeros(3, dtype=torch.long)}, "predictions must be"),
        ({"shot_groups": [0, 1, 3]}, "shot_groups"),
        ({"global_mean": "median"}, "global_mean"),
    ],
)
def test_functional_bad_input(kwargs, match):
    args = {
        "features": torch.randn(4, 2),
        "labels": torch.tensor([0, 1, 2, 0]),
        "weight": torch.randn(3, 2),
        "bias": None,
    }
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        neural_collapse(**args)


def test_large_offset_tiny_spread_matches_centred_data():
    """Offset 1e4, within-class spread 1e-2: NC1 equal to the centred data's to 1e-8 relative."""
    counts = [60, 30, 15, 8, 5]
    centred, y, w, b = _make_data(counts, 6, seed=5, spread=1e-2)
    shifted = centred + 1e4
    centred = shifted - 1e4  # the exact same points (Sterbenz), so only the algorithm can differ
    base = neural_collapse(centred, y, w, b)["nc1"]
    for batches in (1, 7):
        metric = NeuralCollapse(5, 6)
        for hb, yb in zip(shifted.tensor_split(batches), y.tensor_split(batches)):
            metric.update(hb, yb)
        assert metric.compute()["nc1"] == pytest.approx(base, rel=1e-8)
    assert neural_collapse(shifted, y, w, b)["nc1"] == pytest.approx(base, rel=1e-8)
    # The raw second-moment formula Σ hhᵀ − N μμᵀ fails this test: it can fail.
    sw_naive = torch.zeros(6, 6, dtype=torch.float64)
    for c in range(5):
        hc = shifted[y == c]
        mu = hc.mean(0)
        sw_naive += hc.T @ hc - len(hc) * torch.outer(mu, mu)
    sw_good = torch.zeros(6, 6, dtype=torch.float64)
    for c in range(5):
        hc = centred[y == c]
        sw_good += (hc - hc.mean(0)).T @ (hc - hc.mean(0))
    assert (sw_naive - sw_good).norm() / sw_good.norm() > 1e-6


# --------------------------------------------------------------------------------------------------
# Metric: streaming == one shot == reference
# --------------------------------------------------------------------------------------------------
def _stream(metric, h, y, w, b, splits, logits=None):
    logits = h @ w.T + b if logits is None else logits
    parts = list(zip(h.tensor_split(splits), y.tensor_split(splits), logits.tensor_split(splits)))
    for hb, yb, _ in parts:
        metric.update(hb.float() if hb.dtype == torch.float32 else hb, yb)
    metric.freeze_class_means()
    for hb, yb, lb in parts:
        metric.update_nc4(hb, yb, lb)
    metric.set_classifier(w, b)
    return metric.compute()


@pytest.mark.parametrize("case", CASES)
def test_metric_streaming_matches_reference(case):
    counts, d = CASES[case]
    h, y, w, b = _make_data(counts, d, seed=11)
    ref = reference_nc(h.numpy(), y.numpy(), w.numpy(), b.numpy())
    for splits in ([3, 4, 11, 29], 1):  # odd batch sizes incl. single samples, and one batch
        got = _stream(NeuralCollapse(len(counts), d), h, y, w, b, splits)
        _assert_close(got, ref)


def test_metric_float32_input_accumulates_in_float64():
    h, y, w, b = _make_data([30, 20, 10], 4, seed=2, dtype=torch.float32)
    got = _stream(NeuralCollapse(3, 4), h, y, w, b, 5)
    ref = reference_nc(h.double().numpy(), y.numpy(), w.double().numpy(), b.double().numpy())
    _assert_close(got, ref, rtol=1e-9)  # the float32 inputs are exact in float64


def test_metric_shot_groups_and_class_counts():
    counts = [150, 120, 60, 40, 25, 12, 8, 5]
    h, y, w, b = _make_data(counts, 9, seed=8, spread=1.0)
    got = _stream(NeuralCollapse(8, 9, class_counts=counts), h, y, w, b, [37, 100, 200])
    one_shot = neural_collapse(h, y, w, b, shot_groups=[0, 0, 1, 1, 1, 2, 2, 2])
    assert got.keys() == one_shot.keys()
    for key, val in one_shot.items():
        assert got[key] == pytest.approx(val, rel=1e-9, abs=1e-12), key


def test_metric_nc4_needs_frozen_means_and_is_nan_without():
    h, y, w, b = _make_data([10, 10, 10], 3)
    metric = NeuralCollapse(3, 3)
    metric.update(h, y)
    with pytest.raises(RuntimeError, match="freeze_class_means"):
        metric.update_nc4(h, y, y)
    res = metric.compute()
    assert math.isnan(res["nc4"]) and math.isnan(res["nc2"]) and not math.isnan(res["nc1"])


def test_metric_empty_classes_error_and_drop():
    h, y, w, b = _make_data([10, 10, 10, 10], 3)
    keep = y != 2
    metric = NeuralCollapse(4, 3)
    metric.update(h[keep], y[keep])
    with pytest.raises(ValueError, match=r"\[2\]"):
        metric.compute()
    got = _stream(NeuralCollapse(4, 3, empty_classes="drop"), h[keep], y[keep], w, b, 3)
    ref = reference_nc(h[keep].numpy(), y[keep].numpy(), w.numpy(), b.numpy(), classes=[0, 1, 3])
    _assert_close(got, ref)


def test_metric_mask_leaves_samples_out():
    h, y, w, b = _make_data([20, 15, 10], 4, seed=6)
    mask = torch.arange(len(y)) % 4 != 0
    metric = NeuralCollapse(3, 4)
    logits = h @ w.T + b
    metric.update(h, y, mask=mask)
    metric.freeze_class_means()
    metric.update_nc4(h, y, logits, mask=mask)
    metric.set_classifier(w, b)
    _assert_close(metric.compute(), reference_nc(h[mask].numpy(), y[mask].numpy(), w.numpy(), b.numpy()))


def test_metric_merge_state_is_exact_and_forward_refuses():
    h, y, w, b = _make_data([25, 14, 9, 3], 5, seed=12)
    a, c = NeuralCollapse(4, 5), NeuralCollapse(4, 5)
    a.update(h[:31] + 100.0, y[:31])
    c.update(h[31:] + 100.0, y[31:])
    a.merge_state(c)
    whole = NeuralCollapse(4, 5)
    whole.update(h + 100.0, y)
    for key in ("counts", "sums", "scatter", "sq_dev"):
        assert torch.allclose(getattr(a, key), getattr(whole, key), rtol=1e-10, atol=1e-9), key
    with pytest.raises(TypeError, match="per-batch"):
        a(h, y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 1}, "num_classes >= 2"),
        ({"feature_dim": 0}, "feature_dim"),
        ({"class_counts": [1, 2]}, "class_counts"),
        ({"class_counts": [1, 2, 3], "shot_groups": [0, 1, 2]}, "either"),
        ({"empty_classes": "skip"}, "empty_classes"),
        ({"dist_sync_fn": lambda x, group=None: [x]}, "dist_sync_fn"),
    ],
)
def test_metric_bad_init(kwargs, match):
    args = {"num_classes": 3, "feature_dim": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        NeuralCollapse(**args)


def test_metric_bad_update():
    metric = NeuralCollapse(3, 4, validate_args=True)
    with pytest.raises(ValueError, match="dimension 5"):
        metric.update(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        metric.update(torch.zeros(2, 4), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="weight must be"):
        metric.set_classifier(torch.zeros(4, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metric_update_has_no_host_sync_on_cuda():
    h, y, w, b = _make_data([20, 15, 10], 8, seed=1)
    metric = NeuralCollapse(3, 8, class_counts=[200, 50, 5]).cuda()
    h, y, logits = h.cuda(), y.cuda(), (h @ w.T + b).cuda()
    metric.update(h, y)  # warm-up (allocations)
    metric.freeze_class_means()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metric.update(h, y)
        metric.update_nc4(h, y, logits)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert metric.counts.sum().item() == 2 * len(y)


# --------------------------------------------------------------------------------------------------
# two real processes (gloo): exact vs single process, fixed number of collectives
# --------------------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, out_dir: str) -> None:
    import torch.distributed as dist

    from lt_lightning.metrics import ShotAccuracy

    torch.set_num_threads(1)
    # a file rendezvous in the test's folder: no TCP port that a parallel test could take first
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    calls = {"n": 0}
    for name in (
        "all_reduce",
        "all_gather",
        "broadcast",
        "all_gather_object",
        "reduce",
        "all_gather_into_tensor",
    ):
        original = getattr(dist, name)

        def counting(*args, _orig=original, **kwargs):
            calls["n"] += 1
            return _orig(*args, **kwargs)

        setattr(dist, name, counting)
    counts = [150, 120, 60, 40, 25, 12, 8, 5]
    h, y, w, b = _make_data(counts, 9, seed=21, spread=1.0, offset=50.0)
    logits = h @ w.T + b
    n = len(y)  # 420 samples; rank 0 takes 247 (odd), rank 1 the other 173: unequal, disjoint, unpadded
    share = slice(0, 247) if rank == 0 else slice(247, n)
    hr, yr, lr = h[share], y[share], logits[share]
    results = {}
    for batches in (1, 9):
        nc = NeuralCollapse(8, 9, class_counts=counts)
        acc = ShotAccuracy(8, class_counts=counts)
        parts = list(zip(hr.tensor_split(batches), yr.tensor_split(batches), lr.tensor_split(batches)))
        for hb, yb, lb in parts:
            nc.update(hb, yb)
            acc.update(lb, yb)
        before = calls["n"]
        nc.freeze_class_means()
        freeze_calls = calls["n"] - before
        for hb, yb, lb in parts:
            nc.update_nc4(hb, yb, lb)
        nc.set_classifier(w, b)
        before = calls["n"]
        res_nc = nc.compute()
        compute_calls = calls["n"] - before
        before = calls["n"]
        res_acc = acc.compute()
        acc_calls = calls["n"] - before
        local = NeuralCollapse(8, 9)  # the local state is restored after compute (unsync)
        local.update(hr, yr)
        assert torch.equal(nc.counts, local.counts)
        results[batches] = {
            "nc": res_nc,
            "acc": res_acc,
            "calls": (freeze_calls, compute_calls, acc_calls),
            "per_class": acc.per_class_accuracy().tolist(),
        }
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_gloo_exact_and_fixed_collectives(tmp_path):
    from sklearn.metrics import balanced_accuracy_score

    from lt_lightning.metrics import ShotAccuracy

    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    counts = [150, 120, 60, 40, 25, 12, 8, 5]
    h, y, w, b = _make_data(counts, 9, seed=21, spread=1.0, offset=50.0)
    logits = h @ w.T + b
    single = neural_collapse(h, y, w, b, predictions=logits, shot_groups=[0, 0, 1, 1, 1, 2, 2, 2])
    acc = ShotAccuracy(8, class_counts=counts)
    acc.update(logits, y)
    single_acc = acc.compute()
    assert single_acc["balanced_acc"] == pytest.approx(
        balanced_accuracy_score(y, logits.argmax(1)), abs=1e-12
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for res in ranks:
        for batches in (1, 9):
            got = res[batches]
            for key, val in single.items():
                assert got["nc"][key] == pytest.approx(val, rel=1e-10, abs=1e-12, nan_ok=True), key
            for key, val in single_acc.items():
                assert got["acc"][key] == pytest.approx(float(val), rel=1e-12, nan_ok=True), key
        # Collectives per compute do not grow with the number of batches: 1 (freeze) and 2 (compute).
        assert res[1]["calls"] == res[9]["calls"]
        assert res[1]["calls"][:2] == (1, 2)
        assert res[1]["per_class"] == pytest.approx(acc.per_class_accuracy().tolist())


def test_package_exports_the_function_not_the_submodule():
    assert package_level_function is neural_collapse


@pytest.mark.parametrize("groups", [False, True])
def test_float32_scatter_product_is_close_to_exact(groups):
    h, y, w, b = _make_data([40, 25, 9, 3], 6, seed=5, dtype=torch.float32)
    kwargs = {"class_counts": [150, 60, 10, 3]} if groups else {}
    exact = NeuralCollapse(4, 6, **kwargs)
    fast = NeuralCollapse(4, 6, product_dtype=torch.float32, **kwargs)
    for metric in (exact, fast):
        for hb, yb in zip(h.split(13), y.split(13)):
            metric.update(hb, yb)
        metric.set_classifier(w, b)
    e, f = exact.compute(), fast.compute()
    for key in ("nc1", "nc2_h", "nc3", "equinorm_h"):
        assert f[key] == pytest.approx(float(e[key]), rel=1e-5), key
    if groups:
        assert f["nc1/many"] == pytest.approx(float(e["nc1/many"]), rel=1e-5, nan_ok=True)


def test_product_dtype_validated():
    with pytest.raises(ValueError, match="product_dtype must be"):
        NeuralCollapse(3, 2, product_dtype=torch.float16)


# --------------------------------------------------------------------------------------------------
# compute() returns tensors; it is never stale
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("groups", [None, [0, 0, 1, 1, 1, 2, 2, 2]])
def test_compute_returns_float64_scalars_equal_to_the_one_shot_function(groups):
    counts = [150, 120, 60, 40, 25, 12, 8, 5]
    h, y, w, b = _make_data(counts, 9, seed=13, spread=1.0, offset=20.0)
    metric = NeuralCollapse(8, 9, shot_groups=groups)
    res = _stream(metric, h, y, w, b, 1)  # one batch: the very same float64 operations as the function
    assert res and all(
        isinstance(v, torch.Tensor) and v.ndim == 0 and v.dtype == torch.float64 for v in res.values()
    )
    one_shot = neural_collapse(h, y, w, b, predictions=h @ w.T + b, shot_groups=groups, precision="float64")
    assert all(type(v) is float for v in one_shot.values())  # the public signature: dict[str, float]
    assert list(res) == list(one_shot)
    mismatched = {k: (float(res[k]), v) for k, v in one_shot.items() if float(res[k]) != v}
    assert not {k: p for k, p in mismatched.items() if not all(math.isnan(x) for x in p)}, mismatched
    # and many batches agree to rounding
    streamed = _stream(NeuralCollapse(8, 9, shot_groups=groups), h, y, w, b, [17, 100, 230])
    for key, val in one_shot.items():
        assert float(streamed[key]) == pytest.approx(val, rel=1e-10, abs=1e-12, nan_ok=True), key


def test_compute_follows_the_classifier_and_the_nc4_pass_without_cache():
    h, y, w, b = _make_data([20, 15, 10], 4, seed=6)
    metric = NeuralCollapse(3, 4)
    metric.update(h, y)
    metric.set_classifier(w, b)
    first = metric.compute()
    metric.set_classifier(2.0 * w[[1, 2, 0]], b)  # another classifier: nc3 changes
    second = metric.compute()
    assert float(second["nc3"]) != float(first["nc3"])
    assert float(second["nc1"]) == float(first["nc1"])
    assert math.isnan(second["nc4"])
    metric.freeze_class_means()
    metric.update_nc4(h, y, h @ w.T + b)  # update_nc4 is not torchmetrics' update: no automatic reset
    third = metric.compute()
    assert not math.isnan(third["nc4"]) and float(third["nc4"]) > 0
    assert not metric.compute_with_cache
    with pytest.raises(ValueError, match="compute_with_cache"):
        NeuralCollapse(3, 4, compute_with_cache=True)


def test_undefined_metrics_warn_from_the_metric_and_the_function():
    from lt_lightning.metrics.functional import UndefinedMetricWarning

    y = torch.arange(3).repeat(4)
    h = torch.ones(12, 4, dtype=torch.float64)  # all class means coincide: no between-class spread
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.warns(UndefinedMetricWarning, match="'nc1'"):
        res = neural_collapse(h, y, w)
    assert math.isnan(res["nc1"])
    metric = NeuralCollapse(3, 4)
    metric.update(h, y)
    metric.set_classifier(w)
    with pytest.warns(UndefinedMetricWarning, match="'nc1'") as caught:
        out = metric.compute()
    assert torch.isnan(out["nc1"]) and "'nc4'" not in str(caught[0].message)  # nc4: no second pass asked
