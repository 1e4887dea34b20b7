"""Weight balancing, stage 2 (Alshammari et al., CVPR 2022): the stage-1 classifier fine-tuned on the
frozen representation with the class-balanced loss, weight decay and MaxNorm by projected gradient descent.

MaxNorm (the authors' ``utils/regularizers.py`` ``MaxNorm_via_PGD``, L2, τ = 1): one threshold for the
classifier weight, ``min_c ‖w_c‖ + thresh · (max_c ‖w_c‖ − min_c ‖w_c‖)`` of the row norms when stage 2
starts; after each projection every row longer than it is scaled back onto it. The bias is not
constrained (their threshold for 1-d parameters is ``inf``).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses import class_balanced_weights
from lt_lightning.models.decoupled.stage2 import Stage2Module
from lt_lightning.nn.heads import ETFHead, LinearHead

__all__ = ["PGD_EVERY", "PGDEvery", "WeightBalancingModule", "max_norm_threshold", "project_max_norm"]

#: when the projection runs: after every optimiser step (projected gradient descent) or, as the
#: authors' ``utils/trainval.py`` does, once after each training epoch
PGDEvery = Literal["step", "epoch"]
PGD_EVERY: tuple[str, ...] = get_args(PGDEvery)


def max_norm_threshold(weight: Tensor, thresh: float) -> Tensor:
    """MaxNorm's radius of ``weight`` ``[K, d]``: ``min + thresh · (max − min)`` of the row L2 norms (0-d).

    ``thresh`` 0 caps every row at the shortest row's norm, 1 at the longest (nothing is projected then).
    """
    if weight.ndim != 2:
        raise ValueError(f"max_norm_threshold needs a [K, d] weight, got shape {tuple(weight.shape)}")
    norms = torch.linalg.vector_norm(weight.detach().double(), dim=1)
    lo, hi = norms.min(), norms.max()
    return (lo + thresh * (hi - lo)).to(weight.dtype)


@torch.no_grad()
def project_max_norm(weight: Tensor, threshold: Tensor) -> None:
    """Scale every row of ``weight`` ``[K, d]`` whose L2 norm exceeds ``threshold`` back to it, in place."""
    norms = torch.linalg.vector_norm(weight, dim=1, keepdim=True)
    over = norms > threshold
    weight.mul_(torch.where(over, threshold / norms.clamp_min(torch.finfo(norms.dtype).tiny), 1.0))


class WeightBalancingModule(Stage2Module):
    """Weight balancing's second stage (Alshammari et al., CVPR 2022): fine-tune the stage-1 linear
    classifier (weight and bias; the representation frozen) with the class-balanced cross-entropy of
    Cui et al. (weights ``(1 − β)/(1 − β^n_c)``, summing to K), the optimizer's weight decay, and MaxNorm by
    projection (``maxnorm_thresh``; see :func:`max_norm_threshold`).

    The radius is fixed from the stage-1 classifier's row norms when the module is built, and held in
    the buffer ``max_norm_threshold``: it is in every checkpoint, so a resumed stage 2 projects onto the
    same ball. Their class-balanced "softmax" loss is binary cross-entropy on the softmax probabilities
    (``utils/class_balanced_loss.py``, from vandit15's port); this module uses Cui et al.'s weighted
    softmax cross-entropy.

    Args:
        maxnorm_thresh: the threshold fraction (theirs: 0.1), >= 0; ``None``: no MaxNorm.
        pgd_every: ``"step"`` (after every optimiser step: every row is inside the ball after any step)
            or ``"epoch"`` (once after each training epoch, as the authors' ``train_model``).
        cb_beta: β of the class-balanced weights (theirs: 0.9999); 0 gives plain cross-entropy.
        **kwargs: :class:`~lt_lightning.models.decoupled.stage2.Stage2Module` arguments (``class_counts``
            is required).

    Raises:
        ValueError: a bad option, missing counts, or a stage-1 head that is not a linear classifier.
    """

    def __init__(
        self,
        maxnorm_thresh: float | None = 0.1,
        pgd_every: PGDEvery = "step",
        cb_beta: float = 0.9999,
        **kwargs: Any,
    ) -> None:
        if maxnorm_thresh is not None and not maxnorm_thresh >= 0:
            raise ValueError(f"maxnorm_thresh must be >= 0 or None, got {maxnorm_thresh}")
        if pgd_every not in PGD_EVERY:
            raise ValueError(f"unknown pgd_every {pgd_every!r}; valid: {', '.join(PGD_EVERY)}")
        super().__init__(**kwargs)
        if not issubclass(self.stage1_head_type, (LinearHead, ETFHead)):
            raise ValueError(
                "weight balancing fine-tunes a linear classifier; the stage-1 head is "
                f"{self.stage1_head_type.__name__}"
            )
        counts = self.class_counts
        if counts is None or any(not c > 0 for c in counts):
            raise ValueError(f"weight balancing needs the training class_counts, all > 0, got {counts!r}")
        weight, bias = self.stage1_classifier
        self.head = LinearHead(self.feature_dim, self.num_classes, bias=True)
        with torch.no_grad():  # start from the stage-1 classifier (their deepcopy of the base model)
            self.head.weight.copy_(weight)
            self.head.bias.copy_(torch.zeros_like(self.head.bias) if bias is None else bias)
        self.register_buffer("cb_weights", class_balanced_weights(counts, cb_beta), persistent=False)
        radius = float("inf") if maxnorm_thresh is None else max_norm_threshold(weight, maxnorm_thresh)
        # saved: a resumed run (or a reloaded stage-2 checkpoint) keeps the radius stage 2 started with
        self.register_buffer("max_norm_threshold", torch.as_tensor(radius, dtype=torch.float32))

    def compute_loss(self, logits: Tensor, features: Tensor, targets: Tensor, count_labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, weight=self.cb_weights.to(logits.dtype))

    def project(self) -> None:
        """Project the classifier weight onto the MaxNorm ball (no host sync)."""
        if self.hparams.maxnorm_thresh is not None:
            project_max_norm(self.head.weight, self.max_norm_threshold.to(self.head.weight.dtype))

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.hparams.pgd_every == "step":
            self.project()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()  # the epoch's training means
        if self.hparams.pgd_every == "epoch":
            self.project()
