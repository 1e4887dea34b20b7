"""Minority collapse per shot group (Fang et al., PNAS 2021; Thrampoulidis et al., NeurIPS 2022).

Cosines within and between shot groups, and the few/many norm ratio, of classifier rows ``W`` ``[K, d]``
and centred class means ``μ_c − μ_G`` ``[K, d]``: the public one-shot :func:`minority_collapse` and the
per-class-set geometry that :func:`~lt_lightning.metrics.functional.geometry._neural_collapse_compute`
adds to the neural-collapse results whenever shot groups are given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lt_lightning.metrics.functional._inputs import (
    _F64,
    _GLOBAL_MEANS,
    _check_classifier,
    _neural_collapse_check_inputs,
)
from lt_lightning.metrics.functional.nc_state import _neural_collapse_global_mean
from lt_lightning.spec import SHOT_GROUP_NAMES, check_shot_groups

__all__ = ["MINORITY_COLLAPSE_KEYS", "minority_collapse"]

#: Group pairs of the between-group cosines (names joined with "-").
_GROUP_PAIRS = ((0, 1), (0, 2), (1, 2))
#: Keys of the minority-collapse measurements (added to the NC results whenever shot groups are given).
MINORITY_COLLAPSE_KEYS = tuple(
    [f"mc_{m}cos/{g}" for m in ("w", "h") for g in SHOT_GROUP_NAMES]
    + [f"mc_{m}cos/{SHOT_GROUP_NAMES[a]}-{SHOT_GROUP_NAMES[b]}" for m in ("w", "h") for a, b in _GROUP_PAIRS]
    + ["mc_wnorm_ratio", "mc_hnorm_ratio"]
)


def _group_pair_cosines(rows: Tensor, groups: Tensor, prefix: str) -> dict[str, Tensor]:
    """Mean cosine between rows ``[K', d]`` within each shot group and between each pair of groups.

    Within group g: the mean over the ``n_g (n_g − 1)`` ordered pairs ``c ≠ c'`` (equal to the mean over
    unordered pairs); between g and h: the mean over the ``n_g n_h`` pairs. NaN where a group has too
    few classes (or a row is zero). Computed as ``M C Mᵀ`` with the one-hot group matrix ``M`` ``[G, K']``.
    """
    unit = rows / rows.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    member = (groups[None, :] == torch.arange(len(SHOT_GROUP_NAMES), device=rows.device)[:, None]).to(_F64)
    sums = member @ cos @ member.T  # [G, G] sums of cosines over group pairs
    n = member.sum(1)
    diag = member @ torch.diagonal(cos)  # the c = c' terms (1 for non-zero rows)
    out = {}
    for g, name in enumerate(SHOT_GROUP_NAMES):
        out[f"{prefix}/{name}"] = (sums[g, g] - diag[g]) / (n[g] * (n[g] - 1))  # 0/0 -> NaN
    for a, b in _GROUP_PAIRS:
        out[f"{prefix}/{SHOT_GROUP_NAMES[a]}-{SHOT_GROUP_NAMES[b]}"] = sums[a, b] / (n[a] * n[b])
    return out


def _norm_ratio(rows: Tensor, groups: Tensor) -> Tensor:
    """Mean row norm of the few-shot classes over that of the many-shot classes (NaN if either is empty)."""
    norms = rows.norm(dim=1)
    few, many = groups == len(SHOT_GROUP_NAMES) - 1, groups == 0
    mean_few = (norms * few).sum() / few.sum()
    mean_many = (norms * many).sum() / many.sum()
    return mean_few / mean_many


def _minority_collapse_geometry(
    weight: Tensor | None, centred_means: Tensor, groups: Tensor
) -> dict[str, Tensor]:
    """Minority-collapse measurements of one set of classes; see :func:`minority_collapse`.

    ``weight`` ``[K', d]`` (None: its keys are NaN), ``centred_means`` ``[K', d]`` (``μ_c − μ_G``),
    ``groups`` ``[K']`` shot-group ids, all on one device.
    """
    out = _group_pair_cosines(centred_means.to(_F64), groups, "mc_hcos")
    out["mc_hnorm_ratio"] = _norm_ratio(centred_means.to(_F64), groups)
    if weight is None:
        nan = torch.tensor(float("nan"), dtype=_F64, device=centred_means.device)
        out.update({k: nan for k in MINORITY_COLLAPSE_KEYS if k.startswith("mc_w")})
    else:
        out.update(_group_pair_cosines(weight.to(_F64), groups, "mc_wcos"))
        out["mc_wnorm_ratio"] = _norm_ratio(weight.to(_F64), groups)
    return out


def minority_collapse(
    weight: Tensor | None,
    features: Tensor,
    labels: Tensor,
    shot_groups: Sequence[int] | Tensor,
    *,
    global_mean: str = "sample",
) -> dict[str, float]:
    """Minority-collapse measurements per shot group (Fang et al. PNAS 2021; Thrampoulidis et al. NeurIPS 2022).

    Fang et al. ("Exploring deep neural networks via layer-peeled model: minority collapse in imbalanced
    training") show that under strong imbalance the minority classifiers ``w_c`` collapse towards one
    direction; Thrampoulidis et al. ("Imbalance trouble: revisiting neural-collapse geometry", SELI)
    describe the geometry by the angles and the norm ratio of minority vs majority classifiers and
    class means. Measured here, for classifier rows ``w_c`` (not centred, like ``nc2``) and centred class
    means ``μ_c − μ_G`` (``μ_G`` as in :func:`~lt_lightning.metrics.functional.neural_collapse`):

    - ``mc_wcos/{many,medium,few}``: mean ``cos(w_c, w_c')`` over pairs ``c ≠ c'`` within the group
      (→ 1 under minority collapse for ``few``; ``−1/(K−1)`` for a simplex ETF);
    - ``mc_wcos/{many-medium,many-few,medium-few}``: mean cosine over pairs across two groups;
    - ``mc_hcos/...``: the same for centred class means;
    - ``mc_wnorm_ratio``: mean ``‖w_c‖`` over few-shot classes / mean over many-shot classes (SELI's
      minority/majority norm ratio; 1 for an ETF), ``mc_hnorm_ratio`` the same for ``‖μ_c − μ_G‖``.

    A group (or pair) with too few classes gives NaN. Every class in use needs samples. The streaming,
    DDP-exact version is part of :class:`~lt_lightning.metrics.NeuralCollapse` (with shot groups).

    Args:
        weight: ``[K, d]`` classifier, or None (its keys are NaN).
        features: ``[N, d]``; labels: ``[N]`` in ``[0, K)``.
        shot_groups: ``[K]`` group ids (0 many, 1 medium, 2 few).
        global_mean: ``"sample"`` or ``"class"``.

    Returns:
        ``{key: float}`` for every key of ``MINORITY_COLLAPSE_KEYS``.

    Raises:
        ValueError: bad shapes or labels, ``shot_groups`` not ``[K]`` ids 0..2, a class without samples.

    >>> etf = torch.eye(4) - 1 / 4  # a simplex ETF: every pair of rows has cosine -1/(K-1)
    >>> labels = torch.arange(4).repeat(2)
    >>> res = minority_collapse(etf, etf[labels], labels, shot_groups=[0, 0, 2, 2])
    >>> round(res["mc_wcos/few"], 6), round(res["mc_hcos/many-few"], 6), round(res["mc_wnorm_ratio"], 6)
    (-0.333333, -0.333333, 1.0)
    """
    if global_mean not in _GLOBAL_MEANS:
        raise ValueError(f"global_mean must be one of {_GLOBAL_MEANS}, got {global_mean!r}")
    groups = torch.as_tensor(shot_groups)
    if isinstance(weight, Tensor) and weight.ndim == 2:
        k = weight.shape[0]
    else:
        k = groups.shape[0] if groups.ndim == 1 else -1
    groups = check_shot_groups(groups, k).to(features.device)
    _neural_collapse_check_inputs(features, labels, k, None, check_values=True)
    if weight is not None:
        _check_classifier(weight, None, k, features.shape[1])
    h = features.detach().to(_F64)
    labels = labels.to(features.device).long()
    counts = torch.zeros(k, dtype=_F64, device=h.device).index_add_(0, labels, torch.ones_like(h[:, 0]))
    if not bool((counts > 0).all()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {empty} have no samples")
    sums = torch.zeros(k, h.shape[1], dtype=_F64, device=h.device).index_add_(0, labels, h)
    hbar = sums / counts[:, None] - _neural_collapse_global_mean(counts, sums, global_mean)
    w = None if weight is None else weight.detach().to(h.device, _F64)
    out = _minority_collapse_geometry(w, hbar, groups)
    values = torch.stack([out[key] for key in MINORITY_COLLAPSE_KEYS]).tolist()
    return dict(zip(MINORITY_COLLAPSE_KEYS, values))
