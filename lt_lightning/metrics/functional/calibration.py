"""Expected calibration error and precision per shot group, from per-class binned counts.

ECE (Guo et al., ICML 2017; L1, equal-width bins): ``Σ_b (n_b / N) |acc_b − conf_b|`` over the bins of
the top-1 confidence. The bins are torchmetrics' ``MulticlassCalibrationError`` ones exactly
(``bucketize(conf, linspace(0, 1, B + 1), right=True) − 1``: B + 1 slots, a confidence of exactly 1 in
the last), so the overall value equals the library's. Each term is ``|correct_b − Σ conf_b| / N``, so
the statistics are per-class (the class of the target) and per-bin counts and confidence sums: summed
over ranks they merge exactly, and any set of classes (a shot group) gives its own ECE, "the same
estimator on that group's samples".

Per-group precision: the mean over the group's classes present in the targets of
``TP_c / predicted_c`` (0 for a class never predicted: torchmetrics' and sklearn's ``zero_division=0``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lt_lightning.spec import SHOT_GROUP_NAMES

__all__ = ["DEFAULT_ECE_BINS", "calibration_bins"]

#: torchmetrics' default and the usual choice (Guo et al.)
DEFAULT_ECE_BINS = 15


def calibration_bins(logits: Tensor, num_bins: int) -> tuple[Tensor, Tensor]:
    """Top-1 confidence bins of ``logits`` ``[B, K]`` as torchmetrics bins them.

    Returns:
        ``(bin [B] int64 in 0..num_bins, confidence [B] float32)``, predictions from the same softmax.
    """
    probs = logits.float().softmax(dim=1)
    conf = probs.max(dim=1).values
    edges = torch.linspace(0, 1, num_bins + 1, dtype=conf.dtype, device=conf.device)
    return torch.bucketize(conf, edges, right=True) - 1, conf


def _calibration_update(
    logits: Tensor, target: Tensor, num_classes: int, num_bins: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-batch statistics, no host sync.

    Returns:
        ``count [K, B+1]`` int64 (samples by target class and bin), ``correct [K, B+1]`` int64,
        ``confidence [K, B+1]`` float64 (sum of top-1 confidences), ``predicted [K]`` int64 (times each
        class is the top-1 prediction).
    """
    if logits.ndim != 2 or logits.shape != (target.shape[0], num_classes) or target.ndim != 1:
        raise ValueError(
            f"logits must be [B, K] = [{target.shape[0]}, {num_classes}] and target [B], got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    slots = num_bins + 1
    bins, conf = calibration_bins(logits, num_bins)
    target = target.long()
    pred = logits.argmax(dim=1)
    index = target * slots + bins
    size = num_classes * slots
    count = torch.bincount(index, minlength=size).view(num_classes, slots)
    correct = torch.bincount(index, weights=(pred == target).double(), minlength=size)
    confidence = torch.bincount(index, weights=conf.double(), minlength=size)
    predicted = torch.bincount(pred, minlength=num_classes)
    return (
        count,
        correct.round().long().view(num_classes, slots),
        confidence.view(num_classes, slots),
        predicted,
    )


def _ece(count: Tensor, correct: Tensor, confidence: Tensor, member: Tensor) -> Tensor:
    """ECE of the samples whose target class has ``member`` ``[K]`` (float64 0/1): NaN for none."""
    n = (member[:, None] * count.double()).sum(0)  # [B+1]
    gap = (member[:, None] * (correct.double() - confidence)).sum(0)
    return gap.abs().sum() / n.sum()


def _calibration_compute(
    count: Tensor, correct: Tensor, confidence: Tensor, predicted: Tensor, class_group: Tensor | None
) -> dict[str, Tensor]:
    """``ece`` and, with groups, ``ece/{many,medium,few}`` and ``precision/{many,medium,few}`` (0-d float64;
    NaN for a group without evaluated samples)."""
    k = count.shape[0]
    everything = torch.ones(k, dtype=torch.float64, device=count.device)
    out = {"ece": _ece(count, correct, confidence, everything)}
    if class_group is None:
        return out
    cg = class_group.to(count.device)
    total = count.sum(1)
    present = (total > 0).double()
    true_pos = correct.sum(1).double()
    precision = torch.where(predicted > 0, true_pos / predicted.clamp_min(1).double(), 0.0)
    for g, name in enumerate(SHOT_GROUP_NAMES):
        member = (cg == g).double()
        out[f"ece/{name}"] = _ece(count, correct, confidence, member)
        out[f"precision/{name}"] = (member * present * precision).sum() / (member * present).sum()
    return out
