"""Fixed simplex-ETF classifier with cross-entropy or the dot-regression loss (Yang et al. NeurIPS 2022;
Zhu et al. NeurIPS 2021)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning.losses import dot_regression_loss
from lt_lightning.models.base import LongTailModule
from lt_lightning.nn.heads import ETFHead, NeckMode

__all__ = ["ETFLoss", "FixedETFModule"]

ETFLoss = Literal["dr", "ce"]


class FixedETFModule(LongTailModule):
    """A frozen simplex ETF as the classifier (a registered buffer, never trained).

    Args:
        etf: ``"random"`` (random rotation, Yang) or ``"canonical"`` (Zhu).
        loss: ``"dr"`` (dot regression, Yang's code) or ``"ce"`` (cross-entropy on ``logits / temperature``).
        temperature: CE temperature.
        class_balanced: DR's per-batch class-balanced target scaling (Yang's default, on).
        reg_lambda: DR's feature-norm penalty λ·mean‖h‖.
        learnable_bias: a learnable bias (Zhu).
        etf_seed: seed of the ETF's random rotation.
        neck: default ``"bn_l2"`` (Yang's CIFAR head: BatchNorm then L2); ``"bn"`` for ImageNet.
        **kwargs: :class:`~lt_lightning.models.base.LongTailModule` arguments.

    Raises:
        ValueError: the feature dimension is below K − 1 (use ``fixdim`` or a wider backbone).
    """

    def __init__(
        self,
        etf: Literal["random", "canonical"] = "random",
        loss: ETFLoss = "dr",
        temperature: float = 1.0,
        class_balanced: bool = True,
        reg_lambda: float = 0.0,
        learnable_bias: bool = False,
        etf_seed: int = 0,
        neck: NeckMode = "bn_l2",
        **kwargs: Any,
    ) -> None:
        if loss not in ("dr", "ce"):
            raise ValueError(f"unknown loss {loss!r}; valid: dr, ce")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().__init__(neck=neck, **kwargs)
        self.head = self.build_head(self.hparams, self.feature_dim, self.num_classes)

    @classmethod
    def build_head(cls, hparams: Mapping[str, Any], in_features: int, num_classes: int) -> nn.Module:
        """The frozen ETF (:class:`~lt_lightning.nn.heads.ETFHead`), seeded by ``etf_seed``."""
        if in_features < num_classes - 1:
            raise ValueError(
                f"a simplex ETF for K={num_classes} classes needs feature dimension >= K-1={num_classes - 1}, "
                f"got d={in_features}; set fixdim=True or use a wider backbone (e.g. backbone_kwargs width)"
            )
        return ETFHead(
            in_features,
            num_classes,
            etf=hparams.get("etf", "random"),
            learnable_bias=hparams.get("learnable_bias", False),
            seed=hparams.get("etf_seed", 0),
        )

    def compute_loss(self, logits: Tensor, features: Tensor, targets: Tensor, count_labels: Tensor) -> Tensor:
        hp = self.hparams
        if hp.loss == "ce":
            return F.cross_entropy(logits / hp.temperature, targets)
        # The DR loss subtracts two nearly equal terms (h·w − ‖w‖‖h‖) as features collapse onto the ETF:
        # it runs in float32 (autocast off) even when the backbone runs in bfloat16/float16.
        with torch.autocast(features.device.type, enabled=False):
            return dot_regression_loss(
                features.to(torch.promote_types(features.dtype, torch.float32)),
                self.head.etf,
                targets,
                class_balanced=hp.class_balanced,
                reg_lambda=hp.reg_lambda,
                count_labels=count_labels,
            )
