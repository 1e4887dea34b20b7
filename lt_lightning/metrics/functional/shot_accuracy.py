"""Overall, balanced and many/medium/few-shot accuracy from per-class counts (Kang et al., ICLR 2020).

Group accuracy is the mean of per-class accuracies of the group's classes present in the evaluation
set (REFERENCE.md, "Data"); an empty group is NaN, never 0 %. Everything is built from per-class
correct/total counts ``[K]``, which sum exactly across DDP ranks — unlike
``MulticlassAccuracy(average="macro")``, which scores a class that is predicted but absent from the
targets as 0. The shot groups come from :func:`lt_lightning.spec.resolve_shot_groups`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lt_lightning.spec import (
    DEFAULT_FEW_THRESHOLD,
    DEFAULT_MANY_THRESHOLD,
    SHOT_GROUP_NAMES,
    resolve_shot_groups,
)

__all__ = ["shot_accuracy"]


def _shot_accuracy_update(
    preds: Tensor, target: Tensor, num_classes: int, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-class correct and total counts ``[K]`` (float64) of a batch; no host sync.

    Args:
        preds: ``[B]`` predicted classes or ``[B, K]`` scores (argmax taken).
        target: ``[B]`` true classes.
        num_classes: ``K``.
        mask: optional ``[B]`` bool, False for samples to leave out (e.g. DDP padding).

    Returns:
        ``(correct, total)``, each ``[K]`` float64.

    Raises:
        TypeError: ``preds`` or ``target`` is not a tensor.
        ValueError: a shape or dtype other than the above.
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

    Args:
        correct, total: per-class counts ``[K]`` (float64) from :func:`_shot_accuracy_update`, summed.
        class_group: ``[K]`` shot-group ids (0 many, 1 medium, 2 few) or None.

    Returns:
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
    many_threshold: int = DEFAULT_MANY_THRESHOLD,
    few_threshold: int = DEFAULT_FEW_THRESHOLD,
) -> dict[str, Tensor]:
    """Functional :class:`~lt_lightning.metrics.ShotAccuracy`: top-1, balanced and many/medium/few accuracy.

    Kang et al., "Decoupling representation and classifier for long-tailed recognition" (ICLR 2020):
    many-shot classes have more than ``many_threshold`` training images, few-shot fewer than
    ``few_threshold`` (:func:`lt_lightning.spec.shot_groups`).

    Args:
        preds: ``[N]`` predicted classes or ``[N, K]`` scores.
        target: ``[N]`` true classes.
        num_classes: ``K``.
        class_counts: ``[K]`` training counts for the shot groups, or
        shot_groups: ``[K]`` group ids (0 many, 1 medium, 2 few) instead; neither: no group keys.
        many_threshold, few_threshold: thresholds for ``class_counts``.

    Returns:
        The keys of :meth:`ShotAccuracy.compute <lt_lightning.metrics.ShotAccuracy.compute>` as 0-d
        float64 tensors.

    Raises:
        ValueError: bad shapes, or both ``class_counts`` and ``shot_groups``.

    Example:
        >>> preds, target = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])
        >>> res = shot_accuracy(preds, target, 3, class_counts=[500, 50, 5])
        >>> res["acc"], res["few_acc"]
        (tensor(0.7500, dtype=torch.float64), tensor(0.5000, dtype=torch.float64))
    """
    groups = resolve_shot_groups(num_classes, class_counts, shot_groups, many_threshold, few_threshold)
    correct, total = _shot_accuracy_update(preds, target, num_classes)
    return _shot_accuracy_compute(correct, total, groups)
