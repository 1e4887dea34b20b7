"""Losses as pure functions: the dot-regression (DR) loss of Yang et al. NeurIPS 2022, mixup's cross-entropy
(Zhang et al. ICLR 2018; the mixing itself is :mod:`lt_lightning.data.augment`) and the long-tail losses
every comparison needs: logit adjustment (Menon et al. ICLR 2021) / balanced softmax (Ren et al. NeurIPS
2020), LDAM (Cao et al. NeurIPS 2019) and class-balanced weights (Cui et al. CVPR 2019).

Nothing here synchronises with the device: class counts use ``index_add_`` (``torch.bincount`` on CUDA
reads the maximum label back to the host). Under DDP the DR loss
all-reduces its class counts (a collective on device, still no host sync).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "class_balanced_weights",
    "dot_regression_loss",
    "ldam_loss",
    "ldam_margins",
    "log_prior",
    "logit_adjusted_cross_entropy",
    "mixup_cross_entropy",
]

_REDUCTIONS = ("mean", "sum", "none")
# Yang's code clamps the feature norm at this value before dividing by it.
_NORM_EPS = 1e-8


def _batch_class_counts(labels: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """``[K]`` counts of ``labels`` as ``dtype``, without a host sync (unlike CUDA ``bincount``)."""
    counts = torch.zeros(num_classes, dtype=dtype, device=labels.device)
    return counts.index_add_(0, labels, torch.ones(labels.shape, dtype=dtype, device=labels.device))


def _global_world_size() -> int:
    """World size of the default process group, 1 when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def dot_regression_loss(
    features: Tensor,
    etf: Tensor,
    labels: Tensor,
    *,
    class_balanced: bool = True,
    reg_lambda: float = 0.0,
    reduction: str = "mean",
    count_labels: Tensor | None = None,
    sync_counts: bool = True,
) -> Tensor:
    """Dot-regression loss of a fixed simplex-ETF classifier (Yang et al. NeurIPS 2022, as coded).

    For sample i with target row ``w = ETF'[y_i]``:
    ``l_i = 1/2 (h_i . w - ||w|| ||h_i||)^2 / ||h_i||`` with both norms detached (so the gradient is
    ``(h_i . w - ||w|| ||h_i||) w / ||h_i||``: it only pulls ``h_i`` along ``w``). With
    ``class_balanced`` the target rows are rescaled per batch: ``ETF'[c] = sqrt(gamma / n_c) ETF[c]``,
    ``n_c`` = count of class c in the batch, ``gamma = B / (number of distinct classes in the batch)``;
    otherwise ``ETF' = ETF``. ``reg_lambda > 0`` adds ``reg_lambda * ||h_i||`` per sample (not detached),
    i.e. ``+ reg_lambda * mean ||h||`` for the mean.

    Mixup: ``lam * loss(h, etf, y_a, count_labels=y) + (1 - lam) * loss(h, etf, y_b, count_labels=y)``
    takes the balancing counts from the un-mixed labels ``y`` (a permutation has the same counts).

    DDP: Yang trains with DataParallel, so ``n_c`` and ``gamma`` are those of the whole (global) batch.
    With ``sync_counts`` and an initialised process group of size R > 1, the K counts and the batch sizes
    are all-reduced (every rank must call this the same number of times per step, as a training step
    does), and ``"mean"`` returns ``R * sum_local / B_global``: the mean over ranks of the per-rank
    losses (what DDP's gradient averaging optimises) equals the loss of the concatenated global batch,
    also for unequal per-rank batches.

    Args:
        features: ``[N, d]`` features h (after the feature neck).
        etf: ``[K, d]`` fixed classifier (unscaled).
        labels: ``[N]`` integer targets.
        class_balanced: per-batch class-balanced rescaling of the targets (Yang's default).
        reg_lambda: weight of the feature-norm penalty, >= 0.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[N]`` per-sample losses).
        count_labels: ``[B]`` labels whose counts define ``n_c`` and ``gamma`` (default: ``labels``).
        sync_counts: all-reduce counts and batch size over the default process group when one is
            initialised (no effect otherwise).

    Returns:
        Scalar loss (or ``[N]`` for ``reduction="none"``).
    """
    if features.ndim != 2 or etf.ndim != 2 or features.shape[1] != etf.shape[1]:
        raise ValueError(
            f"expected features [N, d] and etf [K, d] with the same d, got {tuple(features.shape)} and "
            f"{tuple(etf.shape)}"
        )
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape [{features.shape[0]}], got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if reg_lambda < 0:
        raise ValueError(f"reg_lambda must be >= 0, got {reg_lambda}")

    world = _global_world_size() if sync_counts else 1
    global_n: Tensor | None = None
    if world > 1 and reduction == "mean":
        # the global number of samples, for a mean over the concatenated batch
        global_n = torch.tensor([float(labels.numel())], dtype=features.dtype, device=features.device)
        dist.all_reduce(global_n)

    target = etf[labels]  # [N, d]
    if class_balanced:
        cl = labels if count_labels is None else count_labels
        if cl.ndim != 1:
            raise ValueError(f"count_labels must be 1-D, got shape {tuple(cl.shape)}")
        # counts and the count-label total in one buffer: one collective per call
        counts_and_b = torch.zeros(etf.shape[0] + 1, dtype=target.dtype, device=target.device)
        counts_and_b[:-1] = _batch_class_counts(cl, etf.shape[0], target.dtype)
        counts_and_b[-1] = cl.numel()
        if world > 1:
            dist.all_reduce(counts_and_b)
        counts, total = counts_and_b[:-1], counts_and_b[-1]  # [K], scalar
        gamma = total / (counts > 0).sum().to(counts.dtype).clamp_min(1.0)
        # Absent classes get count 1 only to keep the (unused) entries finite.
        scale = (gamma / counts.clamp_min(1.0)).sqrt()
        target = target * scale[labels].unsqueeze(1)

    h_norm = features.norm(dim=1)
    h_len = h_norm.detach().clamp_min(_NORM_EPS)
    w_len = target.norm(dim=1).detach()
    dot = (features * target).sum(1)
    loss = 0.5 * (dot - w_len * h_len).pow(2) / h_len
    if reg_lambda > 0:
        loss = loss + reg_lambda * h_norm
    if reduction == "mean":
        if global_n is not None:
            return loss.sum() * world / global_n.squeeze(0)
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def mixup_cross_entropy(logits: Tensor, y_a: Tensor, y_b: Tensor, lam: float, **ce_kwargs) -> Tensor:
    """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)``; ``ce_kwargs`` go to ``F.cross_entropy``."""
    return lam * F.cross_entropy(logits, y_a, **ce_kwargs) + (1.0 - lam) * F.cross_entropy(
        logits, y_b, **ce_kwargs
    )


