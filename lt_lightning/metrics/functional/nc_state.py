"""The streaming sufficient statistics of the neural-collapse metrics: init, batch update, exact merge.

Statistics (all float64): per-class counts ``[K]``, per-class sums ``[K, d]``, the pooled within-class
scatter ``Σ_c Σ_{i∈c} (h_i − μ_c)(h_i − μ_c)ᵀ`` per shot group ``[G, d, d]`` (``G = 1`` without groups)
and the per-class squared deviations ``Σ_{i∈c} ‖h_i − μ_c‖²`` ``[K]``; features are ``[N, d]``.

A batch is merged with the batch form of Welford's update, ``S ← S + Σ_{i∈batch} (h_i − μ_old,y_i)
(h_i − μ_new,y_i)ᵀ``, which equals Chan et al.'s pairwise merge ``S_a + S_b + n_a n_b/(n_a+n_b)
(μ_a − μ_b)(μ_a − μ_b)ᵀ`` per class but costs one ``[d, B] × [B, d]`` product and no ``K × d²`` term.
Every product involves deviations from class means, never raw second moments, so a large common
offset costs no precision (unlike ``Σ h hᵀ − N μ μᵀ``). Disjoint parts (ranks, metric copies) are
merged exactly with :func:`_neural_collapse_shift_correction`: ``S = Σ_p [S_p + Σ_c n_{c,p} (μ_{c,p} −
μ_c)(μ_{c,p} − μ_c)ᵀ]`` (Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for
computing sample variances", 1979).

Papyan's NC4 needs the final class means, so its mismatch counters come from a second pass
(:func:`_neural_collapse_nc4_update`) against means fixed beforehand.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lt_lightning.metrics.functional._inputs import _F64
from lt_lightning.spec import SHOT_GROUP_NAMES

__all__: list[str] = []


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
    if class_group is None:
        raise ValueError(f"class_group is required for a scatter with {num_groups} groups")
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
