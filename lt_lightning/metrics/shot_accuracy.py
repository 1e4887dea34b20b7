"""Overall, balanced and many/medium/few-shot accuracy as a torchmetrics ``Metric`` (Kang et al., ICLR 2020).

The maths is :mod:`lt_lightning.metrics.functional.shot_accuracy`; this class holds per-class correct and
total counts ``[K]`` (int64, sum-reduced, so exact under DDP and under any precision) and calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lt_lightning.compat import plot_metric_values
from lt_lightning.metrics.functional.shot_accuracy import (
    _shot_accuracy_compute,
    _shot_accuracy_update,
    shot_accuracy,  # its old public path: the functional form used to live here
)
from lt_lightning.spec import (
    DEFAULT_FEW_THRESHOLD,
    DEFAULT_MANY_THRESHOLD,
    SHOT_GROUP_NAMES,
    resolve_shot_groups,
)

__all__ = ["ShotAccuracy", "shot_accuracy"]


class ShotAccuracy(Metric):
    """Top-1, balanced and many/medium/few-shot accuracy, exact under DDP (Kang et al., ICLR 2020).

    States are per-class ``correct`` and ``total`` counts ``[K]`` (int64, sum-reduced), so any split
    of the samples over ranks and batches gives the same result, provided every sample is seen once.

    Args:
        num_classes: ``K``.
        class_counts: training counts ``[K]`` for the shot groups (many > ``many_threshold``, few <
            ``few_threshold``; the rule of :func:`lt_lightning.spec.resolve_shot_groups`); without them
            (and without ``shot_groups``) only ``acc`` and ``balanced_acc`` are returned.
        shot_groups: ``[K]`` group ids (0 many, 1 medium, 2 few) instead of ``class_counts``.
        many_threshold, few_threshold: thresholds for ``class_counts``.
        kwargs: passed to ``torchmetrics.Metric``.

    ``compute()`` returns 0-d float64 tensors: ``acc`` (overall top-1), ``balanced_acc`` (mean per-class
    accuracy over classes present in the targets, sklearn's ``balanced_accuracy_score``), ``many_acc``,
    ``medium_acc``, ``few_acc`` (NaN for a group without evaluated classes) and the group sizes
    ``many_classes``, ``medium_classes``, ``few_classes`` (classes per group by training count).

    Example:
        >>> metric = ShotAccuracy(3, class_counts=[500, 50, 5])
        >>> metric.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))
        >>> metric.compute()["few_acc"]
        tensor(0.5000, dtype=torch.float64)
        >>> fig, ax = metric.plot()  # torchmetrics' plot of the accuracies
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor
    class_group: Tensor | None

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        shot_groups: Sequence[int] | Tensor | None = None,
        many_threshold: int = DEFAULT_MANY_THRESHOLD,
        few_threshold: int = DEFAULT_FEW_THRESHOLD,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        groups = resolve_shot_groups(num_classes, class_counts, shot_groups, many_threshold, few_threshold)
        self.num_classes = num_classes
        self.register_buffer("class_group", groups, persistent=False)
        # int64 counts: exact at any size, and a module converted to a half type (bf16-true) leaves
        # integer tensors alone, where float64 states would be rounded to bfloat16 (8 bits: wrong above 256)
        self.add_state("correct", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: ``preds`` ``[B]`` classes or ``[B, K]`` logits, ``target`` ``[B]``, optional ``mask``."""
        correct, total = _shot_accuracy_update(preds, target, self.num_classes, mask)
        self.correct += correct.long()  # whole numbers (a 0/1 mask), so the conversion is exact
        self.total += total.long()

    def compute(self) -> dict[str, Tensor]:
        """See the class docstring for the keys."""
        return _shot_accuracy_compute(self.correct.double(), self.total.double(), self.class_group)

    def plot(self, val: dict[str, Tensor] | Sequence[dict[str, Tensor]] | None = None, ax: Any = None) -> Any:
        """torchmetrics' plot of the accuracies (one value, or a sequence of them over time).

        Returns:
            ``(figure, axes)`` of matplotlib.
        """
        val = val if val is not None else self.compute()
        keep = ("acc", "balanced_acc", *(f"{g}_acc" for g in SHOT_GROUP_NAMES))
        pick = lambda v: {k: v[k].float().cpu() for k in keep if k in v}  # noqa: E731
        val = pick(val) if isinstance(val, dict) else [pick(v) for v in val]
        return plot_metric_values(self, val, ax)

    def per_class_accuracy(self) -> Tensor:
        """Per-class accuracy ``[K]`` (float64, NaN for classes absent from the targets), synced over ranks.

        Collective under DDP when ``sync_on_compute`` (the default): call it on every rank. The local
        counts are restored afterwards, as after ``compute``.
        """
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            return self.correct.double() / self.total.double()
