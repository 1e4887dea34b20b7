"""The public one-shot :func:`neural_collapse`: NC1–NC4 of features ``[N, d]`` and a classifier ``[K, d]``.

Definitions: :mod:`~lt_lightning.metrics.functional.geometry` (Papyan, Han & Donoho, PNAS 2020; Zhu et
al., NeurIPS 2021). The statistics come from :mod:`~lt_lightning.metrics.functional.nc_state` (float64)
or :mod:`~lt_lightning.metrics.functional.nc_float32` (float32 GEMMs, corrected in float64); the
streaming, DDP-exact form is :class:`~lt_lightning.metrics.NeuralCollapse`.
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
from lt_lightning.metrics.functional.geometry import _neural_collapse_compute
from lt_lightning.metrics.functional.nc_float32 import _neural_collapse_nc4_f32, _neural_collapse_stats_f32
from lt_lightning.metrics.functional.nc_state import (
    _neural_collapse_init_state,
    _neural_collapse_nc4_update,
    _neural_collapse_update,
)
from lt_lightning.spec import SHOT_GROUP_NAMES, check_shot_groups

__all__ = ["neural_collapse"]

#: Accepted values of ``precision``.
_PRECISIONS = ("float32", "float64")


def neural_collapse(
    features: Tensor,
    labels: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    num_classes: int | None = None,
    *,
    classes: Sequence[int] | Tensor | None = None,
    predictions: Tensor | None = None,
    shot_groups: Sequence[int] | Tensor | None = None,
    rtol: float | None = None,
    global_mean: str = "sample",
    precision: str | None = None,
) -> dict[str, float]:
    """Neural-collapse metrics of features and a linear classifier (Papyan et al. 2020; Zhu et al. 2021).

    Args:
        features: ``[N, d]`` features (the classifier's input, model in eval mode).
        labels: ``[N]`` class indices in ``[0, K)``.
        weight: ``[K, d]`` classifier weight (class-major, like ``nn.Linear.weight``).
        bias: ``[K]`` classifier bias or None.
        num_classes: ``K``; defaults to ``weight.shape[0]`` and must match it.
        classes: the classes to use (indices); samples of other classes are left out, and every metric
            is computed on this sub-problem (``K' = len(classes)``). Default: all ``K`` classes, each of
            which must have samples.
        predictions: the network's predictions for ``nc4``: ``[N]`` class indices, or ``[N, K]`` logits
            (restricted to the classes in use). Default: ``argmax(features @ weight.T + bias)``.
        shot_groups: ``[K]`` group ids (0 many, 1 medium, 2 few, e.g. from
            :func:`lt_lightning.spec.shot_groups`): adds ``"{key}/many"`` etc., each computed on
            the group's classes only (NaN for a group with fewer than two classes).
        rtol: relative cutoff on the eigenvalues of ``Σ_B`` for its pseudo-inverse (default
            ``d · eps``, scipy's default for the ``d × d`` matrix).
        global_mean: ``"sample"`` (default, the papers' sample-weighted ``μ_G``) or ``"class"`` (the
            unweighted mean of class means, an option under class imbalance).
        precision: ``"float32"`` (default for float32/float16/bfloat16 features): the ``N``-sized
            products run as float32 GEMMs on per-class shifted data and are corrected exactly in
            float64 (see
            :func:`~lt_lightning.metrics.functional.nc_float32._neural_collapse_stats_f32`); the results agree with ``"float64"`` to
            about 1e-7 relative, at about the cost of one float32 ``featuresᵀ features``, and ``nc4``
            counts are identical (near-ties are re-ranked in float64). ``"float64"`` (default for
            float64 features): every product in float64. The ``K``-sized geometry (SVD, ETF
            distances) is float64 either way.

    Returns:
        ``{"nc1", "nc2", "nc2_h", "nc3", "nc4", "bias_collapse", "equinorm_w", "equinorm_h", "cdnv"}``
        as floats, and the SELI distances ``"seli_w"``, ``"seli_h"``, ``"seli_wh"`` (Thrampoulidis et al.
        2022, :mod:`~lt_lightning.metrics.functional.seli`; the label geometry of these samples' counts:
        measure on the training set); with ``shot_groups`` also ``"{key}/{group}"`` for every key and
        group and the :data:`~lt_lightning.metrics.functional.MINORITY_COLLAPSE_KEYS`.

    Warns:
        UndefinedMetricWarning: an overall metric is NaN (e.g. all class means coincide).

    Raises:
        ValueError: bad shapes or labels, fewer than two classes, or a class in use without samples.

    >>> g = torch.Generator().manual_seed(0)
    >>> means = torch.eye(3) - 1 / 3                      # a simplex ETF in R^3
    >>> labels = torch.arange(3).repeat(4)
    >>> res = neural_collapse(means[labels], labels, weight=means)
    >>> [round(res[k], 6) for k in ("nc1", "nc2", "nc3", "nc4")]
    [0.0, 0.0, 0.0, 0.0]
    """
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"weight must be a [K, d] tensor, got {getattr(weight, 'shape', type(weight))}")
    k = weight.shape[0]
    if num_classes is not None and num_classes != k:
        raise ValueError(f"num_classes={num_classes} does not match weight.shape[0]={k}")
    if global_mean not in _GLOBAL_MEANS:
        raise ValueError(f"global_mean must be one of {_GLOBAL_MEANS}, got {global_mean!r}")
    if precision is not None and precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS} or None, got {precision!r}")
    if precision is None:
        precision = "float64" if features.dtype == _F64 else "float32"
    # The float32 path checks finiteness on its [K, d] statistics instead of on the [N, d] features
    # (NaN/inf in any feature reaches the class sums): a full isfinite pass costs half a GEMM.
    _neural_collapse_check_inputs(
        features, labels, k, None, check_values=True, check_finite=precision != "float32"
    )
    _check_classifier(weight, bias, k, features.shape[1])
    device = features.device
    labels = labels.to(device).long()
    use = torch.ones(k, dtype=torch.bool, device=device)
    if classes is not None:
        cls = torch.as_tensor(classes, device=device)
        if cls.ndim != 1 or cls.is_floating_point() or cls.numel() < 2:
            raise ValueError(f"classes must be a 1-d list of at least 2 class indices, got {classes!r}")
        if int(cls.min()) < 0 or int(cls.max()) >= k or cls.unique().numel() != cls.numel():
            raise ValueError(f"classes must be distinct indices in [0, {k - 1}], got {cls.tolist()}")
        use = torch.zeros(k, dtype=torch.bool, device=device)
        use[cls.long()] = True
    group_ids = None if shot_groups is None else check_shot_groups(shot_groups, k).to(device)
    num_groups = 1 if group_ids is None else len(SHOT_GROUP_NAMES)
    keep = use[labels]
    if predictions is not None and (
        not isinstance(predictions, Tensor) or predictions.shape not in (labels.shape, (labels.shape[0], k))
    ):
        raise ValueError(
            f"predictions must be [N] class indices or [N, K] logits with N={labels.shape[0]}, K={k}, "
            f"got {getattr(predictions, 'shape', type(predictions))}"
        )
    if precision == "float32":
        h = features.detach().to(torch.float32)
        y, preds = labels, predictions
        if classes is not None:  # leave the other classes' samples out up front
            rows = torch.nonzero(keep).flatten()
            h, y = h[rows], labels[rows]
            preds = None if predictions is None else predictions.to(device)[rows]
        state, shift, delta = _neural_collapse_stats_f32(h, y, k, group_ids, num_groups)
        if not bool(torch.isfinite(state["sums"]).all() & torch.isfinite(state["sq_dev"]).all()):
            if not bool(torch.isfinite(h).all()):
                raise ValueError("features contain NaN or inf; neural-collapse metrics need finite features")
            raise ValueError(
                "the float32 neural-collapse statistics overflowed (features too large for float32 "
                "products); pass precision='float64'"
            )
        means = state["sums"] / state["counts"].clamp_min(1.0)[:, None]
        mism, total = _neural_collapse_nc4_f32(
            h,
            y,
            preds,
            weight.detach(),
            None if bias is None else bias.detach(),
            means,
            use & (state["counts"] > 0),
            group_ids,
            shift,
            delta,
        )
    else:
        if predictions is None:
            predictions = features.to(_F64) @ weight.to(device, _F64).T
            if bias is not None:
                predictions = predictions + bias.to(device, _F64)
        state = _neural_collapse_init_state(k, features.shape[1], num_groups, device)
        _neural_collapse_update(
            features,
            labels,
            state["counts"],
            state["sums"],
            state["scatter"],
            state["sq_dev"],
            class_group=group_ids,
            sample_weight=keep,
        )
        means = state["sums"] / state["counts"].clamp_min(1.0)[:, None]
        mism, total = _neural_collapse_nc4_update(
            features, labels, predictions.to(device), means, use & (state["counts"] > 0), group_ids
        )
    values = _neural_collapse_compute(
        **state,
        weight=weight,
        bias=bias,
        classes=None if classes is None else use,
        class_group=group_ids,
        nc4_mismatch=mism,
        nc4_total=total,
        rtol=rtol,
        global_mean=global_mean,
    )
    # One host transfer for all the scalars (the public signature returns floats).
    return dict(zip(values, torch.stack(list(values.values())).tolist()))
