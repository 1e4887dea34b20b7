"""Progressively-balanced sampling (Kang et al., ICLR 2020, Sec. 3): from instance- to class-balanced
over the epochs of a schedule."""

from __future__ import annotations

import torch
from torch import Tensor

from lt_lightning.data.samplers.base import Labels, LongTailSampler
from lt_lightning.data.samplers.kernels import alias_table

__all__ = ["ProgressivelyBalancedSampler", "progressive_lambda"]


def progressive_lambda(epoch: int, num_epochs: int) -> float:
    """Interpolation weight of the progressively-balanced sampler (Kang et al., ICLR 2020).

    ``λ_e = e / (T - 1)`` for ``e = 0..T-1`` (the paper writes ``e / T``, which never reaches the
    class-balanced end; we follow the reference's ``T - 1`` so the last epoch is class-balanced).
    Epochs ``e >= T - 1`` give 1 (clamped). With ``T = 1`` the formula is 0/0: epoch 0 gets λ = 0
    (instance-balanced, the start of the schedule) and any later epoch λ = 1.
    """
    if isinstance(num_epochs, bool) or int(num_epochs) != num_epochs or num_epochs < 1:
        raise ValueError(f"num_epochs must be a positive integer, got {num_epochs!r}")
    if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    if num_epochs == 1:
        return 0.0 if epoch == 0 else 1.0
    return min(epoch / (num_epochs - 1), 1.0)


class ProgressivelyBalancedSampler(LongTailSampler):
    """Progressively-balanced sampling (Kang et al., ICLR 2020, Sec. 3).

    At epoch ``e`` class ``c`` is drawn (with replacement) with probability proportional to
    ``(1 - λ_e) n_c + λ_e N / K``, ``λ_e`` from :func:`progressive_lambda` (0 at the first epoch,
    1 from epoch ``T - 1`` on), then a sample of that class uniformly at random. ``K`` counts the
    non-empty classes, so λ = 1 is uniform over them and empty classes are never drawn.

    Args:
        labels, seed, num_replicas, rank, num_classes: see :class:`LongTailSampler`.
        num_epochs: T >= 1, the length of the schedule.
    """

    build_options = ("num_epochs",)

    def __init__(
        self,
        labels: Labels,
        *,
        num_epochs: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        progressive_lambda(0, num_epochs)  # validates num_epochs
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, num_classes=num_classes)
        self.num_epochs = int(num_epochs)

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        """``[K]`` float64 class probabilities at ``epoch`` (0 for empty classes)."""
        lam = progressive_lambda(epoch, self.num_epochs)
        counts = self.class_counts.to(torch.float64)
        uniform = self.num_total / len(self.present)
        weights = torch.where(counts > 0, (1.0 - lam) * counts + lam * uniform, torch.zeros_like(counts))
        return weights / weights.sum()

    def _draw(self, epoch: int, generator: torch.Generator) -> Tensor:
        weights = self.class_probabilities(epoch).index_select(0, self.present)
        return self._draw_with_replacement(*alias_table(weights), generator)