# --------------------------------------------------------------------------------------------------
# long-tail losses (class_counts: training counts per class, [K], class-major)
# --------------------------------------------------------------------------------------------------
def _counts_tensor(class_counts: Tensor | Sequence[int], like: Tensor, name: str = "class_counts") -> Tensor:
    """``class_counts`` as a ``[K]`` float tensor on ``like``'s device; all counts must be > 0.

    The dtype is ``like``'s, but at least float32: half precision cannot hold a total count above 65504
    (ImageNet-LT has 115,846 images), and under autocast the losses run in float32 anyway. A tensor is
    checked by shape only (checking its values would sync with the device); a sequence on the host.
    """
    k = like.shape[-1]
    dtype = torch.promote_types(like.dtype, torch.float32)
    if isinstance(class_counts, Tensor):
        counts = class_counts.to(device=like.device, dtype=dtype)
    else:
        values = list(class_counts)
        if any(not v > 0 for v in values):
            raise ValueError(f"{name} must all be > 0, got {values}")
        counts = torch.tensor(values, dtype=dtype, device=like.device)
    if counts.shape != (k,):
        raise ValueError(f"{name} must have shape [{k}] (one count per class), got {tuple(counts.shape)}")
    return counts


def _check_logits_targets(logits: Tensor, targets: Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, K], got shape {tuple(logits.shape)}")
    if targets.shape != (logits.shape[0],):
        raise ValueError(f"targets must have shape [{logits.shape[0]}], got {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor, got {targets.dtype}")


def log_prior(class_counts: Tensor | Sequence[int], like: Tensor) -> Tensor:
    """``[K]`` log class prior ``log(n_c / sum n)`` on ``like``'s device (``like``'s dtype, at least float32)."""
    counts = _counts_tensor(class_counts, like)
    return counts.log() - counts.sum().log()


