"""Overall, balanced and many/medium/few-shot accuracy from per-class counts (Kang et al., ICLR 2020).

Group accuracy is the mean of per-class accuracies of the group's classes present in the evaluation
set (REFERENCE.md, "Data"); an empty group is NaN, never 0 %. Everything is built from per-class
correct/total counts, which sum exactly across DDP ranks — unlike ``MulticlassAccuracy(average="macro")``,
which scores a class that is predicted but absent from the targets as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lt_lightning.metrics.functional import SHOT_GROUP_NAMES, _resolve_class_groups

__all__ = ["ShotAccuracy", "shot_accuracy"]


def _shot_accuracy_update(
    preds: Tensor, target: Tensor, num_classes: int, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-class correct and total counts ``[K]`` (float64) of a batch; no host sync.

    Args:
        preds: ``[B]`` predicted classes or ``[B, K]`` scores (argmax taken).
        target: ``[B]`` true classes.
        mask: optional ``[B]`` bool, False for samples to leave out (e.g. DDP padding).
    """
    if not isinstance(preds, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"preds and target must be tensors, got {type(preds).__name__}, {type(target).__name__}"
        )
    if target.ndim != 1 or target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"target must be a 1-d integer tensor [B], got {tuple(target.shape)} {target.dtype}")
    if preds.ndim == 2:
        if preds.shape != (target.shape[0], num_classes):
            raise ValueError(
                f"logits must be [B, K] = [{target.shape[0]}, {num_classes}], got {tuple(preds.shape)}"
            )
        preds = preds.argmax(dim=1)
    elif preds.shape != target.shape or preds.is_floating_point():
        raise ValueError(
            f"preds must be [B] integer classes or [B, {num_classes}] logits matching target {tuple(target.shape)}, "
            f"got {tuple(preds.shape)} {preds.dtype}"
        )
    weight = torch.ones(target.shape, dtype=torch.float64, device=target.device)
    if mask is not None:
        weight = mask.to(device=target.device, dtype=torch.float64)
    target = target.long()
    correct = torch.zeros(num_classes, dtype=torch.float64, device=target.device)
    total = torch.zeros(num_classes, dtype=torch.float64, device=target.device)
    correct.index_add_(0, target, (preds.to(target.device) == target).to(torch.float64) * weight)
    total.index_add_(0, target, weight)
    return correct, total


def _shot_accuracy_compute(correct: Tensor, total: Tensor, class_group: Tensor | None) -> dict[str, Tensor]:
    """``acc``, ``balanced_acc`` and, with groups, ``{many,medium,few}_acc`` and ``..._classes``.

    0-d float64 tensors on the device of the counts; no host sync (an empty group is 0/0 = NaN).
    """
    present = (total > 0).to(torch.float64)
    per_class = torch.where(total > 0, correct / total.clamp_min(1), torch.zeros_like(correct))
    out = {
        "acc": correct.sum() / total.sum(),
        "balanced_acc": (per_class * present).sum() / present.sum(),
    }
    if class_group is not None:
        cg = class_group.to(correct.device)
        member = torch.stack([(cg == g).to(torch.float64) for g in range(len(SHOT_GROUP_NAMES))])  # [3, K]
        group_acc = (member * present * per_class).sum(1) / (member * present).sum(1)
        for g, name in enumerate(SHOT_GROUP_NAMES):
            out[f"{name}_acc"] = group_acc[g]
        for g, name in enumerate(SHOT_GROUP_NAMES):
            out[f"{name}_classes"] = member[g].sum()
    return out


def shot_accuracy(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    class_counts: Sequence[int] | Tensor | None = None,
    shot_groups: Sequence[int] | Tensor | None = None,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, Tensor]:
    """Functional :class:`ShotAccuracy`: top-1, balanced and many/medium/few accuracy of one batch.

    Args:
        preds: ``[N]`` predicted classes or ``[N, K]`` scores.
        target: ``[N]`` true classes.
        num_classes, class_counts, shot_groups, many_threshold, few_threshold: as :class:`ShotAccuracy`.

    Returns:
        The keys of :meth:`ShotAccuracy.compute` as 0-d float64 tensors.

    Example:
        >>> preds, target = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])
        >>> res = shot_accuracy(preds, target, 3, class_counts=[500, 50, 5])
        >>> res["acc"], res["few_acc"]
        (tensor(0.7500, dtype=torch.float64), tensor(0.5000, dtype=torch.float64))
    """
    groups = _resolve_class_groups(num_classes, class_counts, shot_groups, many_threshold, few_threshold)
    correct, total = _shot_accuracy_update(preds, target, num_classes)
    return _shot_accuracy_compute(correct, total, groups)


class ShotAccuracy(Metric):
    """Top-1, balanced and many/medium/few-shot accuracy, exact under DDP.

    States are per-class ``correct`` and ``total`` counts ``[K]`` (float64, sum-reduced), so any split
    of the samples over ranks and batches gives the same result, provided every sample is seen once.

    Args:
        num_classes: ``K``.
        class_counts: training counts ``[K]`` for the shot groups (many > ``many_threshold``, few <
            ``few_threshold``); without them (and without ``shot_groups``) only ``acc`` and
            ``balanced_acc`` are returned.
        shot_groups: ``[K]`` group ids (0 many, 1 medium, 2 few) instead of ``class_counts``.
        many_threshold, few_threshold: thresholds for ``class_counts``.
        kwargs: passed to ``torchmetrics.Metric``.

    ``compute()`` returns 0-d float64 tensors: ``acc`` (overall top-1), ``balanced_acc`` (mean per-class accuracy over
    classes present in the targets, sklearn's ``balanced_accuracy_score``), ``many_acc``,
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

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        shot_groups: Sequence[int] | Tensor | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        groups = _resolve_class_groups(num_classes, class_counts, shot_groups, many_threshold, few_threshold)
        self.num_classes = num_classes
        self.register_buffer("class_group", groups, persistent=False)
        self.add_state("correct", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: ``preds`` ``[B]`` classes or ``[B, K]`` logits, ``target`` ``[B]``, optional ``mask``."""
        correct, total = _shot_accuracy_update(preds, target, self.num_classes, mask)
        self.correct += correct
        self.total += total

    def compute(self) -> dict[str, Tensor]:
        """See the class docstring for the keys."""
        return _shot_accuracy_compute(self.correct, self.total, self.class_group)

    def plot(self, val: dict[str, Tensor] | Sequence[dict[str, Tensor]] | None = None, ax: Any = None):
        """torchmetrics' plot of the accuracies (one value, or a sequence of them over time).

        Returns:
            ``(figure, axes)`` of matplotlib.
        """
        val = val if val is not None else self.compute()
        keep = ("acc", "balanced_acc", *(f"{g}_acc" for g in SHOT_GROUP_NAMES))
        pick = lambda v: {k: v[k].float().cpu() for k in keep if k in v}  # noqa: E731
        val = pick(val) if isinstance(val, dict) else [pick(v) for v in val]
        return self._plot(val, ax)

    def per_class_accuracy(self) -> Tensor:
        """Per-class accuracy ``[K]`` (float64, NaN for classes absent from the targets), synced over ranks."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            return (self.correct / self.total).clone()
