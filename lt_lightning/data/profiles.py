"""Long-tailed class-count profiles.

Conventions follow Cao et al. (LDAM-DRW, NeurIPS 2019), the generator behind CIFAR-LT: class 0 is the
most frequent class and the counts decay along the natural class order. The shot-group rule is
:mod:`lt_lightning.spec`'s (``shot_groups`` and ``SHOT_GROUP_NAMES`` are re-exported here, not copied).
"""

from __future__ import annotations

from typing import Literal, get_args

from lt_lightning.spec import SHOT_GROUP_NAMES, shot_groups

__all__ = ["PROFILES", "SHOT_GROUP_NAMES", "ProfileName", "long_tail_counts", "shot_groups"]

#: the long-tail profiles of :func:`long_tail_counts` (the datamodules' ``profile`` option)
ProfileName = Literal["exp", "step"]
PROFILES: tuple[str, ...] = get_args(ProfileName)


def long_tail_counts(
    num_classes: int, max_count: int, imbalance_ratio: float, profile: str = "exp"
) -> list[int]:
    """Per-class training counts of a long-tailed split.

    ``"exp"``: ``n_i = int(max_count * (1 / r) ** (i / (K - 1)))`` for ``i = 0..K-1`` (LDAM-DRW).
    ``"step"``: the first ``K // 2`` classes keep ``max_count``, the rest ``int(max_count / r)``.

    Args:
        num_classes: K >= 1.
        max_count: count of the head class (class 0), >= 1.
        imbalance_ratio: r = n_max / n_min >= 1 (1 gives a balanced split).
        profile: ``"exp"`` or ``"step"``.

    Returns:
        ``K`` integer counts, non-increasing.

    >>> sum(long_tail_counts(10, 5000, 100))
    12406
    >>> long_tail_counts(4, 100, 10, "step")
    [100, 100, 10, 10]
    """
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(max_count, bool) or int(max_count) != max_count or max_count < 1:
        raise ValueError(f"max_count must be a positive integer, got {max_count!r}")
    if not imbalance_ratio >= 1:  # also rejects NaN
        raise ValueError(f"imbalance_ratio must be >= 1 (n_max / n_min), got {imbalance_ratio!r}")
    if profile not in PROFILES:
        raise ValueError(f"unknown long-tail profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    num_classes, max_count = int(num_classes), int(max_count)
    if profile == "exp":
        if num_classes == 1:
            return [max_count]
        # Same float expression as the reference generator, so int() truncates identically.
        return [
            int(max_count * (1.0 / imbalance_ratio) ** (i / (num_classes - 1.0))) for i in range(num_classes)
        ]
    head = num_classes // 2
    return [max_count] * head + [int(max_count / imbalance_ratio)] * (num_classes - head)
