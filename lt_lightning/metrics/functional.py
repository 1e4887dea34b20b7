"""Neural-collapse metrics NC1–NC4 as pure tensor functions, and the streaming statistics behind them.

Definitions follow Papyan, Han & Donoho (PNAS 2020) and Zhu et al. (NeurIPS 2021) as stated in
REFERENCE.md, "NC metrics"; conventions are class-major (``weight``, class means: ``[K, d]``), features
are ``[N, d]``. With ``μ_G`` the sample-weighted global mean, ``μ_c`` the class means and ``H̄`` the rows
``μ_c − μ_G``:

- ``Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ``, ``Σ_B = (1/K) H̄ᵀ H̄``, ``nc1 = tr(Σ_W Σ_B⁺) / K``.
- ``nc2 = ‖W Wᵀ/‖W Wᵀ‖_F − C/√(K−1)‖_F`` (``W`` not centred), ``nc2_h``: the same with ``H̄``.
- ``nc3 = ‖W H̄ᵀ/‖W H̄ᵀ‖_F − C/√(K−1)‖_F`` (the product normalised as a whole).
- ``nc4``: fraction of samples whose nearest class mean (Euclidean) differs from the network's prediction.
- ``bias_collapse = ‖W μ_G + b‖₂``; ``equinorm_w`` / ``equinorm_h``: unbiased std / mean of ``‖w_c‖`` and
  ``‖μ_c − μ_G‖``; ``cdnv`` (Galanti et al., ICLR 2022): mean over class pairs of
  ``(σ_c² + σ_c'²) / (2 ‖μ_c − μ_c'‖²)`` with ``σ_c² = E_{i∈c} ‖h_i − μ_c‖²``.

Streaming statistics (all float64): per-class counts ``[K]``, per-class sums ``[K, d]``, the pooled
within-class scatter ``Σ_c Σ_{i∈c} (h_i − μ_c)(h_i − μ_c)ᵀ`` per shot group ``[G, d, d]`` (``G = 1``
without groups) and the per-class squared deviations ``Σ_{i∈c} ‖h_i − μ_c‖²`` ``[K]``. A batch is merged
with the batch form of Welford's update, ``S ← S + Σ_{i∈batch} (h_i − μ_old,y_i)(h_i − μ_new,y_i)ᵀ``,
which equals Chan et al.'s pairwise merge ``S_a + S_b + n_a n_b/(n_a+n_b) (μ_a − μ_b)(μ_a − μ_b)ᵀ`` per
class but costs one ``[d, B] × [B, d]`` product and no ``K × d²`` term. Every product involves deviations
from class means, never raw second moments, so a large common offset costs no precision (unlike
``Σ h hᵀ − N μ μᵀ``). Disjoint parts (ranks, metric copies) are merged exactly with
:func:`_neural_collapse_shift_correction`: ``S = Σ_p [S_p + Σ_c n_{c,p} (μ_{c,p} − μ_c)(μ_{c,p} − μ_c)ᵀ]``.

NC1 never forms a ``d × d`` pseudo-inverse: with the thin SVD ``H̄ = U diag(s) Vᵀ``,
``Σ_B⁺ = K V diag(s⁻²) Vᵀ`` and ``nc1 = Σ_j v_jᵀ Σ_W v_j / s_j²``, an ``O(K² d + r d²)`` computation. The
rank cutoff is that of a pseudo-inverse of ``Σ_B``: singular values of ``Σ_B`` (``s_j² / K``) at or below
``rtol`` times the largest are dropped; the default ``rtol = d · eps`` is ``scipy.linalg.pinv``'s default
for the ``d × d`` ``Σ_B`` that Zhu et al.'s ``validate_NC.py`` inverts. (``H̄`` has rank ≤ K − 1 because
``Σ_c n_c (μ_c − μ_G) = 0``; that null direction comes out of the SVD at ``s² ≈ eps² s_max²`` and is
always cut.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from lt_lightning.data.profiles import shot_groups as shot_groups_from_counts

__all__ = [
    "MINORITY_COLLAPSE_KEYS",
    "NC_KEYS",
    "SHOT_GROUP_NAMES",
    "minority_collapse",
    "neural_collapse",
    "shot_accuracy",
]

#: Keys of every neural-collapse result (each also appears as ``f"{key}/{group}"`` with shot groups).
NC_KEYS = ("nc1", "nc2", "nc2_h", "nc3", "nc4", "bias_collapse", "equinorm_w", "equinorm_h", "cdnv")
#: Names of shot groups 0, 1, 2 (same order as ``lt_lightning.data.profiles.shot_groups``).
SHOT_GROUP_NAMES = ("many", "medium", "few")
_GLOBAL_MEANS = ("sample", "class")
#: Group pairs of the between-group cosines (names joined with "-").
_GROUP_PAIRS = ((0, 1), (0, 2), (1, 2))
#: Keys of the minority-collapse measurements (added to the NC results whenever shot groups are given).
MINORITY_COLLAPSE_KEYS = tuple(
    [f"mc_{m}cos/{g}" for m in ("w", "h") for g in SHOT_GROUP_NAMES]
    + [f"mc_{m}cos/{SHOT_GROUP_NAMES[a]}-{SHOT_GROUP_NAMES[b]}" for m in ("w", "h") for a, b in _GROUP_PAIRS]
    + ["mc_wnorm_ratio", "mc_hnorm_ratio"]
)
_F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# input checks (no host sync unless ``check_values``)
# --------------------------------------------------------------------------------------------------
def _neural_collapse_check_inputs(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    feature_dim: int | None,
    check_values: bool,
    check_finite: bool = True,
) -> None:
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


def _as_group_ids(groups: Sequence[int] | Tensor, num_classes: int) -> Tensor:
    """Validate shot-group ids ``[K]`` (0 many, 1 medium, 2 few) and return them as a CPU LongTensor."""
    g = torch.as_tensor(groups).detach().cpu()
    if g.ndim != 1 or g.shape[0] != num_classes:
        raise ValueError(f"shot_groups must have shape [{num_classes}], got {tuple(g.shape)}")
    if g.is_floating_point() or (g.numel() and (int(g.min()) < 0 or int(g.max()) >= len(SHOT_GROUP_NAMES))):
        raise ValueError(f"shot_groups must hold integer ids 0 (many), 1 (medium), 2 (few), got {g.tolist()}")
    return g.long()


def _resolve_class_groups(
    num_classes: int,
    class_counts: Sequence[int] | Tensor | None,
    shot_groups: Sequence[int] | Tensor | None,
    many_threshold: int,
    few_threshold: int,
) -> Tensor | None:
    """Shot-group ids ``[K]`` from either the training counts or explicit ids (None when neither)."""
    if class_counts is not None and shot_groups is not None:
        raise ValueError("pass either class_counts or shot_groups, not both")
    if class_counts is not None:
        counts = torch.as_tensor(class_counts)
        if counts.shape != (num_classes,):
            raise ValueError(f"class_counts must have shape [{num_classes}], got {tuple(counts.shape)}")
        shot_groups = shot_groups_from_counts(counts, many_threshold, few_threshold)
    return None if shot_groups is None else _as_group_ids(shot_groups, num_classes)


def _check_classifier(weight: Tensor, bias: Tensor | None, num_classes: int, feature_dim: int) -> None:
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


# --------------------------------------------------------------------------------------------------
# streaming sufficient statistics
# --------------------------------------------------------------------------------------------------
def _neural_collapse_init_state(
    num_classes: int, feature_dim: int, num_groups: int = 1, device: torch.device | str | None = None
) -> dict[str, Tensor]:
    """Zero statistics: counts ``[K]``, sums ``[K, d]``, scatter ``[G, d, d]``, sq_dev ``[K]`` (float64)."""
    return {
        "counts": torch.zeros(num_classes, dtype=_F64, device=device),
        "sums": torch.zeros(num_classes, feature_dim, dtype=_F64, device=device),
        "scatter": torch.zeros(num_groups, feature_dim, feature_dim, dtype=_F64, device=device),
        "sq_dev": torch.zeros(num_classes, dtype=_F64, device=device),
    }


def _neural_collapse_update(
    features: Tensor,
    labels: Tensor,
    counts: Tensor,
    sums: Tensor,
    scatter: Tensor,
    sq_dev: Tensor,
    class_group: Tensor | None = None,
    sample_weight: Tensor | None = None,
    product_dtype: torch.dtype = _F64,
) -> None:
    """Merge one batch into the statistics, in place (batch Welford update; no host sync).

    Args:
        features: ``[B, d]`` features (any float dtype; accumulated in float64).
        labels: ``[B]`` class indices in ``[0, K)``.
        counts, sums, scatter, sq_dev: running statistics ``[K]``, ``[K, d]``, ``[G, d, d]``, ``[K]``
            (float64), updated in place.
        class_group: ``[K]`` group id of every class on the statistics' device; required when ``G > 1``.
        sample_weight: optional ``[B]`` 0/1 mask; samples with weight 0 are left out (e.g. padding).
        product_dtype: dtype of the ``[d, B] @ [B, d]`` scatter product. float64 (default) is exact;
            float32 runs at float32-GEMM speed with ~1e-7 relative error per batch (the deviations it
            multiplies are already centred, so there is no cancellation), still summed in float64.
    """
    h = features.detach().to(dtype=_F64, device=sums.device)
    labels = labels.to(sums.device)
    ones = torch.ones(h.shape[0], dtype=_F64, device=h.device)
    if sample_weight is not None:
        ones = sample_weight.to(dtype=_F64, device=h.device)
        h = h * ones[:, None]  # dropped rows become 0 and carry no weight below
    n_new = counts.index_add(0, labels, ones)
    s_new = sums.index_add(0, labels, h)
    mean_new = s_new / n_new.clamp_min(1.0)[:, None]
    # A class first seen in this batch has no old mean; using the new one makes its term the plain
    # scatter about the batch mean, which is exact because its old scatter is zero.
    mean_old = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1.0)[:, None], mean_new)
    dev_old = h - mean_old[labels]
    dev_new = h - mean_new[labels]
    if sample_weight is not None:
        dev_old = dev_old * ones[:, None]
        dev_new = dev_new * ones[:, None]
    num_groups = scatter.shape[0]
    if product_dtype != _F64:
        a, c = dev_old.to(product_dtype), dev_new.to(product_dtype)
        if num_groups == 1:
            scatter[0].add_((a.T @ c).to(_F64))
        else:
            if class_group is None:
                raise ValueError(f"class_group is required for a scatter with {num_groups} groups")
            member = (
                class_group.to(h.device)[labels][None, :]
                == torch.arange(num_groups, device=h.device)[:, None]
            )
            masked = a[None, :, :] * member[:, :, None].to(product_dtype)
            scatter.add_(torch.bmm(masked.transpose(1, 2), c.expand(num_groups, -1, -1)).to(_F64))
    elif num_groups == 1:
        scatter[0].addmm_(dev_old.T, dev_new)
    else:
        if class_group is None:
            raise ValueError(f"class_group is required for a scatter with {num_groups} groups")
        member = (
            class_group.to(h.device)[labels][None, :] == torch.arange(num_groups, device=h.device)[:, None]
        )
        masked = dev_old[None, :, :] * member[:, :, None].to(_F64)  # [G, B, d]
        scatter.baddbmm_(masked.transpose(1, 2), dev_new.expand(num_groups, -1, -1))
    sq_dev.index_add_(0, labels, (dev_old * dev_new).sum(dim=1))
    counts.copy_(n_new)
    sums.copy_(s_new)


def _neural_collapse_shift_correction(
    part_counts: Tensor, part_sums: Tensor, global_means: Tensor, class_group: Tensor | None, num_groups: int
) -> tuple[Tensor, Tensor]:
    """Scatter of a part's class means about the merged class means (the exact merge term).

    Returns ``Σ_c n_{c,p} (μ_{c,p} − μ_c)(μ_{c,p} − μ_c)ᵀ`` per group ``[G, d, d]`` and
    ``n_{c,p} ‖μ_{c,p} − μ_c‖²`` ``[K]``; adding them to the part's scatter and sq_dev re-centres the
    part's statistics on the merged means, after which parts simply add.
    """
    part_means = part_sums / part_counts.clamp_min(1.0)[:, None]
    diff = (part_means - global_means) * part_counts.sqrt()[:, None]  # zero rows where n_{c,p} = 0
    sq = (diff * diff).sum(dim=1)
    if num_groups == 1:
        return (diff.T @ diff)[None], sq
    member = class_group.to(diff.device)[None, :] == torch.arange(num_groups, device=diff.device)[:, None]
    masked = diff[None] * member[:, :, None].to(diff.dtype)  # [G, K, d]
    return masked.transpose(1, 2) @ masked, sq


def _neural_collapse_merge(
    parts: Sequence[dict[str, Tensor]], class_group: Tensor | None
) -> dict[str, Tensor]:
    """Exactly merge statistics of disjoint sample sets (Chan et al.'s parallel algorithm, many parts)."""
    counts = torch.stack([p["counts"] for p in parts]).sum(0)
    sums = torch.stack([p["sums"] for p in parts]).sum(0)
    means = sums / counts.clamp_min(1.0)[:, None]
    num_groups = parts[0]["scatter"].shape[0]
    scatter = torch.zeros_like(parts[0]["scatter"])
    sq_dev = torch.zeros_like(parts[0]["sq_dev"])
    for p in parts:  # loop over parts (2 for torchmetrics' merge), not over samples or classes
        corr_s, corr_q = _neural_collapse_shift_correction(
            p["counts"], p["sums"], means, class_group, num_groups
        )
        scatter = scatter + p["scatter"] + corr_s
        sq_dev = sq_dev + p["sq_dev"] + corr_q
    return {"counts": counts, "sums": sums, "scatter": scatter, "sq_dev": sq_dev}


def _neural_collapse_global_mean(counts: Tensor, sums: Tensor, global_mean: str) -> Tensor:
    """``μ_G`` over the classes given: sample-weighted (default) or the plain mean of class means."""
    if global_mean == "sample":
        return sums.sum(0) / counts.sum()
    return (sums / counts[:, None]).mean(0)


def _neural_collapse_nc4_update(
    features: Tensor,
    labels: Tensor,
    preds: Tensor,
    means: Tensor,
    usable: Tensor,
    class_group: Tensor | None,
    sample_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Count nearest-class-mean vs network-prediction mismatches (Papyan's NC4) in one batch.

    Args:
        features: ``[B, d]``; labels: ``[B]``.
        preds: ``[B]`` predicted classes, or ``[B, K]`` logits (then predictions are restricted to the
            usable classes, and for a group's count to the group's classes).
        means: ``[K, d]`` float64 class means fixed beforehand (rows of unusable classes ignored).
        usable: ``[K]`` bool, the classes that take part.
        class_group: ``[K]`` shot-group ids (0, 1, 2) or None.
        sample_mask: optional ``[B]`` bool, False for samples to leave out.

    Returns:
        ``(mismatches, totals)``, each ``[4]`` float64: slot 0 for all usable classes, slot ``1 + g``
        for samples of shot group ``g`` compared within group ``g``'s classes (zero without groups).
    """
    dev = means.device
    h = features.detach().to(dtype=_F64, device=dev)
    labels = labels.to(dev)
    usable = usable.to(dev)
    # Centre on a point among the data so that the scores below lose no digits to a common offset.
    means = torch.where(usable[:, None], means, torch.zeros_like(means))
    centre = means.sum(0) / usable.sum().clamp_min(1)
    hc = h - centre
    mc = torch.where(usable[:, None], means - centre, torch.zeros_like(means))
    # argmin_c ||h - μ_c||² = argmax_c (2 h·μ_c - ||μ_c||²)
    score = 2.0 * hc @ mc.T - (mc * mc).sum(1)[None, :]
    neg_inf = torch.tensor(float("-inf"), dtype=_F64, device=dev)
    logits = preds.detach().to(dev) if preds.ndim == 2 else None
    if logits is not None:
        logits = logits.to(_F64)
    sample_ok = usable[labels]
    if sample_mask is not None:
        sample_ok = sample_ok & sample_mask.to(device=dev, dtype=torch.bool)

    def mismatches(allowed: Tensor) -> Tensor:
        ncm = torch.where(allowed, score, neg_inf).argmax(1)
        net = torch.where(allowed, logits, neg_inf).argmax(1) if logits is not None else preds.to(dev)
        return (ncm != net).to(_F64)

    mism = torch.zeros(1 + len(SHOT_GROUP_NAMES), dtype=_F64, device=dev)
    total = torch.zeros(1 + len(SHOT_GROUP_NAMES), dtype=_F64, device=dev)
    ok = sample_ok.to(_F64)
    mism[0] = (mismatches(usable[None, :].expand_as(score)) * ok).sum()
    total[0] = ok.sum()
    if class_group is not None:
        cg = class_group.to(dev)
        same = (cg[None, :] == cg[labels][:, None]) & usable[None, :]
        slot = cg[labels] + 1
        mism.index_add_(0, slot, mismatches(same) * ok)
        total.index_add_(0, slot, ok)
    return mism, total


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


class UndefinedMetricWarning(UserWarning):
    """A neural-collapse metric is NaN because it is undefined for the inputs (not a numerical failure)."""


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
) -> dict[str, float]:
    """All metrics from the statistics; overall and, when ``class_group`` is given, per shot group.

    Args:
        counts, sums, scatter, sq_dev: statistics ``[K]``, ``[K, d]``, ``[G, d, d]``, ``[K]``.
        weight, bias: classifier ``[K, d]`` and ``[K]`` (or None).
        classes: ``[K]`` bool mask of the classes to use; None uses all and requires all non-empty.
        class_group: ``[K]`` shot-group ids (0 many, 1 medium, 2 few); adds ``"{key}/{group}"`` entries.
        nc4_mismatch, nc4_total: ``[4]`` counters from :func:`_neural_collapse_nc4_update`; None
            makes ``nc4`` NaN.

    Returns:
        ``{key: float}`` for every key in ``NC_KEYS`` (and per group); a group with fewer than two
        non-empty classes gives NaN.

    Raises:
        ValueError: a class to be used has no samples (its index is named).
    """
    stats = [sums, sq_dev] + ([] if weight is None else [weight]) + ([] if bias is None else [bias])
    if not bool(torch.stack([torch.isfinite(t).all() for t in stats]).all()):
        raise ValueError(
            "neural-collapse statistics are not finite: the features (or the classifier) contained NaN "
            "or inf; neural-collapse metrics need finite inputs"
        )
    num_classes = counts.shape[0]
    present = counts > 0
    if classes is None:
        if not bool(present.all()):
            empty = torch.nonzero(~present).flatten().tolist()
            raise ValueError(
                f"classes {empty} have no samples; pass `classes` (the classes to use) to leave them out"
            )
        classes = torch.ones(num_classes, dtype=torch.bool, device=counts.device)
    else:
        classes = classes.to(counts.device)
        missing = torch.nonzero(classes & ~present).flatten().tolist()
        if missing:
            raise ValueError(f"classes {missing} were requested in `classes` but have no samples")
    # The batch updates are symmetric only in exact arithmetic.
    sym = 0.5 * (scatter + scatter.transpose(1, 2))
    nan = float("nan")
    results: dict[str, Tensor | float] = {}

    def subset(mask: Tensor, scat: Tensor) -> dict[str, Tensor | float]:
        idx = torch.nonzero(mask).flatten()
        if idx.numel() < 2:
            return dict.fromkeys(NC_KEYS, nan)
        w = None if weight is None else weight.detach().to(counts.device)[idx]
        b = None if (bias is None or weight is None) else bias.detach().to(counts.device)[idx]
        return _neural_collapse_geometry(counts[idx], sums[idx], scat, sq_dev[idx], w, b, rtol, global_mean)

    if int(classes.sum()) < 2:
        raise ValueError(f"neural-collapse metrics need at least 2 classes, got {int(classes.sum())}")
    results.update(subset(classes, sym.sum(0)))
    nc4 = [nan] * (1 + len(SHOT_GROUP_NAMES))
    if nc4_mismatch is not None and nc4_total is not None:
        nc4 = (nc4_mismatch / nc4_total).tolist()  # 0/0 -> NaN for groups without samples
    results["nc4"] = nc4[0]
    if class_group is not None:
        cg = class_group.to(counts.device)
        for g, name in enumerate(SHOT_GROUP_NAMES):
            # Scatter slot g holds only group g's samples; with a single slot there is no breakdown.
            group_res = (
                subset(classes & (cg == g), sym[g]) if sym.shape[0] > 1 else dict.fromkeys(NC_KEYS, nan)
            )
            group_res["nc4"] = nc4[1 + g] if len(nc4) > 1 + g else nan
            results.update({f"{key}/{name}": val for key, val in group_res.items()})
    if class_group is not None:
        idx = torch.nonzero(classes).flatten()
        w = None if weight is None else weight.detach().to(counts.device, _F64)[idx]
        mu_g = _neural_collapse_global_mean(counts[idx], sums[idx], global_mean)
        hbar = sums[idx] / counts[idx][:, None] - mu_g
        results.update(_minority_collapse_geometry(w, hbar, class_group.to(counts.device)[idx]))
    # One host transfer for all the scalars.
    keys = [k for k, v in results.items() if isinstance(v, Tensor)]
    if keys:
        values = torch.stack([results[k].to(_F64).reshape(()) for k in keys]).tolist()
        results.update(zip(keys, values))
    ordered = list(NC_KEYS)
    if class_group is not None:
        ordered += [f"{key}/{name}" for name in SHOT_GROUP_NAMES for key in NC_KEYS]
        ordered += list(MINORITY_COLLAPSE_KEYS)
    out = {k: float(results[k]) for k in ordered}
    undefined = [k for k in NC_KEYS if math.isnan(out[k]) and (k != "nc4" or nc4_mismatch is not None)]
    if undefined:  # never a silent NaN: say which metrics are undefined and why they can be
        warnings.warn(
            f"neural-collapse metrics {undefined} are undefined (NaN) for these inputs: the class means "
            "coincide (no between-class spread, e.g. constant features) or the classifier has zero rows",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    return out


# --------------------------------------------------------------------------------------------------
# one-shot fast path: float32 GEMMs on shifted data, corrected exactly in float64
# --------------------------------------------------------------------------------------------------
_EPS32 = torch.finfo(torch.float32).eps
_PRECISIONS = ("float32", "float64")
_SHIFT_SAMPLES = 64


def _neural_collapse_stats_f32(
    h: Tensor,
    labels: Tensor,
    num_classes: int,
    class_group: Tensor | None,
    num_groups: int,
    chunk: int = 65536,
) -> tuple[dict[str, Tensor], Tensor, Tensor | None]:
    """The float64 statistics of :func:`_neural_collapse_init_state` from float32 features, at GEMM speed.

    Pass 1 sums each class with a one-hot float32 GEMM; the float32 roundings ``m_c`` of those rough
    means are the shifts of pass 2, which forms ``δ_i = h_i − m_{y_i}`` (exact or float32-accurate
    however large a common offset is, since ``m_c`` lies among the class's samples), ``δᵀδ`` and
    ``D_c = Σ_{i∈c} δ_i`` as float32 GEMMs over chunks of ``chunk`` rows, added up in float64. The exact
    identity ``Σ_{i∈c} (h_i − μ_c)(h_i − μ_c)ᵀ = Σ_{i∈c} δ_i δ_iᵀ − D_c D_cᵀ / n_c`` then re-centres on
    the class means in float64; as ``m_c`` is within a few float32 roundings of ``μ_c`` that term
    is tiny and no digits cancel. Cost: about 1.4 float32 ``hᵀh`` GEMMs and
    three passes over ``h``.

    Args:
        h: ``[N, d]`` float32 features (only the samples to use); labels: ``[N]`` long in ``[0, K)``.
        class_group: ``[K]`` shot-group ids on ``h``'s device, required when ``num_groups > 1``.
        chunk: rows per float32 product (bounds the ``[chunk, d]`` temporaries).

    Returns:
        The statistics ``{"counts" [K], "sums" [K, d], "scatter" [G, d, d], "sq_dev" [K]}`` (all
        float64), the shifts ``m_c`` ``[K, d]`` (float32) and, when all rows fit one chunk without groups,
        ``δ`` ``[N, d]`` for reuse (else None).
    """
    n, d = h.shape
    dev = h.device
    state = _neural_collapse_init_state(num_classes, d, num_groups, dev)
    if n == 0:
        return state, h.new_zeros(num_classes, d), None
    counts = torch.bincount(labels, minlength=num_classes).to(_F64)
    d_sum, sq, scatter = state["sums"], state["sq_dev"], state["scatter"]
    classes = torch.arange(num_classes, device=dev)
    n_safe = counts.clamp_min(1.0)

    # Shift m_c: the float32 rounding of the mean of (up to) the first 64 samples of each class, within
    # about σ/8 of μ_c. Any shift is exact in the identity; a near one leaves nothing to cancel.
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0).long() - counts.long()
    rank_in_class = torch.arange(n, device=dev) - starts[labels[order]]
    sub = order[rank_in_class < _SHIFT_SAMPLES]
    sub_n = counts.clamp(1.0, float(_SHIFT_SAMPLES))
    shift = (
        h.new_zeros(num_classes, d, dtype=_F64).index_add_(0, labels[sub], h[sub].to(_F64)) / sub_n[:, None]
    )
    shift = shift.to(torch.float32)
    if num_groups == 1:
        parts: list[tuple[int, Tensor | None]] = [(0, None)]
    else:
        gid = class_group[labels]
        parts = [(g, torch.nonzero(gid == g).flatten()) for g in range(num_groups)]
    for g, rows in parts:
        total = n if rows is None else rows.numel()
        for start in range(0, total, chunk):  # one iteration per `chunk` rows, not per sample
            if rows is None:
                hb, yb = h[start : start + chunk], labels[start : start + chunk]
            else:
                r = rows[start : start + chunk]
                hb, yb = h[r], labels[r]
            # [δ | onehot(y)]ᵀ δ: one GEMM gives δᵀδ [d, d] and the class sums D [K, d]
            buf = hb.new_empty(hb.shape[0], d + num_classes)
            delta = buf[:, :d]
            torch.index_select(shift, 0, yb, out=delta)
            torch.sub(hb, delta, out=delta)
            torch.eq(yb[:, None], classes[None, :], out=buf[:, d:])
            prod = (buf.T @ delta).to(_F64)
            scatter[g].add_(prod[:d])
            d_sum.add_(prod[d:])
            sq.index_add_(0, yb, torch.linalg.vector_norm(delta, dim=1).to(_F64).square())
    u = d_sum / n_safe.sqrt()[:, None]  # D_c / √n_c (zero rows for empty classes)
    if num_groups == 1:
        scatter[0].sub_(u.T @ u)
    else:
        member = class_group[None, :] == torch.arange(num_groups, device=dev)[:, None]  # [G, K]
        masked = u[None] * member[:, :, None].to(_F64)
        scatter.sub_(masked.transpose(1, 2) @ masked)
    sq.sub_((u * u).sum(1))
    state["sums"] = shift.to(_F64) * counts[:, None] + d_sum
    state["counts"] = counts
    return state, shift, (delta if num_groups == 1 and n <= chunk else None)


def _shifted(h: Tensor, labels: Tensor, shift: Tensor) -> Tensor:
    """``h_i − shift[y_i]`` ``[N, d]`` with one temporary."""
    delta = shift.index_select(0, labels)
    return torch.sub(h, delta, out=delta)


def _checked_argmax(
    score: Tensor, bound: Tensor, rows_f64: Callable[[Tensor], Tensor], allowed: Tensor | None
) -> Tensor:
    """Row argmax of a float32 ``[N, K]`` score equal to the float64 one, with one host sync.

    ``bound`` ``[N]`` bounds the float32 error of every entry of a row; rows whose top-two gap is within
    twice that could rank differently in float64 and are recomputed by ``rows_f64(idx) -> [n, K]``.
    ``allowed`` (``[N, K]`` bool, or None for all) restricts the candidates.
    """
    neg_inf = float("-inf")
    s = score if allowed is None else score.masked_fill(~allowed, neg_inf)
    best, arg = s.max(1)
    second = s.scatter(1, arg[:, None], neg_inf).max(1).values
    close = torch.nonzero(best - second <= 2.0 * bound).flatten()
    if close.numel():
        s64 = rows_f64(close)
        if allowed is not None:
            s64 = s64.masked_fill(~allowed[close], neg_inf)
        arg[close] = s64.argmax(1)
    return arg


def _neural_collapse_nc4_f32(
    h: Tensor,
    labels: Tensor,
    preds: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    means: Tensor,
    usable: Tensor,
    class_group: Tensor | None,
    shift: Tensor,
    delta: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`_neural_collapse_nc4_update` from float32 features with one float32 GEMM, same counts.

    With ``c`` the centre of the class means and ``δ_i = h_i − s_{y_i}`` the shifted features of
    :func:`_neural_collapse_stats_f32` (passed as ``delta`` or recomputed), the nearest-class-mean
    scores ``2 (h_i − c)·m_k − ‖m_k‖²`` (``m_k = μ_k − c``) are ``2 δ_i·m_k + T[y_i, k]`` and the logits
    are ``δ_i·w_k + L[y_i, k]``, with the ``[K, K]`` tables ``T``, ``L`` in float64: one float32 product
    ``δ [2m; W]ᵀ`` of the small deviations, no pass over ``h`` with a large offset. Rows whose best two
    classes lie within the float32 error bound (``4 (d + 2) ε₃₂`` times the magnitudes) are re-ranked
    in float64 with the float64 path's formulas, so every argmax equals the float64 path's.
    """
    d = h.shape[1]
    k = means.shape[0]
    dev = h.device
    bound_scale = 4.0 * (d + 2) * _EPS32
    zero = torch.zeros_like(means)
    centre64 = torch.where(usable[:, None], means, zero).sum(0) / usable.sum().clamp_min(1)
    mc = torch.where(usable[:, None], means - centre64, zero)  # [K, d]
    s64 = shift.to(_F64)
    delta = _shifted(h, labels, shift) if delta is None else delta
    delta_norm = torch.linalg.vector_norm(delta, dim=1)
    shift_norm = (s64 - centre64).norm(dim=1).float()  # [K]: ‖h_i − c‖ ≤ ‖δ_i‖ + ‖s_{y_i} − c‖
    m_norm = mc.norm(dim=1).max().float()
    rhs = [2.0 * mc]
    tables = [2.0 * (s64 - centre64) @ mc.T - (mc * mc).sum(1)[None, :]]
    w64 = weight.to(dev, _F64)
    b64 = torch.zeros(k, dtype=_F64, device=dev) if bias is None else bias.to(dev, _F64)
    if preds is None:
        rhs.append(w64)
        tables.append(s64 @ w64.T + b64)
    table = torch.cat(tables, dim=1).float()  # [K, K or 2K]
    scores = torch.mm(delta, torch.cat(rhs).float().T).add_(table.index_select(0, labels))
    ncm_score, logits = scores[:, :k], (scores[:, k:] if preds is None else None)
    ncm_bound = bound_scale * (2.0 * (delta_norm + shift_norm[labels]) * m_norm + m_norm * m_norm)

    def ncm_f64(idx: Tensor) -> Tensor:
        hc64 = h[idx].to(_F64) - centre64
        mc64 = torch.where(usable[:, None], means - centre64, zero)
        return 2.0 * hc64 @ mc64.T - (mc64 * mc64).sum(1)[None, :]

    if logits is not None:
        w_norm = w64.norm(dim=1).max().float()
        logit_bound = bound_scale * (delta_norm * w_norm + tables[1].abs().amax(1).float()[labels])

        def logits_f64(idx: Tensor) -> Tensor:
            return h[idx].to(_F64) @ w64.T + b64

    elif preds.ndim == 2:
        logits64 = preds.detach().to(dev, _F64)

    def mismatches(allowed: Tensor | None) -> Tensor:
        ncm = _checked_argmax(ncm_score, ncm_bound, ncm_f64, allowed)
        if logits is not None:
            net = _checked_argmax(logits, logit_bound, logits_f64, allowed)
        elif preds.ndim == 2:
            net = (logits64 if allowed is None else logits64.masked_fill(~allowed, float("-inf"))).argmax(1)
        else:
            net = preds.to(dev)
        return (ncm != net).to(_F64)

    mism = torch.zeros(1 + len(SHOT_GROUP_NAMES), dtype=_F64, device=dev)
    total = torch.zeros(1 + len(SHOT_GROUP_NAMES), dtype=_F64, device=dev)
    ok = usable[labels].to(_F64)
    all_usable = bool(usable.all())
    mism[0] = (mismatches(None if all_usable else usable[None, :].expand(h.shape[0], -1)) * ok).sum()
    total[0] = ok.sum()
    if class_group is not None:
        cg = class_group.to(dev)
        same = (cg[None, :] == cg[labels][:, None]) & usable[None, :]
        slot = cg[labels] + 1
        mism.index_add_(0, slot, mismatches(same) * ok)
        total.index_add_(0, slot, ok)
    return mism, total


# --------------------------------------------------------------------------------------------------
# public one-shot function
# --------------------------------------------------------------------------------------------------
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
            ``lt_lightning.data.profiles.shot_groups``): adds ``"{key}/many"`` etc., each computed on
            the group's classes only (NaN for a group with fewer than two classes).
        rtol: relative cutoff on the eigenvalues of ``Σ_B`` for its pseudo-inverse (default
            ``d · eps``, scipy's default for the ``d × d`` matrix).
        global_mean: ``"sample"`` (default, the papers' sample-weighted ``μ_G``) or ``"class"`` (the
            unweighted mean of class means, an option under class imbalance).
        precision: ``"float32"`` (default for float32/float16/bfloat16 features): the ``N``-sized
            products run as float32 GEMMs on per-class shifted data and are corrected exactly in
            float64 (see :func:`_neural_collapse_stats_f32`); the results agree with ``"float64"`` to
            about 1e-7 relative, at about the cost of one float32 ``featuresᵀ features``, and ``nc4``
            counts are identical (near-ties are re-ranked in float64). ``"float64"`` (default for
            float64 features): every product in float64. The ``K``-sized geometry (SVD, ETF
            distances) is float64 either way.

    Returns:
        ``{"nc1", "nc2", "nc2_h", "nc3", "nc4", "bias_collapse", "equinorm_w", "equinorm_h", "cdnv"}``
        as floats (plus per-group keys).

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
    group_ids = None if shot_groups is None else _as_group_ids(shot_groups, k).to(device)
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
        _neural_collapse_update(features, labels, **state, class_group=group_ids, sample_weight=keep)
        means = state["sums"] / state["counts"].clamp_min(1.0)[:, None]
        mism, total = _neural_collapse_nc4_update(
            features, labels, predictions.to(device), means, use & (state["counts"] > 0), group_ids
        )
    return _neural_collapse_compute(
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
    means ``μ_c − μ_G`` (``μ_G`` as in :func:`neural_collapse`):

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
    """
    if global_mean not in _GLOBAL_MEANS:
        raise ValueError(f"global_mean must be one of {_GLOBAL_MEANS}, got {global_mean!r}")
    groups = torch.as_tensor(shot_groups)
    if isinstance(weight, Tensor) and weight.ndim == 2:
        k = weight.shape[0]
    else:
        k = groups.shape[0] if groups.ndim == 1 else -1
    groups = _as_group_ids(groups, k).to(features.device)
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


# The functional form of ShotAccuracy lives with the metric (it shares its update/compute); re-exported
# here so that ``functional`` holds every one-shot metric, as in torchmetrics.
from lt_lightning.metrics.shot_accuracy import shot_accuracy  # noqa: E402
