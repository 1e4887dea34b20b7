"""Moving average of batch-centred class means, the input of the implicit ETF (Markou et al., 2024).

Per training batch (class-major ``[K, d]``):

- ``mu_G`` = sample-weighted batch mean of the features ``[d]``;
- for the classes present, ``m_c`` = batch class mean minus ``mu_G``;
- ``F_c <- alpha_t m_c + (1 - alpha_t) F_c`` for present classes, with ``alpha_t = max(2/(t+1), floor)`` at
  update ``t = 1, 2, ...`` (floor ``1e-4``) or a constant momentum; a class missing from the batch keeps
  ``F_c`` if it has been present in some earlier batch, else ``F_c = mu_G`` (the uncentred batch mean;
  it is refilled every batch until the class first appears, and blended like any other value then);
- output ``Y = F / ||F||_F``.

Under DDP the class sums and counts are all-reduced (one collective) before the update, so every rank
holds the same ``F`` and solves the same ETF problem.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "ClassMeanTracker",
    "TrackedClassMeans",
    "batch_class_sums",
    "centred_class_means",
    "class_mean_momentum",
    "update_class_mean_average",
]


def batch_class_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class feature sums ``[K, d]`` and counts ``[K]`` (same dtype as ``features``) of one batch.

    ``index_add_`` on the class axis: no Python loop, no host sync. Gradients flow to ``features``.
    """
    sums = features.new_zeros(num_classes, features.shape[1]).index_add(0, labels, features)
    counts = features.new_zeros(num_classes).index_add(0, labels, features.new_ones(labels.shape[0]))
    return sums, counts


