"""Power sampling (Kang et al., ICLR 2020, Eq. 1): class ``c`` with probability ∝ ``n_c^q``, with
replacement, then a uniform sample of that class; square-root sampling is q = 1/2."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lt_lightning.data.samplers.base import Labels, LongTailSampler
from lt_lightning.data.samplers.kernels import alias_table

__all__ = ["PowerSampler", "SquareRootSampler", "power_class_weights"]


def power_class_weights(counts: torch.Tensor, q: float) -> torch.Tensor:
    """``n_c^q`` in float64, exactly 0 for empty classes (``0**0`` would be 1)."""
    counts = counts.to(torch.float64)
    return torch.where(counts > 0, counts.clamp_min(1.0).pow(q), torch.zeros_like(counts))


class PowerSampler(LongTailSampler):
    """Power sampling: class ``c`` with probability ``n_c^q / sum_k n_k^q``, with replacement.

    Kang et al., ICLR 2020, Eq. (1): q = 1 instance-balanced (with replacement), q = 0 class-balanced
    (with replacement, unlike :class:`~lt_lightning.data.samplers.ClassBalancedSampler`), q = 1/2 square-root sampling. After the
    class, a sample of that class is drawn uniformly at random.

    Args:
        labels, seed, num_replicas, rank, num_classes: see :class:`LongTailSampler`.
        q: exponent in ``[0, 1]``.
    """

    build_options: ClassVar[tuple[str, ...]] = ("q",)

    def __init__(
        self,
        labels: Labels,
        *,
        q: float,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be a number in [0, 1], got {q!r}")
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, num_classes=num_classes)
        self.q = float(q)
        self.class_weights = power_class_weights(self.class_counts, self.q)
        self._alias = alias_table(self.class_weights.index_select(0, self.present))

    def class_probabilities(self) -> torch.Tensor:
        """``[K]`` float64 probability of drawing each class (0 for empty classes)."""
        return self.class_weights / self.class_weights.sum()

    def _draw(self, epoch: int, generator: torch.Generator) -> Tensor:
        return self._draw_with_replacement(*self._alias, generator)


class SquareRootSampler(PowerSampler):
    """Square-root sampling: :class:`PowerSampler` with q = 1/2 (Mahajan et al., 2018; Kang et al.)."""

    build_options = ()

    def __init__(
        self,
        labels: Labels,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(
            labels, q=0.5, seed=seed, num_replicas=num_replicas, rank=rank, num_classes=num_classes
        )
