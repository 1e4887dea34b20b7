"""Joint training: a learnable linear classifier with cross-entropy (Kang et al.'s stage 1)."""

from __future__ import annotations

from lt_lightning.models.base import LongTailModule

__all__ = ["JointModule"]


class JointModule(LongTailModule):
    """Backbone + learnable linear classifier + cross-entropy: the long-tailed baseline.

    All arguments are those of :class:`~lt_lightning.models.base.LongTailModule`.
    """