def logit_adjusted_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    class_counts: Tensor | Sequence[int],
    *,
    tau: float = 1.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Logit-adjusted cross-entropy (Menon et al. ICLR 2021, eq. 10): ``CE(logits + tau * log prior, y)``.

    ``prior = n / sum(n)`` from the training counts. ``tau = 1`` is balanced softmax (Ren et al.
    NeurIPS 2020): ``softmax`` weighted by ``n_c``. ``tau = 0`` is plain cross-entropy. At test time the
    network's raw ``logits`` are used (the adjustment only enters the loss).

    Args:
        logits: ``[N, K]``.
        targets: ``[N]`` integer labels.
        class_counts: ``[K]`` training counts, all > 0.
        tau: adjustment strength (Menon's τ), >= 0.
        weight: optional ``[K]`` per-class weights, as in ``F.cross_entropy``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        Scalar loss (``[N]`` for ``reduction="none"``).
    """
    _check_logits_targets(logits, targets)
    if not tau >= 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    adjusted = logits + tau * log_prior(class_counts, logits)
    weight = None if weight is None else weight.to(adjusted.dtype)
    return F.cross_entropy(adjusted, targets, weight=weight, reduction=reduction)


def ldam_margins(class_counts: Tensor | Sequence[int], max_margin: float = 0.5, *, like: Tensor) -> Tensor:
    """LDAM margins ``[K]``: ``m_c = C / n_c^(1/4)`` with ``C`` such that ``max_c m_c = max_margin``."""
    if not max_margin >= 0:
        raise ValueError(f"max_margin must be >= 0, got {max_margin}")
    m = _counts_tensor(class_counts, like).pow(-0.25)
    return m * (max_margin / m.max())


def ldam_loss(
    logits: Tensor,
    targets: Tensor,
    class_counts: Tensor | Sequence[int],
    *,
    max_margin: float = 0.5,
    scale: float = 30.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Label-distribution-aware margin loss (Cao et al. NeurIPS 2019, eq. 13; kaidic/LDAM-DRW ``LDAMLoss``).

    ``CE(scale * (logits - m_y e_y), y)``: the target logit loses the margin ``m_y ∝ n_y^(-1/4)``
    (largest margin ``max_margin``, on the rarest class), then everything is scaled by ``scale``. The
    authors feed it cosine logits from a normalised linear classifier (:class:`NormedLinearHead`).
    DRW passes ``weight = class_balanced_weights(counts, 0.9999)`` from the switching epoch on.

    Args:
        logits: ``[N, K]`` (cosines in the authors' setting).
        targets: ``[N]`` integer labels.
        class_counts: ``[K]`` training counts, all > 0.
        max_margin: the largest margin (theirs: 0.5).
        scale: the logit scale ``s`` (theirs: 30), > 0.
        weight: optional ``[K]`` per-class weights, as in ``F.cross_entropy``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
    """
    _check_logits_targets(logits, targets)
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    margins = ldam_margins(class_counts, max_margin, like=logits)
    # a comparison, not F.one_hot: nothing here may read the labels back to the host
    is_target = torch.arange(logits.shape[1], device=logits.device)[None, :] == targets[:, None]
    shifted = logits - is_target.to(logits.dtype) * margins[targets].unsqueeze(1)
    weight = None if weight is None else weight.to(shifted.dtype)
    return F.cross_entropy(scale * shifted, targets, weight=weight, reduction=reduction)


def class_balanced_weights(
    class_counts: Tensor | Sequence[int], beta: float = 0.9999, *, like: Tensor | None = None
) -> Tensor:
    """Class-balanced loss weights (Cui et al. CVPR 2019): ``w_c ∝ (1 - β) / (1 - β^n_c)``, summing to K.

    ``(1 - β^n) / (1 - β)`` is the "effective number" of samples of a class; ``β = 0`` gives all ones
    (plain cross-entropy), ``β → 1`` inverse-frequency weights. Normalised to sum to ``K`` as in
    kaidic/LDAM-DRW's ``per_cls_weights``.

    Args:
        class_counts: ``[K]`` training counts, all > 0.
        beta: in ``[0, 1)``.
        like: a tensor whose float dtype and device the result takes (default: float32 on the CPU;
            float64 is used inside either way).

    Returns:
        ``[K]`` weights.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    ref = torch.empty(0, dtype=torch.float64, device=None if like is None else like.device)
    counts = _counts_tensor(class_counts, ref.new_empty(len(class_counts)), "class_counts")
    effective = (1.0 - torch.pow(torch.as_tensor(beta, dtype=torch.float64), counts)) / (1.0 - beta)
    w = 1.0 / effective
    w = w * (counts.numel() / w.sum())
    return w.to(torch.float32 if like is None else like.dtype)
