"""cRT and LWS: the two stage-2 methods that train (Kang et al., ICLR 2020)."""

from __future__ import annotations

from typing import Any

from lt_lightning.models.decoupled.stage2 import Stage2Module
from lt_lightning.nn.heads import ETFHead, LinearHead, LWSHead

__all__ = ["CRTModule", "LWSModule"]


class CRTModule(Stage2Module):
    """Classifier re-training: a re-initialised linear classifier on the frozen stage-1 representation,
    trained with cross-entropy (use the class-balanced sampler: ``data.init_args.sampler: class``).

    Args:
        **kwargs: :class:`~lt_lightning.models.decoupled.stage2.Stage2Module` arguments.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head = LinearHead(self.feature_dim, self.num_classes)  # freshly initialised


class LWSModule(Stage2Module):
    """Learnable weight scaling: per-class scales on the whole stage-1 logit, ``z_i = s_i (w_i·x + b_i)``
    (stage-1 weight and bias frozen; linear and fixed-ETF stage-1 heads).

    Args:
        **kwargs: :class:`~lt_lightning.models.decoupled.stage2.Stage2Module` arguments.

    Raises:
        ValueError: the stage-1 head is not a linear classifier.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not issubclass(self.stage1_head_type, (LinearHead, ETFHead)):
            raise ValueError(
                f"lws rescales a linear classifier's logits; the stage-1 head is {self.stage1_head_type.__name__}"
            )
        self.head = LWSHead(*self.stage1_classifier)
