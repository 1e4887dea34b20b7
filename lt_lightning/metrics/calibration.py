"""Calibration and precision per shot group as a torchmetrics ``Metric``.

The maths is :mod:`lt_lightning.metrics.functional.calibration`; the states are per-class, per-bin
counts (int64) and confidence sums (float64), sum-reduced, so a DDP run equals one process (the
integer states exactly, the confidence sums to float64 rounding). The overall value equals torchmetrics'
``MulticlassCalibrationError(n_bins=15, norm="l1")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lt_lightning.metrics.functional.calibration import (
    DEFAULT_ECE_BINS,
    _calibration_compute,
    _calibration_update,
)
from lt_lightning.spec import resolve_shot_groups

__all__ = ["ShotCalibration"]


class ShotCalibration(Metric):
    """ECE (L1, equal-width bins) overall and per shot group, and mean per-class precision per group.

    A sample belongs to the group of its target class. Groups can be set after construction
    (``class_group``, ``[K]``), as :meth:`LongTailModule.use_shot_groups` does.

    Args:
        num_classes: ``K``.
        class_counts: training counts ``[K]`` for the shot groups, or
        shot_groups: ``[K]`` group ids (0 many, 1 medium, 2 few); neither: only ``ece``.
        num_bins: ECE bins (15: torchmetrics' default).
        kwargs: passed to ``torchmetrics.Metric``.

    ``compute()``: ``ece`` and, with groups, ``ece/many|medium|few`` and ``precision/many|medium|few``.

    Example:
        >>> metric = ShotCalibration(3, shot_groups=[0, 1, 2])
        >>> metric.update(torch.tensor([[4.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2]))
        >>> round(float(metric.compute()["ece/few"]), 4)
        0.5761
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    count: Tensor
    correct: Tensor
    confidence: Tensor
    predicted: Tensor
    class_group: Tensor | None

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        shot_groups: Sequence[int] | Tensor | None = None,
        num_bins: int = DEFAULT_ECE_BINS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
        groups = resolve_shot_groups(num_classes, class_counts, shot_groups)
        self.num_classes, self.num_bins = num_classes, num_bins
        self.register_buffer("class_group", groups, persistent=False)
        shape = (num_classes, num_bins + 1)
        self.add_state("count", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("confidence", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("predicted", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add a batch: ``logits`` ``[B, K]``, ``target`` ``[B]``."""
        count, correct, confidence, predicted = _calibration_update(
            logits, target, self.num_classes, self.num_bins
        )
        self.count += count
        self.correct += correct
        self.confidence += confidence
        self.predicted += predicted

    def compute(self) -> dict[str, Tensor]:
        """See the class docstring for the keys."""
        return _calibration_compute(
            self.count, self.correct, self.confidence, self.predicted, self.class_group
        )

    def reliability(self) -> dict[str, Tensor]:
        """Per-bin ``count``, ``accuracy`` and mean ``confidence`` ``[3 + 1, B + 1]`` (rows: all, many, medium,
        few; NaN in empty bins) for a reliability diagram; synced over ranks like ``compute``."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            rows = [torch.ones(self.num_classes, dtype=torch.bool, device=self.count.device)]
            if self.class_group is not None:
                rows += [self.class_group.to(self.count.device) == g for g in range(3)]
            member = torch.stack(rows).double()  # [R, K]
            n = member @ self.count.double()
            return {
                "count": n,
                "accuracy": (member @ self.correct.double()) / n,
                "confidence": (member @ self.confidence) / n,
            }
