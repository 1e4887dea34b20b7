"""Seeded long-tailed subsets of a labelled dataset (Cao et al., NeurIPS 2019, the CIFAR-LT generator)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["long_tail_split"]


def long_tail_split(
    targets: Sequence[int] | np.ndarray,
    class_counts: Sequence[int],
    *,
    seed: int = 0,
    val_per_class: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a long-tailed training subset and of a balanced validation set from the unused images.

    For each class ``c = 0..K-1`` in order, that class's indices are shuffled with one
    ``numpy.random.RandomState(seed)`` shared across classes and the first ``class_counts[c]`` are kept.
    This is the same random stream as the LDAM-DRW generator (``np.random.seed(0)`` then
    ``np.random.shuffle`` per class), so ``seed=0`` selects the very images of the published CIFAR-LT
    splits. The validation images are the *last* ``val_per_class`` of each shuffled list, so asking for a
    validation set never changes which images a class trains on, except for a class whose count needs
    more than ``available - val_per_class`` images (the CIFAR head class at ``max_count = 5000``): that
    class trains on the first ``available - val_per_class`` and gives up the rest to validation.

    Args:
        targets: ``[N]`` integer labels of the full dataset.
        class_counts: ``[K]`` wanted training count per class.
        seed: seed of the per-class shuffles.
        val_per_class: validation images per class taken from the unused images.

    Returns:
        ``(train_idx, val_idx)``: int64 index arrays, grouped by class in class order.

    Raises:
        ValueError: a class has fewer images than asked for, or would end with no training image.
    """
    targets = np.asarray(targets)
    if targets.ndim != 1:
        raise ValueError(f"targets must be one-dimensional [N], got shape {targets.shape}")
    if val_per_class < 0:
        raise ValueError(f"val_per_class must be >= 0, got {val_per_class}")
    num_classes = len(class_counts)
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes}); "
            f"found labels in {int(targets.min())}..{int(targets.max())}"
        )
    rng = np.random.RandomState(seed)
    train_parts, val_parts = [], []
    for c, wanted in enumerate(class_counts):
        idx = np.where(targets == c)[0]
        rng.shuffle(idx)
        available = len(idx) - val_per_class
        if available < 1 or (wanted > available and val_per_class == 0):
            raise ValueError(
                f"class {c} has {len(idx)} images but the split asks for {wanted} training"
                f" + {val_per_class} validation images; lower max_count or val_per_class"
            )
        if wanted < 1:
            raise ValueError(
                f"class {c} would end with {wanted} training samples; lower imbalance_ratio or raise max_count"
            )
        train_parts.append(idx[: min(wanted, available)])
        if val_per_class:
            val_parts.append(idx[len(idx) - val_per_class :])
    train_idx = np.concatenate(train_parts).astype(np.int64)
    val_idx = np.concatenate(val_parts).astype(np.int64) if val_parts else np.zeros(0, dtype=np.int64)
    return train_idx, val_idx
