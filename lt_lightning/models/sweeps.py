"""Accuracy of a grid of post-hoc settings (TDE's α, τ-norm's τ) from one pass over the data."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from lt_lightning.metrics import ShotAccuracy

__all__ = ["AccuracySweep"]


class AccuracySweep(nn.Module):
    """One :class:`ShotAccuracy` per grid value; ``update`` takes the stacked logits ``[T, N, K]``.

    Each metric is reduced across ranks by torchmetrics, so the chosen value is the same everywhere.
    """

    def __init__(self, values: Sequence[float], num_classes: int, **shot_kwargs) -> None:
        super().__init__()
        if len(values) == 0:
            raise ValueError("a sweep needs at least one value")
        self.values = [float(v) for v in values]
        self.metrics = nn.ModuleList(ShotAccuracy(num_classes, **shot_kwargs) for _ in self.values)

    def update(self, stacked_logits: Tensor, target: Tensor) -> None:
        if stacked_logits.shape[0] != len(self.values):
            raise ValueError(f"expected {len(self.values)} logit sets, got {stacked_logits.shape[0]}")
        for metric, logits in zip(self.metrics, stacked_logits):
            metric.update(logits, target)

    def compute(self) -> list[dict[str, float]]:
        return [m.compute() for m in self.metrics]

    def reset(self) -> None:
        for m in self.metrics:
            m.reset()

    @staticmethod
    def best(results: list[dict[str, float]], key: str = "acc") -> int:
        """Index of the best value (the first one on ties; NaN never wins)."""
        scores = [float(r[key]) for r in results]
        scores = [-1.0 if math.isnan(s) else s for s in scores]
        return scores.index(max(scores))
