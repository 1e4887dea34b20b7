"""Entry checks shared by the neural-collapse functions and Metrics (no host sync unless ``check_values``).

Conventions (DESIGN.md): features ``[N, d]``, labels ``[N]`` in ``[0, K)``, classifier ``weight``
class-major ``[K, d]`` like ``nn.Linear.weight``, ``bias`` ``[K]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__: list[str] = []

#: Accepted values of ``global_mean``: the sample-weighted ``μ_G`` (the papers') or the mean of class means.
_GLOBAL_MEANS = ("sample", "class")
_F64 = torch.float64


def _neural_collapse_check_inputs(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    feature_dim: int | None,
    check_values: bool,
    check_finite: bool = True,
) -> None:
    """Check ``features`` ``[N, d]`` (floating) and ``labels`` ``[N]`` (integer) where they enter.

    Shapes and dtypes are checked without a host sync. With ``check_values`` one host read checks that
    the labels lie in ``[0, num_classes)`` and (with ``check_finite``) that the features are finite.

    Raises:
        TypeError: ``features`` or ``labels`` is not a tensor.
        ValueError: wrong shape or dtype, ``d != feature_dim``, labels out of range, non-finite features.
    """
    if not isinstance(features, Tensor) or not isinstance(labels, Tensor):
        raise TypeError(
            f"features and labels must be tensors, got {type(features).__name__} and {type(labels).__name__}"
        )
    if features.ndim != 2 or not features.is_floating_point():
        raise ValueError(
            f"features must be a floating [N, d] tensor, got shape {tuple(features.shape)} and {features.dtype}"
        )
    if feature_dim is not None and features.shape[1] != feature_dim:
        raise ValueError(f"features have dimension {features.shape[1]}, expected feature_dim={feature_dim}")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be [N] with N = {features.shape[0]} (rows of features), got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if check_values and labels.numel() > 0:
        finite = torch.isfinite(features).all() if check_finite else torch.ones((), dtype=torch.bool)
        finite, lo, hi = torch.stack(
            [finite.long().to(labels.device), labels.min().long(), labels.max().long()]
        ).tolist()  # one host read for the three checks
        if not finite:
            raise ValueError("features contain NaN or inf; neural-collapse metrics need finite features")
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes - 1}], got values in [{lo}, {hi}]")


def _check_classifier(weight: Tensor, bias: Tensor | None, num_classes: int, feature_dim: int) -> None:
    """Check a linear classifier: ``weight`` ``[K, d]`` (class-major) and ``bias`` ``[K]`` or None.

    Raises:
        ValueError: a shape other than ``[num_classes, feature_dim]`` / ``[num_classes]``, or not a tensor.
    """
    if (
        not isinstance(weight, Tensor)
        or weight.ndim != 2
        or tuple(weight.shape) != (num_classes, feature_dim)
    ):
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight must be [K, d] = [{num_classes}, {feature_dim}], got {shape}")
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (num_classes,)):
        shape = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(f"bias must be [K] = [{num_classes}] or None, got {shape}")
