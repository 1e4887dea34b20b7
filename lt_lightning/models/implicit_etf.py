"""Implicit ETF: the classifier is the simplex ETF nearest to the current class means, found by a
differentiable Riemannian/closed-form solve every step (Markou, Ajanthan, Gould, NeurIPS 2024).

Per training batch: the class-mean moving average ``Y`` (:class:`~lt_lightning.nn.class_means.ClassMeanTracker`,
class sums reduced across ranks) → ``Q = nearest_simplex_etf(Y, prox=Q_prev)`` → ``W = sqrt(K/(K−1)) C Q``,
``b = −W μ_G`` → cross-entropy on ``h Wᵀ + b``. The gradient reaches the backbone through ``Y`` and the
implicit derivative of ``Q``. ``W`` and ``b`` of the last training step are buffers used at evaluation
and saved in checkpoints, with ``Q_prev`` and the moving average, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lt_lightning.models.base import LongTailModule
from lt_lightning.nn.class_means import ClassMeanTracker
from lt_lightning.nn.functional import nearest_simplex_etf

__all__ = ["ImplicitETFModule", "etf_classifier_from_q"]

Solver = Literal["procrustes", "pymanopt"]


def etf_classifier_from_q(q: Tensor, global_mean: Tensor) -> tuple[Tensor, Tensor]:
    """``W = sqrt(K/(K−1)) C Q`` ``[K, d]`` and ``b = −W μ_G`` ``[K]`` (Markou et al.)."""
    k = q.shape[0]
    w = math.sqrt(k / (k - 1)) * (q - q.mean(dim=0, keepdim=True))
    return w, -(w @ global_mean)


class _ImplicitETFHead(nn.Module):
    """Holds the evaluation classifier (buffers ``weight [K, d]``, ``bias [K]``) and the solver state."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        self.register_buffer("weight", torch.zeros(num_classes, in_features))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.register_buffer("q", torch.zeros(num_classes, in_features))  # Q_prev: prox and warm start
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, features: Tensor) -> Tensor:
        return features @ self.weight.T + self.bias


class ImplicitETFModule(LongTailModule):
    """The nearest simplex ETF to the class means as a differentiable classifier.

    Args:
        solver: ``"procrustes"`` (exact closed form, one thin SVD) or ``"pymanopt"`` (the authors'
            Riemannian trust regions); both give the same Q and gradients.
        delta: weight δ of the proximal term (δ/2)‖Q − Q_prev‖² (Markou: 1e-3).
        max_iterations: pymanopt iterations per step (Markou: 30).
        mean_momentum: ``None`` for α_t = 2/(t+1) (floor ``min_momentum``), or a constant momentum.
        min_momentum: floor of α_t (1e-4).
        **kwargs: :class:`~lt_lightning.models.base.LongTailModule` arguments (mixup is not supported:
            class means of mixed images are undefined).

    Raises:
        ValueError: d < K (Q has orthonormal rows), an unknown solver, or mixup.
    """

    def __init__(
        self,
        solver: Solver = "procrustes",
        delta: float = 1e-3,
        max_iterations: int = 30,
        mean_momentum: float | None = None,
        min_momentum: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        if solver not in ("procrustes", "pymanopt"):
            raise ValueError(f"unknown solver {solver!r}; valid: procrustes, pymanopt")
        if not delta > 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        super().__init__(**kwargs)
        if self.mixup is not None and self.mixup.alpha > 0:
            raise ValueError("ImplicitETFModule does not support mixup (class means of mixed images)")
        self.head = self.build_head(self.hparams, self.feature_dim, self.num_classes)
        self.class_means = ClassMeanTracker(
            self.num_classes, self.feature_dim, momentum=mean_momentum, min_momentum=min_momentum
        )
        self._train_classifier: tuple[Tensor, Tensor] | None = None
        self._initialized = False  # host mirror of head.initialized: no device read per step

    @classmethod
    def build_head(cls, hparams: Mapping[str, Any], in_features: int, num_classes: int) -> nn.Module:
        """Buffers for the evaluation classifier and the solver state (filled by training)."""
        if in_features < num_classes:
            raise ValueError(
                f"the implicit ETF needs feature dimension d >= K (Q has K orthonormal rows); got d={in_features}, "
                f"K={num_classes}; set fixdim=True or use a wider backbone"
            )
        return _ImplicitETFHead(in_features, num_classes)

    def _solve(self, y: Tensor) -> Tensor:
        hp = self.hparams
        kw = {"delta": hp.delta, "solver": hp.solver, "max_iterations": hp.max_iterations}
        head = self.head
        if not self._initialized:
            # First call: a feasibility solve without the proximal term from the canonical start,
            # then that solution is both the start and the proximal point of the real solve.
            with torch.no_grad():
                q0 = nearest_simplex_etf(y.detach(), None, **kw)
            head.q.copy_(q0)
            head.initialized.fill_(True)
            self._initialized = True
        prox = head.q.to(y.dtype)
        q = nearest_simplex_etf(y, prox, init=prox, **kw)
        head.q.copy_(q.detach())
        return q

    def on_train_features(self, features: Tensor, targets: Tensor) -> None:
        tracked = self.class_means(features, targets)
        q = self._solve(tracked.normalized)
        # W, b stay in float32 (float64 for float64 features): the stored head must not be rounded to a
        # half type; forward_head casts them to the features' dtype for the product.
        dtype = torch.promote_types(features.dtype, torch.float32)
        w, b = etf_classifier_from_q(q.to(dtype), tracked.global_mean.to(dtype))
        with torch.no_grad():
            self.head.weight.copy_(w)
            self.head.bias.copy_(b)
        self._train_classifier = (w, b)

    def forward_head(self, features: Tensor) -> Tensor:
        if self.training and self._train_classifier is not None:
            w, b = self._train_classifier
            self._train_classifier = None  # used once: the graph belongs to this batch only
            return features @ w.T.to(features.dtype) + b.to(features.dtype)
        return self.head(features)

    def on_train_start(self) -> None:
        super().on_train_start()
        self._initialized = bool(self.head.initialized)  # one read at the start (resumed runs)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        if "head.initialized" in state:
            self._initialized = bool(state["head.initialized"])
