"""ShotCalibration (metrics/calibration.py): overall ECE against torchmetrics' MulticlassCalibrationError on
the same logits, per-group ECE against a numpy loop over the group's samples, per-group precision against
sklearn, and the merge of two ranks' states against one process."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_score
from torchmetrics.functional.classification import multiclass_calibration_error

from lt_lightning.metrics import ShotCalibration

K, BINS = 7, 15
GROUPS = [0, 0, 1, 1, 1, 2, 2]


def numpy_ece(conf: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """ECE from its definition, one bin at a time: [i/B, (i+1)/B) for i < B, and a confidence of 1 alone."""
    if len(conf) == 0:
        return float("nan")
    total = 0.0
    for i in range(bins + 1):
        lo, hi = i / bins, (i + 1) / bins
        inside = (conf >= lo) & (conf < hi) if i < bins else conf >= 1.0
        if inside.any():
            total += inside.sum() / len(conf) * abs(correct[inside].mean() - conf[inside].mean())
    return float(total)


def _data(n: int, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    logits = scale * torch.randn(n, K, generator=g)
    logits[torch.arange(n), y] += 1.5  # better than chance, and still wrong often
    return logits, y


def _fed(logits, y, chunks: int = 3) -> ShotCalibration:
    metric = ShotCalibration(K, shot_groups=GROUPS)
    for lo, yy in zip(logits.chunk(chunks), y.chunk(chunks), strict=True):
        metric.update(lo, yy)
    return metric


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overall_ece_equals_torchmetrics(seed):
    logits, y = _data(500, seed)
    got = _fed(logits, y).compute()["ece"]
    ref = multiclass_calibration_error(logits.softmax(1), y, K, n_bins=BINS, norm="l1")
    assert got.item() == pytest.approx(ref.item(), abs=1e-6)


def test_adversarial_confidences_bin_like_torchmetrics():
    # confidence exactly 1 (a huge logit), exactly 1/K (all equal) and confidences on the bin edges
    n = 60
    logits = torch.zeros(n, K)
    logits[:20, 0] = 200.0  # softmax max is exactly 1.0
    edge = torch.tensor([0.2, 0.4, 0.6, 0.8]).repeat(5)
    # top-1 probability p: logit a on class 1, 0 elsewhere, p = e^a / (e^a + K - 1)
    logits[40:, 1] = torch.log(edge * (K - 1) / (1 - edge))
    y = torch.arange(n) % K
    got = _fed(logits, y).compute()["ece"]
    ref = multiclass_calibration_error(logits.softmax(1), y, K, n_bins=BINS, norm="l1")
    assert got.item() == pytest.approx(ref.item(), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 3])
def test_group_ece_and_precision_equal_per_group_loops(seed):
    logits, y = _data(400, seed)
    res = _fed(logits, y).compute()
    probs = logits.softmax(1).numpy()
    conf, pred, target = probs.max(1), probs.argmax(1), y.numpy()
    per_class_precision = precision_score(target, pred, labels=list(range(K)), average=None, zero_division=0)
    for g, name in enumerate(("many", "medium", "few")):
        in_group = np.isin(target, [c for c in range(K) if GROUPS[c] == g])
        expected = numpy_ece(conf[in_group], (pred == target)[in_group].astype(float))
        assert res[f"ece/{name}"].item() == pytest.approx(expected, abs=1e-6), name
        present = [c for c in range(K) if GROUPS[c] == g and (target == c).any()]
        assert res[f"precision/{name}"].item() == pytest.approx(
            per_class_precision[present].mean(), abs=1e-12
        )
    assert len({round(res[f"ece/{n}"].item(), 6) for n in ("many", "medium", "few")}) == 3  # groups differ


def test_a_class_never_predicted_has_precision_zero_and_an_empty_group_is_nan():
    logits = torch.zeros(4, K)
    logits[:, 0] = 5.0  # always predicts class 0
    y = torch.tensor([0, 0, 2, 3])  # no sample of the few classes (5, 6)
    res = _fed(logits, y, chunks=1).compute()
    assert res["precision/many"].item() == pytest.approx(0.5)  # class 0: 2 of 4 correct, class 1 absent
    assert res["precision/medium"].item() == 0.0  # classes 2 and 3 never predicted
    assert math.isnan(res["ece/few"].item()) and math.isnan(res["precision/few"].item())


def test_two_ranks_merged_equal_one_process():
    logits, y = _data(301, 5)
    whole = _fed(logits, y, chunks=1)
    a, b = _fed(logits[:120], y[:120], chunks=2), _fed(logits[120:], y[120:], chunks=5)
    a.merge_state(b)  # what the sum reduction of DDP does with every state
    for key in ("count", "correct", "predicted"):
        assert torch.equal(getattr(a, key), getattr(whole, key)), key
    torch.testing.assert_close(a.confidence, whole.confidence, rtol=1e-14, atol=1e-12)
    for key, value in whole.compute().items():
        assert a.compute()[key].item() == pytest.approx(value.item(), abs=1e-12), key


def test_reliability_rows_match_the_bins():
    logits, y = _data(200, 7)
    rel = _fed(logits, y).reliability()
    assert rel["count"].shape == (4, BINS + 1) and rel["count"][0].sum().item() == 200
    torch.testing.assert_close(rel["count"][1:].sum(0), rel["count"][0])
    conf = logits.softmax(1).max(1).values
    full = rel["count"][0] > 0
    assert torch.all((rel["confidence"][0][full] >= 0) & (rel["confidence"][0][full] <= 1))
    assert rel["confidence"][0][full].mul(rel["count"][0][full]).sum().item() == pytest.approx(
        conf.sum().item(), rel=1e-6
    )


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="num_bins must be a positive integer"):
        ShotCalibration(K, num_bins=0)
    with pytest.raises(ValueError, match=r"logits must be \[B, K\]"):
        ShotCalibration(K).update(torch.zeros(3, K + 1), torch.zeros(3, dtype=torch.long))
