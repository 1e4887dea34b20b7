"""Minority-collapse measurements against a per-pair numpy loop, through the streaming metric, and under a
real 2-process gloo DDP run against one process."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch

from lt_lightning.metrics import NeuralCollapse, minority_collapse, neural_collapse
from lt_lightning.metrics.functional import MINORITY_COLLAPSE_KEYS, SHOT_GROUP_NAMES

COUNTS = [150, 120, 60, 40, 25, 12, 8, 5]
GROUPS = [0, 0, 1, 1, 1, 2, 2, 2]
D = 9


def _data(seed: int = 0, offset: float = 5.0):
    g = torch.Generator().manual_seed(seed)
    k = len(COUNTS)
    centres = torch.randn(k, D, generator=g, dtype=torch.float64) * 3 + offset
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    y = y[torch.randperm(len(y), generator=g)]
    h = centres[y] + torch.randn(len(y), D, generator=g, dtype=torch.float64)
    w = torch.randn(k, D, generator=g, dtype=torch.float64) * torch.linspace(2.0, 0.5, k)[:, None]
    return h, y, w


def _reference(w, h, y, groups, global_mean="sample"):
    """Per-pair loops in numpy, from the definitions in the docstring of ``minority_collapse``."""
    h, y, groups = h.numpy(), y.numpy(), np.asarray(groups)
    k = len(groups)
    means = np.stack([h[y == c].mean(0) for c in range(k)])
    n = np.array([(y == c).sum() for c in range(k)], float)
    mu_g = (n[:, None] * means).sum(0) / n.sum() if global_mean == "sample" else means.mean(0)
    hbar = means - mu_g

    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    out = {}
    for prefix, rows in (("mc_wcos", None if w is None else w.numpy()), ("mc_hcos", hbar)):
        for g, name in enumerate(SHOT_GROUP_NAMES):
            cls = [c for c in range(k) if groups[c] == g]
            vals = (
                [cos(rows[a], rows[b]) for a, b in itertools.combinations(cls, 2)] if rows is not None else []
            )
            out[f"{prefix}/{name}"] = float(np.mean(vals)) if vals else float("nan")
        for a, b in ((0, 1), (0, 2), (1, 2)):
            ca = [c for c in range(k) if groups[c] == a]
            cb = [c for c in range(k) if groups[c] == b]
            vals = [cos(rows[i], rows[j]) for i in ca for j in cb] if rows is not None else []
            out[f"{prefix}/{SHOT_GROUP_NAMES[a]}-{SHOT_GROUP_NAMES[b]}"] = (
                float(np.mean(vals)) if vals else float("nan")
            )
    for key, rows in (("mc_wnorm_ratio", None if w is None else w.numpy()), ("mc_hnorm_ratio", hbar)):
        if rows is None:
            out[key] = float("nan")
            continue
        few = [np.linalg.norm(rows[c]) for c in range(k) if groups[c] == 2]
        many = [np.linalg.norm(rows[c]) for c in range(k) if groups[c] == 0]
        out[key] = float(np.mean(few) / np.mean(many)) if few and many else float("nan")
    return out


def _assert_matches(got, ref):
    assert set(got) >= set(MINORITY_COLLAPSE_KEYS)
    for key in MINORITY_COLLAPSE_KEYS:
        assert got[key] == pytest.approx(ref[key], rel=1e-10, abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize("global_mean", ["sample", "class"])
@pytest.mark.parametrize("groups", [GROUPS, [0, 0, 0, 1, 2, 2, 2, 2], [0, 1, 1, 1, 1, 1, 1, 2]])
def test_functional_matches_per_pair_loop(groups, global_mean):
    h, y, w = _data()
    _assert_matches(
        minority_collapse(w, h, y, groups, global_mean=global_mean), _reference(w, h, y, groups, global_mean)
    )
    # and the same numbers come with neural_collapse's shot-group results
    res = neural_collapse(h, y, w, shot_groups=groups, global_mean=global_mean)
    _assert_matches(res, _reference(w, h, y, groups, global_mean))


def test_missing_groups_and_no_classifier_give_nan():
    h, y, w = _data(1)
    groups = [0, 0, 0, 0, 1, 1, 1, 1]  # no few-shot group
    res = minority_collapse(None, h, y, groups)
    _assert_matches(res, _reference(None, h, y, groups))
    assert np.isnan(res["mc_wcos/many"]) and np.isnan(res["mc_hnorm_ratio"]) and np.isnan(res["mc_hcos/few"])
    assert not np.isnan(res["mc_hcos/many-medium"])


def test_collapsed_minority_and_etf_values():
    """Collapsed few-shot rows give cosine 1; a simplex ETF gives -1/(K-1) everywhere and ratio 1."""
    k = len(COUNTS)
    etf = torch.eye(k, dtype=torch.float64) - 1.0 / k
    y = torch.arange(k).repeat(3)
    res = minority_collapse(etf, etf[y], y, GROUPS)
    for key in MINORITY_COLLAPSE_KEYS:
        expected = 1.0 if "ratio" in key else -1.0 / (k - 1)
        assert res[key] == pytest.approx(expected, abs=1e-12), key
    w = etf.clone()
    w[5:] = w[5] * torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)[:, None]  # few rows on one ray
    res = minority_collapse(w, etf[y], y, GROUPS)
    assert res["mc_wcos/few"] == pytest.approx(1.0)
    assert res["mc_wnorm_ratio"] == pytest.approx((1 + 0.5 + 0.25) / 3)


def test_streaming_metric_matches_functional():
    h, y, w = _data(2)
    metric = NeuralCollapse(len(COUNTS), D, shot_groups=GROUPS)
    for hb, yb in zip(h.tensor_split(7), y.tensor_split(7)):
        metric.update(hb.float(), yb)
    metric.set_classifier(w)
    got = metric.compute()
    ref = _reference(w, h.float().double(), y, GROUPS)
    for key in MINORITY_COLLAPSE_KEYS:
        assert got[key] == pytest.approx(ref[key], rel=1e-9, nan_ok=True), key
    assert not any(k.startswith("mc_") for k in NeuralCollapse(len(COUNTS), D).to("cpu")._defaults)


def test_dropped_empty_class_is_left_out():
    h, y, w = _data(3)
    keep = y != 4
    metric = NeuralCollapse(len(COUNTS), D, shot_groups=GROUPS, empty_classes="drop")
    metric.update(h[keep], y[keep])
    metric.set_classifier(w)
    got = metric.compute()
    classes = [c for c in range(len(COUNTS)) if c != 4]
    remap = torch.full((len(COUNTS),), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    ref = _reference(w[classes], h[keep], remap[y[keep]], [GROUPS[c] for c in classes])
    for key in MINORITY_COLLAPSE_KEYS:
        assert got[key] == pytest.approx(ref[key], rel=1e-10, nan_ok=True), key


def test_bad_input():
    h, y, w = _data()
    with pytest.raises(ValueError, match="shot_groups"):
        minority_collapse(w, h, y, [0, 1, 2])
    with pytest.raises(ValueError, match="global_mean"):
        minority_collapse(w, h, y, GROUPS, global_mean="median")
    with pytest.raises(ValueError, match=r"classes \[7\] have no samples"):
        minority_collapse(w, h[y != 7], y[y != 7], GROUPS)


# ---- two real processes (gloo) vs one ---------------------------------------------------------------
def _ddp_worker(rank: int, world: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    # a file rendezvous in the test's folder: no TCP port that a parallel test could take first
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    h, y, w = _data(5, offset=40.0)
    share = slice(0, 211) if rank == 0 else slice(211, len(y))  # unequal, disjoint, unpadded
    metric = NeuralCollapse(len(COUNTS), D, class_counts=COUNTS, many_threshold=100, few_threshold=20)
    for hb, yb in zip(h[share].tensor_split(5), y[share].tensor_split(5)):
        metric.update(hb, yb)
    metric.set_classifier(w)
    torch.save(metric.compute(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_gloo_equals_one_process(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    h, y, w = _data(5, offset=40.0)
    single = neural_collapse(h, y, w, shot_groups=GROUPS)  # COUNTS with thresholds 100/20 give GROUPS
    ref = _reference(w, h, y, GROUPS)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        for key in MINORITY_COLLAPSE_KEYS:
            assert got[key] == pytest.approx(single[key], rel=1e-10, abs=1e-12, nan_ok=True), key
            assert got[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12, nan_ok=True), key
