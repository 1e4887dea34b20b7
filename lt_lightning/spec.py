"""The long-tail facts every layer shares: the shot-group names and the one rule that makes groups.

A run's shot groups are computed once, by its datamodule, with the functions here; the model, the
metrics and the callbacks receive them (or receive the counts and apply the same function). Nothing
else in the package decides which class is many-, medium- or few-shot.

Two rules exist (Kang et al., ICLR 2020; Yang et al., NeurIPS 2022):

- thresholds on the training count: many ``n_c > many_threshold``, medium ``few_threshold <= n_c <=
  many_threshold``, few ``n_c < few_threshold`` (:func:`shot_groups`);
- class-index ranges ``[0, medium_start)``, ``[medium_start, few_start)``, ``[few_start, K)``
  (:func:`shot_groups_from_boundaries`), as Yang's configs give them, over the classes ranked by
  descending training count (:func:`count_order`: Yang renumbers ImageNet-LT's classes that way before
  slicing; CIFAR-style ids that already descend keep their order).

Group ids are ``0`` (many), ``1`` (medium), ``2`` (few), in the order of :data:`SHOT_GROUP_NAMES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEFAULT_FEW_THRESHOLD",
    "DEFAULT_MANY_THRESHOLD",
    "SHOT_GROUP_NAMES",
    "check_shot_groups",
    "count_order",
    "resolve_shot_groups",
    "shot_groups",
    "shot_groups_from_boundaries",
]

#: names of shot groups 0, 1, 2
SHOT_GROUP_NAMES = ("many", "medium", "few")
#: Kang et al.'s thresholds (ImageNet-LT, Places-LT, iNaturalist, CIFAR-LT)
DEFAULT_MANY_THRESHOLD = 100
DEFAULT_FEW_THRESHOLD = 20


def shot_groups(
    class_counts: Sequence[int] | Tensor,
    many_threshold: int = DEFAULT_MANY_THRESHOLD,
    few_threshold: int = DEFAULT_FEW_THRESHOLD,
) -> torch.LongTensor:
    """Shot group of every class from its training count (Kang et al., ICLR 2020).

    0 = many (count > many_threshold), 1 = medium (few_threshold <= count <= many_threshold),
    2 = few (count < few_threshold).

    Args:
        class_counts: ``[K]`` training counts.
        many_threshold, few_threshold: the thresholds (``few_threshold <= many_threshold``).

    Returns:
        ``[K]`` int64 group ids.

    >>> shot_groups([500, 100, 20, 19]).tolist()
    [0, 1, 1, 2]
    """
    if few_threshold > many_threshold:
        raise ValueError(f"few_threshold ({few_threshold}) must be <= many_threshold ({many_threshold})")
    counts = torch.as_tensor(class_counts)
    if counts.ndim != 1:
        raise ValueError(f"class_counts must be one-dimensional [K], got shape {tuple(counts.shape)}")
    if (counts < 0).any():
        raise ValueError(f"class_counts must be non-negative, got {counts.tolist()}")
    groups = torch.ones(counts.shape, dtype=torch.long)
    groups[counts > many_threshold] = 0
    groups[counts < few_threshold] = 2
    return cast(torch.LongTensor, groups)


def count_order(class_counts: Sequence[int] | Tensor) -> torch.LongTensor:
    """Class ids ranked by descending training count: ``order[r]`` is the class of rank ``r``.

    Ids whose counts already never increase keep their order (the identity; CIFAR-LT, SVHN-LT,
    STL-10-LT, where Yang slices the raw ids). Otherwise the ranking is ``np.argsort(-counts)`` with
    numpy's default sort, ties included, as Yang's ``datasets/imagenet.py`` (``LT_Dataset``:
    ``sorted_classes = np.argsort(-np.array(cls_num_list_old))``) renumbers ImageNet-LT.

    Args:
        class_counts: ``[K]`` training counts.

    Returns:
        ``[K]`` int64 class ids, most frequent first.

    >>> count_order([5, 9, 1, 7]).tolist()
    [1, 3, 0, 2]
    >>> count_order([9, 5, 5, 1]).tolist()
    [0, 1, 2, 3]
    """
    counts = np.asarray(torch.as_tensor(class_counts).detach().cpu().numpy(), dtype=np.int64)
    if counts.ndim != 1:
        raise ValueError(f"class_counts must be one-dimensional [K], got shape {tuple(counts.shape)}")
    if counts.size < 2 or bool(np.all(counts[1:] <= counts[:-1])):
        order = np.arange(counts.size)
    else:
        order = np.argsort(-counts)  # numpy's default kind, as Yang: the tie order is numpy's
    return cast(torch.LongTensor, torch.from_numpy(np.ascontiguousarray(order, dtype=np.int64)))


def shot_groups_from_boundaries(
    num_classes: int,
    boundaries: Sequence[int],
    class_counts: Sequence[int] | Tensor | None = None,
) -> torch.LongTensor:
    """Shot groups as ranges of class rank ``[0, b0)``, ``[b0, b1)``, ``[b1, K)`` (Yang's ``head/med/tail_class_idx``).

    The ranks are those of :func:`count_order` (descending training count) when ``class_counts`` is
    given, else the class ids themselves.

    Args:
        num_classes: K.
        boundaries: ``[medium_start, few_start]`` with ``0 <= medium_start <= few_start <= K``
            (Yang's CIFAR-100-LT: ``[36, 71]``).
        class_counts: ``[K]`` training counts that rank the classes (None: rank = class id).

    Returns:
        ``[K]`` int64 group ids, indexed by class id.

    >>> shot_groups_from_boundaries(5, [1, 3]).tolist()
    [0, 1, 1, 2, 2]
    >>> shot_groups_from_boundaries(4, [1, 3], class_counts=[5, 9, 1, 7]).tolist()
    [1, 0, 2, 1]
    """
    b = list(boundaries)
    if (
        len(b) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in b)
        or not 0 <= b[0] <= b[1] <= num_classes
    ):
        raise ValueError(
            "shot_group_boundaries must be two class indices [medium_start, few_start] with "
            f"0 <= medium_start <= few_start <= K={num_classes} (Yang's CIFAR-100-LT: [36, 71]), "
            f"got {boundaries!r}"
        )
    rank = torch.arange(num_classes)
    by_rank = (rank >= b[0]).long() + (rank >= b[1]).long()
    if class_counts is None:
        return cast(torch.LongTensor, by_rank)
    order = count_order(class_counts)
    if order.shape != (num_classes,):
        raise ValueError(f"class_counts must have shape [{num_classes}], got {tuple(order.shape)}")
    groups = torch.empty(num_classes, dtype=torch.long)
    groups[order] = by_rank  # the class of rank r gets the group of rank r
    return cast(torch.LongTensor, groups)


def check_shot_groups(groups: Sequence[int] | Tensor, num_classes: int) -> torch.LongTensor:
    """Validate shot-group ids ``[K]`` (0 many, 1 medium, 2 few) and return them as a CPU LongTensor.

    Raises:
        ValueError: wrong shape, or ids outside 0..2.
    """
    g = torch.as_tensor(groups).detach().cpu()
    if g.ndim != 1 or g.shape[0] != num_classes:
        raise ValueError(f"shot_groups must have shape [{num_classes}], got {tuple(g.shape)}")
    if g.is_floating_point() or (g.numel() and (int(g.min()) < 0 or int(g.max()) >= len(SHOT_GROUP_NAMES))):
        raise ValueError(f"shot_groups must hold integer ids 0 (many), 1 (medium), 2 (few), got {g.tolist()}")
    return cast(torch.LongTensor, g.long())


def resolve_shot_groups(
    num_classes: int,
    class_counts: Sequence[int] | Tensor | None = None,
    shot_groups_: Sequence[int] | Tensor | None = None,
    many_threshold: int = DEFAULT_MANY_THRESHOLD,
    few_threshold: int = DEFAULT_FEW_THRESHOLD,
) -> torch.LongTensor | None:
    """Shot-group ids ``[K]`` from either explicit ids or the training counts (None when neither is given).

    The entry point of every Metric and module that accepts either form.

    Raises:
        ValueError: both are given, or either has the wrong shape.
    """
    if class_counts is not None and shot_groups_ is not None:
        raise ValueError("pass either class_counts or shot_groups, not both")
    if class_counts is not None:
        counts = torch.as_tensor(class_counts)
        if counts.shape != (num_classes,):
            raise ValueError(f"class_counts must have shape [{num_classes}], got {tuple(counts.shape)}")
        return shot_groups(counts, many_threshold, few_threshold)
    return None if shot_groups_ is None else check_shot_groups(shot_groups_, num_classes)
