"""Accuracy of a grid of post-hoc settings (TDE's α, τ-norm's τ) from one pass over the data."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lt_lightning.metrics import ShotAccuracy

__all__ = ["AccuracySweep"]


class AccuracySweep(nn.Module):
    """One :class:`ShotAccuracy` per grid value; ``update`` takes the stacked logits ``[T, N, K]``.

    Each value also keeps its mean cross-entropy (``nll``), which breaks ties in top-1: on a small
    validation split many values score the same accuracy, and "the first on ties" would always pick the
    grid's first value (τ = 0, i.e. no re-scaling). Every state is reduced across ranks by torchmetrics,
    so the chosen value is the same everywhere.
    """

    def __init__(self, values: Sequence[float], num_classes: int, **shot_kwargs) -> None:
        super().__init__()
        if len(values) == 0:
            raise ValueError("a sweep needs at least one value")
        self.values = [float(v) for v in values]
        self.metrics = nn.ModuleList(ShotAccuracy(num_classes, **shot_kwargs) for _ in self.values)
        self.nll = nn.ModuleList(MeanMetric() for _ in self.values)

    def update(self, stacked_logits: Tensor, target: Tensor) -> None:
        if stacked_logits.shape[0] != len(self.values):
            raise ValueError(f"expected {len(self.values)} logit sets, got {stacked_logits.shape[0]}")
        for metric, nll, logits in zip(self.metrics, self.nll, stacked_logits):
            metric.update(logits, target)
            nll.update(F.cross_entropy(logits.double(), target, reduction="none"))

    def compute(self) -> list[dict]:
        """Per grid value: :class:`ShotAccuracy`'s keys and ``nll`` (mean cross-entropy, 0-d tensors)."""
        return [{**m.compute(), "nll": n.compute()} for m, n in zip(self.metrics, self.nll)]

    def reset(self) -> None:
        for m in (*self.metrics, *self.nll):
            m.reset()

    @staticmethod
    def best(results: list[dict], key: str = "acc") -> int:
        """Index of the best value by ``key``; ties go to the lowest ``nll`` (where given), then the first.

        NaN never wins.
        """
        scores = [float(r[key]) for r in results]
        scores = [-1.0 if math.isnan(s) else s for s in scores]
        top = max(scores)
        tied = [i for i, s in enumerate(scores) if s == top]
        nll = [float(results[i].get("nll", math.nan)) for i in tied]
        if any(math.isnan(v) for v in nll):
            return tied[0]
        return tied[nll.index(min(nll))]