def centred_class_means(sums: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Batch-centred class means from class sums ``[K, d]`` and counts ``[K]``.

    Returns:
        ``(m [K, d], mu_G [d], present [K] bool)``: ``m_c = sums_c / counts_c - mu_G`` for present
        classes (rows of absent classes are ``-mu_G`` and must be masked by ``present``), with
        ``mu_G = sum_c sums_c / sum_c counts_c`` the sample-weighted batch mean.
    """
    global_mean = sums.sum(dim=0) / counts.sum().clamp_min(1)
    means = sums / counts.clamp_min(1).unsqueeze(1) - global_mean
    return means, global_mean, counts > 0


def class_mean_momentum(step: Tensor, floor: float = 1e-4) -> Tensor:
    """``alpha_t = max(2 / (t + 1), floor)`` for update ``t = 1, 2, ...`` (a tensor; no host sync)."""
    return (2.0 / (step + 1)).clamp_min(floor)


def update_class_mean_average(
    previous: Tensor,
    seen: Tensor,
    means: Tensor,
    global_mean: Tensor,
    present: Tensor,
    alpha: Tensor | float,
) -> tuple[Tensor, Tensor]:
    """One moving-average step of the class means (the rules in the module docstring).

    Args:
        previous: ``F`` ``[K, d]`` before the step (detached).
        seen: ``[K]`` bool, classes present in some earlier batch.
        means: batch-centred class means ``m`` ``[K, d]`` (rows of absent classes are ignored).
        global_mean: uncentred batch mean ``mu_G`` ``[d]``.
        present: ``[K]`` bool, classes present in this batch.
        alpha: momentum ``alpha_t`` (0-dim tensor or float).

    Returns:
        ``(F_new [K, d], seen_new [K])``; ``F_new`` carries the gradient of ``means``/``global_mean``.
    """
    blended = alpha * means + (1 - alpha) * previous
    missing = torch.where(seen.unsqueeze(1), previous, global_mean.expand_as(previous))
    return torch.where(present.unsqueeze(1), blended, missing), seen | present


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the backward all-reduces the gradient too.

    Every rank's loss depends on the global sum; with DDP averaging parameter gradients over ranks,
    summing the incoming gradients here gives exactly the gradient of the rank-averaged loss.
    """

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class TrackedClassMeans(NamedTuple):
    """Output of :class:`ClassMeanTracker`.

    Attributes:
        normalized: ``Y = F / ||F||_F`` ``[K, d]``, carrying gradient to this batch's features.
        global_mean: this batch's (rank-reduced) mean feature ``mu_G`` ``[d]``, with gradient.
    """

    normalized: Tensor
    global_mean: Tensor


class ClassMeanTracker(nn.Module):
    """Moving average of batch-centred class means (Markou et al., 2024), state in buffers.

    Gradient: the returned ``Y = (alpha m + (1 - alpha) F_prev) / ||.||_F`` keeps the graph through
    ``m`` and ``mu_G`` (this batch's features), so a loss on the ETF fitted to ``Y`` reaches the
    backbone, as in the authors' method; ``F_prev`` and the stored buffer are detached, so the graph
    never spans two steps.

    Buffers (restored by checkpoints): ``average`` ``F`` ``[K, d]``, ``step`` (number of updates),
    ``seen`` ``[K]`` bool, ``global_mean`` ``[d]`` (last batch's ``mu_G``, detached).

    Args:
        num_classes: ``K``.
        dim: feature dimension ``d``.
        momentum: ``None`` for ``alpha_t = max(2/(t+1), min_momentum)``, or a constant ``alpha`` in
            ``(0, 1]``.
        min_momentum: the floor of ``alpha_t`` (default ``1e-4``).
        dtype: dtype of the buffers (moved by ``module.to``); updates compute in the wider of this and
            the features' dtype, so bfloat16/float16 features under mixed precision are averaged in
            float32 (a half-precision running mean would stall: its updates fall below one ulp).
        process_group: the group to reduce over under DDP (default: the world).

    Example:
        >>> tracker = ClassMeanTracker(3, 4)
        >>> out = tracker(torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
        >>> out.normalized.shape, int(tracker.step)
        (torch.Size([3, 4]), 1)
    """

    average: Tensor
    step: Tensor
    seen: Tensor
    global_mean: Tensor

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        momentum: float | None = None,
        min_momentum: float = 1e-4,
        dtype: torch.dtype = torch.float32,
        process_group=None,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if momentum is not None and not 0 < momentum <= 1:
            raise ValueError(f"momentum must be None (alpha_t = 2/(t+1)) or in (0, 1], got {momentum!r}")
        if not 0 <= min_momentum <= 1:
            raise ValueError(f"min_momentum must be in [0, 1], got {min_momentum!r}")
        self.num_classes = num_classes
        self.dim = dim
        self.momentum = momentum
        self.min_momentum = min_momentum
        self.process_group = process_group
        self.register_buffer("average", torch.zeros(num_classes, dim, dtype=dtype))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("global_mean", torch.zeros(dim, dtype=dtype))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum}"

    def _reduce(self, sums: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        if not (dist.is_available() and dist.is_initialized()):
            return sums, counts
        if dist.get_world_size(self.process_group) == 1:
            return sums, counts
        packed = _AllReduceSum.apply(torch.cat([sums, counts.unsqueeze(1)], dim=1), self.process_group)
        return packed[:, :-1], packed[:, -1]

    def forward(self, features: Tensor, labels: Tensor) -> TrackedClassMeans:
        """Update with one training batch and return the normalised class means.

        Args:
            features: ``[B, d]``, ``B >= 1`` (this rank's part of the batch under DDP).
            labels: ``[B]`` integer class indices in ``[0, K)``.

        Returns:
            :class:`TrackedClassMeans` ``(normalized [K, d], global_mean [d])``.
        """
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be [B, {self.dim}], got shape {tuple(features.shape)}")
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"labels must be [B] with B = {features.shape[0]} matching features, got {tuple(labels.shape)}"
            )
        if labels.dtype in (torch.bool,) or labels.is_floating_point() or labels.is_complex():
            raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        if features.shape[0] == 0:
            raise ValueError("features is an empty batch (B = 0); the class means need at least one sample")
        dtype = torch.promote_types(features.dtype, self.average.dtype)
        sums, counts = batch_class_sums(features.to(dtype), labels, self.num_classes)
        sums, counts = self._reduce(sums, counts)
        means, global_mean, present = centred_class_means(sums, counts)
        step = self.step + 1
        alpha = (
            class_mean_momentum(step, self.min_momentum).to(dtype) if self.momentum is None else self.momentum
        )
        # Copies: the graph saves the masks, and the buffers are overwritten in place below.
        new, seen = update_class_mean_average(
            self.average.to(dtype, copy=True), self.seen.clone(), means, global_mean, present, alpha
        )
        with torch.no_grad():
            self.average.copy_(new)
            self.seen.copy_(seen)
            self.step.copy_(step)
            self.global_mean.copy_(global_mean)
        return TrackedClassMeans(_frobenius_normalize(new), global_mean)

    def normalized_means(self) -> Tensor:
        """The current ``F / ||F||_F`` ``[K, d]`` from the buffers (detached; for evaluation)."""
        return _frobenius_normalize(self.average)

    def reset(self) -> None:
        """Forget all updates."""
        self.average.zero_()
        self.step.zero_()
        self.seen.zero_()
        self.global_mean.zero_()


def _frobenius_normalize(x: Tensor) -> Tensor:
    """``x / ||x||_F``; an all-zero ``x`` stays zero (no NaN; the ETF layer then reports it)."""
    return x / torch.linalg.vector_norm(x).clamp_min(torch.finfo(x.dtype).tiny)
