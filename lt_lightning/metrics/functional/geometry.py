"""The neural-collapse geometry of the streaming statistics: NC1–NC3, bias collapse, equinorms, CDNV.

Definitions follow Papyan, Han & Donoho (PNAS 2020) and Zhu et al. (NeurIPS 2021) as stated in
REFERENCE.md, "NC metrics"; conventions are class-major (``weight``, class means: ``[K, d]``), features
are ``[N, d]``. With ``μ_G`` the sample-weighted global mean, ``μ_c`` the class means and ``H̄`` the rows
``μ_c − μ_G`` ``[K, d]``:

- ``Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ``, ``Σ_B = (1/K) H̄ᵀ H̄``, ``nc1 = tr(Σ_W Σ_B⁺) / K``.
- ``nc2 = ‖W Wᵀ/‖W Wᵀ‖_F − C/√(K−1)‖_F`` (``W`` not centred), ``nc2_h``: the same with ``H̄``.
- ``nc3 = ‖W H̄ᵀ/‖W H̄ᵀ‖_F − C/√(K−1)‖_F`` (the product normalised as a whole).
- ``nc4``: fraction of samples whose nearest class mean (Euclidean) differs from the network's prediction.
- ``bias_collapse = ‖W μ_G + b‖₂``; ``equinorm_w`` / ``equinorm_h``: unbiased std / mean of ``‖w_c‖`` and
  ``‖μ_c − μ_G‖``; ``cdnv`` (Galanti et al., ICLR 2022): mean over class pairs of
  ``(σ_c² + σ_c'²) / (2 ‖μ_c − μ_c'‖²)`` with ``σ_c² = E_{i∈c} ‖h_i − μ_c‖²``.

NC1 never forms a ``d × d`` pseudo-inverse: with the thin SVD ``H̄ = U diag(s) Vᵀ``,
``Σ_B⁺ = K V diag(s⁻²) Vᵀ`` and ``nc1 = Σ_j v_jᵀ Σ_W v_j / s_j²``, an ``O(K² d + r d²)`` computation. The
rank cutoff is that of a pseudo-inverse of ``Σ_B``: singular values of ``Σ_B`` (``s_j² / K``) at or below
``rtol`` times the largest are dropped; the default ``rtol = d · eps`` is ``scipy.linalg.pinv``'s default
for the ``d × d`` ``Σ_B`` that Zhu et al.'s ``validate_NC.py`` inverts. (``H̄`` has rank ≤ K − 1 because
``Σ_c n_c (μ_c − μ_G) = 0``; that null direction comes out of the SVD at ``s² ≈ eps² s_max²`` and is
always cut.)

:func:`_neural_collapse_compute` turns the statistics into 0-d float64 tensors; the one-shot
:func:`~lt_lightning.metrics.functional.neural_collapse` and :class:`~lt_lightning.metrics.NeuralCollapse`
both call it.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from lt_lightning.metrics.functional._inputs import _F64
from lt_lightning.metrics.functional.minority_collapse import (
    MINORITY_COLLAPSE_KEYS,
    _minority_collapse_geometry,
)
from lt_lightning.metrics.functional.nc_state import _neural_collapse_global_mean
from lt_lightning.metrics.functional.seli import SELI_KEYS, _seli_geometry
from lt_lightning.spec import SHOT_GROUP_NAMES

__all__ = ["NC_KEYS", "UndefinedMetricWarning"]

#: Keys of every neural-collapse result (each also appears as ``f"{key}/{group}"`` with shot groups).
NC_KEYS = ("nc1", "nc2", "nc2_h", "nc3", "nc4", "bias_collapse", "equinorm_w", "equinorm_h", "cdnv")


class UndefinedMetricWarning(UserWarning):
    """A neural-collapse metric is NaN because it is undefined for the inputs (not a numerical failure)."""


def _etf_distance(gram: Tensor) -> Tensor:
    """``‖G/‖G‖_F − C/√(K−1)‖_F`` for a ``[K, K]`` matrix ``G`` (Zhu et al.'s ETF distance)."""
    k = gram.shape[0]
    c = torch.eye(k, dtype=gram.dtype, device=gram.device) - 1.0 / k
    return torch.linalg.matrix_norm(gram / torch.linalg.matrix_norm(gram) - c / (k - 1) ** 0.5)


def _equinorm(norms: Tensor) -> Tensor:
    return norms.std(unbiased=True) / norms.mean()


def _neural_collapse_geometry(
    counts: Tensor,
    sums: Tensor,
    scatter: Tensor,
    sq_dev: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    rtol: float | None,
    global_mean: str,
) -> dict[str, Tensor]:
    """NC1–NC3, bias collapse, equinorms and CDNV of one set of ``K' >= 2`` non-empty classes.

    All inputs are already restricted to the classes: counts ``[K']``, sums ``[K', d]``, the pooled
    (symmetric) within-class scatter ``[d, d]`` of exactly these classes, sq_dev ``[K']``, weight
    ``[K', d]`` and bias ``[K']`` (either may be None: dependent metrics are NaN).
    """
    k, d = sums.shape
    nan = torch.tensor(float("nan"), dtype=_F64, device=sums.device)
    means = sums / counts[:, None]
    mu_g = _neural_collapse_global_mean(counts, sums, global_mean)
    hbar = means - mu_g  # [K', d]
    sigma_w = scatter / counts.sum()
    # NC1 = tr(Σ_W Σ_B⁺)/K = Σ_j v_jᵀ Σ_W v_j / s_j² on the kept right singular vectors of H̄.
    _, s, vh = torch.linalg.svd(hbar, full_matrices=False)
    cut = (d * torch.finfo(_F64).eps if rtol is None else rtol) * s[0] ** 2
    keep = s**2 > cut
    quad = ((vh @ sigma_w) * vh).sum(1)
    nc1 = torch.where(keep, quad / torch.where(keep, s**2, torch.ones_like(s)), torch.zeros_like(s)).sum()
    nc1 = torch.where(s[0] > 0, nc1, nan)
    out = {"nc1": nc1, "nc2_h": _etf_distance(hbar @ hbar.T), "equinorm_h": _equinorm(hbar.norm(dim=1))}
    # CDNV: pairwise squared distances of centred means (centring keeps the digits an offset would eat).
    sq_norm = (hbar * hbar).sum(1)
    dist2 = (sq_norm[:, None] + sq_norm[None, :] - 2.0 * hbar @ hbar.T).clamp_min(0.0)
    var = sq_dev / counts
    iu = torch.triu_indices(k, k, offset=1, device=sums.device)
    pair = (var[:, None] + var[None, :]) / (2.0 * dist2)
    out["cdnv"] = pair[iu[0], iu[1]].mean()
    if weight is None:
        out.update(nc2=nan, nc3=nan, bias_collapse=nan, equinorm_w=nan)
    else:
        w = weight.to(_F64)
        b = torch.zeros(k, dtype=_F64, device=w.device) if bias is None else bias.to(_F64)
        out["nc2"] = _etf_distance(w @ w.T)
        out["nc3"] = _etf_distance(w @ hbar.T)
        out["bias_collapse"] = torch.linalg.vector_norm(w @ mu_g + b)
        out["equinorm_w"] = _equinorm(w.norm(dim=1))
    return out


def _neural_collapse_compute(
    counts: Tensor,
    sums: Tensor,
    scatter: Tensor,
    sq_dev: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    classes: Tensor | None = None,
    class_group: Tensor | None = None,
    nc4_mismatch: Tensor | None = None,
    nc4_total: Tensor | None = None,
    rtol: float | None = None,
    global_mean: str = "sample",
) -> dict[str, Tensor]:
    """All metrics from the statistics; overall and, when ``class_group`` is given, per shot group.

    Args:
        counts, sums, scatter, sq_dev: statistics ``[K]``, ``[K, d]``, ``[G, d, d]``, ``[K]`` (float64,
            see :mod:`~lt_lightning.metrics.functional.nc_state`).
        weight, bias: classifier ``[K, d]`` and ``[K]`` (or None: the classifier metrics are NaN).
        classes: ``[K]`` bool mask of the classes to use; None uses all and requires all non-empty.
        class_group: ``[K]`` shot-group ids (0 many, 1 medium, 2 few); adds ``"{key}/{group}"`` entries
            and the :data:`~lt_lightning.metrics.functional.MINORITY_COLLAPSE_KEYS`.
        nc4_mismatch, nc4_total: ``[4]`` counters from
            :func:`~lt_lightning.metrics.functional.nc_state._neural_collapse_nc4_update`; None makes
            ``nc4`` NaN.
        rtol: pseudo-inverse cutoff of ``Σ_B`` (default ``d · eps``); global_mean: ``"sample"`` or ``"class"``.

    Returns:
        ``{key: Tensor}``, 0-d float64 tensors on the device of ``counts``, for every key in ``NC_KEYS``
        (and per group, and the minority-collapse keys with groups); a group with fewer than two
        non-empty classes gives NaN. The host is read to select classes and once for the NaN warning.

    Raises:
        ValueError: non-finite statistics or classifier, or a class to be used has no samples (its
            index is named).

    Warns:
        UndefinedMetricWarning: an overall metric is NaN (e.g. coinciding class means); never a silent NaN.
    """
    stats = [sums, sq_dev] + ([] if weight is None else [weight]) + ([] if bias is None else [bias])
    if not bool(torch.stack([torch.isfinite(t).all() for t in stats]).all()):
        raise ValueError(
            "neural-collapse statistics are not finite: the features (or the classifier) contained NaN "
            "or inf; neural-collapse metrics need finite inputs"
        )
    num_classes = counts.shape[0]
    dev = counts.device
    present = counts > 0
    if classes is None:
        if not bool(present.all()):
            empty = torch.nonzero(~present).flatten().tolist()
            raise ValueError(
                f"classes {empty} have no samples; pass `classes` (the classes to use) to leave them out"
            )
        classes = torch.ones(num_classes, dtype=torch.bool, device=dev)
    else:
        classes = classes.to(dev)
        missing = torch.nonzero(classes & ~present).flatten().tolist()
        if missing:
            raise ValueError(f"classes {missing} were requested in `classes` but have no samples")
    # The batch updates are symmetric only in exact arithmetic.
    sym = 0.5 * (scatter + scatter.transpose(1, 2))
    nan = torch.full((), float("nan"), dtype=_F64, device=dev)
    results: dict[str, Tensor] = {}

    def subset(mask: Tensor, scat: Tensor) -> dict[str, Tensor]:
        idx = torch.nonzero(mask).flatten()
        if idx.numel() < 2:
            return dict.fromkeys(NC_KEYS, nan)
        w = None if weight is None else weight.detach().to(dev)[idx]
        b = None if (bias is None or weight is None) else bias.detach().to(dev)[idx]
        return _neural_collapse_geometry(counts[idx], sums[idx], scat, sq_dev[idx], w, b, rtol, global_mean)

    if int(classes.sum()) < 2:
        raise ValueError(f"neural-collapse metrics need at least 2 classes, got {int(classes.sum())}")
    results.update(subset(classes, sym.sum(0)))
    if nc4_mismatch is not None and nc4_total is not None:
        nc4 = nc4_mismatch.to(dev, _F64) / nc4_total.to(dev, _F64)  # 0/0 -> NaN for groups without samples
    else:
        nc4 = nan.expand(1 + len(SHOT_GROUP_NAMES))
    results["nc4"] = nc4[0]
    if class_group is not None:
        cg = class_group.to(dev)
        for g, name in enumerate(SHOT_GROUP_NAMES):
            # Scatter slot g holds only group g's samples; with a single slot there is no breakdown.
            group_res = (
                subset(classes & (cg == g), sym[g]) if sym.shape[0] > 1 else dict.fromkeys(NC_KEYS, nan)
            )
            group_res = {**group_res, "nc4": nc4[1 + g] if nc4.shape[0] > 1 + g else nan}
            results.update({f"{key}/{name}": val for key, val in group_res.items()})
        idx = torch.nonzero(classes).flatten()
        w = None if weight is None else weight.detach().to(dev, _F64)[idx]
        mu_g = _neural_collapse_global_mean(counts[idx], sums[idx], global_mean)
        hbar = sums[idx] / counts[idx][:, None] - mu_g
        results.update(_minority_collapse_geometry(w, hbar, cg[idx]))
    # SELI (Thrampoulidis et al. 2022): the label geometry of the counts measured, from the class means
    use = torch.nonzero(classes).flatten()
    w_use = None if weight is None else weight.detach().to(dev, _F64)[use]
    groups_use = None if class_group is None else class_group.to(dev)[use]
    results.update(_seli_geometry(counts[use], sums[use] / counts[use][:, None], w_use, groups_use))
    ordered = list(NC_KEYS)
    if class_group is not None:
        ordered += [f"{key}/{name}" for name in SHOT_GROUP_NAMES for key in NC_KEYS]
        ordered += list(MINORITY_COLLAPSE_KEYS)
    ordered += list(SELI_KEYS)
    if class_group is not None:
        ordered += [f"{key}/{name}" for name in SHOT_GROUP_NAMES for key in SELI_KEYS]
    # One [M] tensor; the results are its 0-d views (distinct tensors, one allocation).
    stacked = torch.stack([results[k].to(_F64).reshape(()) for k in ordered])
    # the global figures that can be undefined: NC and SELI (the per-group ones are documented NaN)
    checked = [*NC_KEYS, *SELI_KEYS]
    at = torch.tensor([ordered.index(k) for k in checked], device=stacked.device)
    is_nan = stacked[at].isnan().tolist()  # one host read, once per compute
    undefined = [k for k, bad in zip(checked, is_nan) if bad and (k != "nc4" or nc4_mismatch is not None)]
    if undefined:  # never a silent NaN: say which metrics are undefined and why they can be
        warnings.warn(
            f"neural-collapse metrics {undefined} are undefined (NaN) for these inputs: the class means "
            "coincide (no between-class spread, e.g. constant features) or the classifier has zero rows",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    return dict(zip(ordered, stacked.unbind()))
