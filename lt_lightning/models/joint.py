"""Joint training: a learnable linear classifier with a choice of long-tail loss (Kang et al.'s stage 1;
logit adjustment, balanced softmax, LDAM-DRW, class-balanced re-weighting)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning.losses import class_balanced_weights, ldam_loss, log_prior, logit_adjusted_cross_entropy
from lt_lightning.models.base import LongTailModule
from lt_lightning.nn.heads import LINEAR_INITS, LinearHead, LinearInit, NormedLinearHead

__all__ = ["DRW_ACTIVE_KEY", "LOSSES", "REWEIGHTS", "JointLoss", "JointModule", "Reweight"]

JointLoss = Literal["ce", "logit_adjusted", "balanced_softmax", "ldam"]
#: per-class loss weights: none, class-balanced throughout (Cui), or deferred re-weighting (Cao's DRW)
Reweight = Literal["none", "cb", "drw"]
REWEIGHTS: tuple[str, ...] = get_args(Reweight)
#: checkpoint key recording whether DRW's weights were on when it was written
DRW_ACTIVE_KEY = "lt_lightning_drw_active"

#: the losses by name: ``(module, logits, targets, class weights or None) -> loss``
LOSSES: dict[str, Callable[[JointModule, Tensor, Tensor, Tensor | None], Tensor]] = {
    "ce": lambda m, logits, y, w: F.cross_entropy(logits, y, weight=w),
    "logit_adjusted": lambda m, logits, y, w: logit_adjusted_cross_entropy(
        logits, y, m.train_counts, tau=m.hparams.la_tau, weight=w
    ),
    "balanced_softmax": lambda m, logits, y, w: logit_adjusted_cross_entropy(
        logits, y, m.train_counts, tau=1.0, weight=w
    ),
    "ldam": lambda m, logits, y, w: ldam_loss(
        logits, y, m.train_counts, max_margin=m.hparams.ldam_max_margin, scale=m.hparams.ldam_scale, weight=w
    ),
}


class JointModule(LongTailModule):
    """Backbone + learnable linear classifier + a loss: the long-tailed baselines.

    Losses (``loss``, the table :data:`LOSSES`), all from the training ``class_counts``:

    - ``"ce"``: cross-entropy.
    - ``"logit_adjusted"``: CE of ``logits + la_tau * log prior`` (Menon et al. ICLR 2021).
    - ``"balanced_softmax"``: the same with τ = 1 (Ren et al. NeurIPS 2020).
    - ``"ldam"``: LDAM (Cao et al. NeurIPS 2019) with margins ``∝ n^(-1/4)`` up to ``ldam_max_margin``
      and scale ``ldam_scale``, on the cosine classifier of kaidic/LDAM-DRW (``normed_classifier``).

    Re-weighting (``reweight``, kaidic/LDAM-DRW's ``train_rule``): ``"cb"`` weights the loss by
    Cui et al.'s class-balanced weights ``(1 − β)/(1 − β^n_c)`` (sum K) from the start; ``"drw"`` does so
    from epoch ``drw_epoch`` on (deferred re-weighting; 0-based, their ``epoch // 160``). The switch is a
    function of ``current_epoch``, which Lightning restores on resume, so a resumed run switches at the
    same step; the checkpoint also records whether the weights are on (``"lt_lightning_drw_active"``).

    Post-hoc logit adjustment (Menon et al., eq. 8): with ``posthoc_tau > 0`` evaluation and prediction
    logits are ``logits − posthoc_tau · log prior`` (training is unchanged); ``classifier_weight_bias``
    reports the bias with the same shift, so the NC metrics see the classifier that predicts.

    Args:
        loss: one of ``LOSSES``.
        la_tau: τ of ``"logit_adjusted"`` (>= 0).
        ldam_max_margin: LDAM's largest margin, given to the rarest class (theirs: 0.5).
        ldam_scale: LDAM's logit scale s (theirs: 30).
        normed_classifier: cosine classifier (:class:`~lt_lightning.nn.heads.NormedLinearHead`) instead
            of ``nn.Linear``; default: on for ``"ldam"`` only, as in kaidic/LDAM-DRW.
        reweight: one of ``REWEIGHTS``.
        cb_beta: β of the class-balanced weights (theirs: 0.9999).
        drw_epoch: first epoch with weights under ``"drw"`` (theirs: 160 of 200).
        posthoc_tau: post-hoc logit-adjustment strength at evaluation (0 = off).
        classifier_init: init of the linear classifier, ``"default"`` (PyTorch's) or
            ``"kaiming_normal"`` (kaidic/LDAM-DRW's ``_weights_init``; :class:`~lt_lightning.nn.heads.LinearHead`).
        freeze_classifier: never train the linear classifier (weight and bias stay at their random
            init): Yang et al.'s CIFAR cross-entropy baseline (``models/resnet_cifar.py`` ``Classifier``,
            kaiming-normal weight, ``requires_grad = False``). Default off: a learnable classifier.
        **kwargs: :class:`~lt_lightning.models.base.LongTailModule` arguments (``class_counts`` is
            required by every option above except plain ``"ce"``).
    """

    def __init__(
        self,
        loss: JointLoss = "ce",
        la_tau: float = 1.0,
        ldam_max_margin: float = 0.5,
        ldam_scale: float = 30.0,
        normed_classifier: bool | None = None,
        reweight: Reweight = "none",
        cb_beta: float = 0.9999,
        drw_epoch: int = 160,
        posthoc_tau: float = 0.0,
        classifier_init: LinearInit = "default",
        freeze_classifier: bool = False,
        **kwargs: Any,
    ) -> None:
        _check_loss_options(
            loss, la_tau, posthoc_tau, ldam_max_margin, ldam_scale, reweight, cb_beta, drw_epoch
        )
        if classifier_init not in LINEAR_INITS:
            raise ValueError(f"unknown classifier_init {classifier_init!r}; valid: {', '.join(LINEAR_INITS)}")
        super().__init__(**kwargs)
        self.head = self.build_head(self.hparams, self.feature_dim, self.num_classes)
        if freeze_classifier:
            self.head.requires_grad_(False)  # Yang's CE baseline: a fixed random linear classifier
        counts = self.class_counts
        needs_counts = loss != "ce" or reweight != "none" or posthoc_tau > 0
        if needs_counts and (counts is None or any(not c > 0 for c in counts)):
            raise ValueError(
                f"loss={loss!r}, reweight={reweight!r}, posthoc_tau={posthoc_tau} need the training class_counts, "
                f"all > 0 (linked from the datamodule by the CLI), got {counts!r}"
            )
        # Derived from the counts, so not saved: on the module's device without a transfer per step.
        t = None if counts is None else torch.tensor(counts, dtype=torch.float64)
        self.register_buffer("train_counts", None if t is None else t.float(), persistent=False)
        self.register_buffer(
            "log_prior", None if t is None else log_prior(counts, t).float(), persistent=False
        )
        weights = class_balanced_weights(counts, cb_beta) if needs_counts and reweight != "none" else None
        self.register_buffer("cb_weights", weights, persistent=False)

    @classmethod
    def build_head(cls, hparams: Mapping[str, Any], in_features: int, num_classes: int) -> nn.Module:
        """The classifier: ``nn.Linear`` or, for LDAM (``normed_classifier``), the cosine classifier."""
        normed = hparams.get("normed_classifier")
        if normed is None:
            normed = hparams.get("loss", "ce") == "ldam"
        init = hparams.get("classifier_init", "default")
        if normed and init != "default":
            raise ValueError(f"classifier_init={init!r} applies to the linear classifier, not the cosine one")
        return (
            NormedLinearHead(in_features, num_classes)
            if normed
            else LinearHead(in_features, num_classes, init=init)
        )

    # ---- loss ---------------------------------------------------------------------------------------
    def loss_weight(self) -> Tensor | None:
        """The per-class loss weights now (``[K]`` or None): CB always, DRW from ``drw_epoch`` on."""
        hp = self.hparams
        if hp.reweight == "cb" or (hp.reweight == "drw" and self.current_epoch >= hp.drw_epoch):
            return self.cb_weights
        return None

    def compute_loss(self, logits: Tensor, features: Tensor, targets: Tensor, count_labels: Tensor) -> Tensor:
        weight = self.loss_weight()
        return LOSSES[self.hparams.loss](
            self, logits, targets, None if weight is None else weight.to(logits.dtype)
        )

    # ---- post-hoc adjustment ------------------------------------------------------------------------
    def forward_head(self, features: Tensor) -> Tensor:
        logits = self.head(features)
        tau = self.hparams.posthoc_tau
        if tau > 0 and not self.training:
            logits = logits - tau * self.log_prior.to(logits.dtype)
        return logits

    def classifier_weight_bias(self) -> tuple[Tensor, Tensor | None]:
        weight, bias = self.head.weight, self.head.bias
        tau = self.hparams.posthoc_tau
        if tau > 0:
            shift = -tau * self.log_prior.to(weight.dtype)
            bias = shift if bias is None else bias + shift
        return weight, bias

    # ---- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[DRW_ACTIVE_KEY] = (
            self.hparams.reweight == "drw" and self.current_epoch >= self.hparams.drw_epoch
        )


def _check_loss_options(
    loss: str,
    la_tau: float,
    posthoc_tau: float,
    margin: float,
    scale: float,
    reweight: str,
    beta: float,
    drw: int,
) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
    if reweight not in REWEIGHTS:
        raise ValueError(f"unknown reweight {reweight!r}; valid: {', '.join(REWEIGHTS)}")
    if not la_tau >= 0 or not posthoc_tau >= 0:
        raise ValueError(f"la_tau and posthoc_tau must be >= 0, got {la_tau} and {posthoc_tau}")
    if not margin >= 0 or not scale > 0:
        raise ValueError(f"ldam_max_margin must be >= 0 and ldam_scale > 0, got {margin} and {scale}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"cb_beta must be in [0, 1), got {beta}")
    if isinstance(drw, bool) or not isinstance(drw, int) or drw < 0:
        raise ValueError(f"drw_epoch must be an int >= 0, got {drw!r}")
