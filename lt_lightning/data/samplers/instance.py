"""Instance-balanced sampling (Kang et al., ICLR 2020, q = 1): every epoch a shuffled pass."""

from __future__ import annotations

import torch
from torch import Tensor

from lt_lightning.data.samplers.base import LongTailSampler

__all__ = ["InstanceBalancedSampler"]


class InstanceBalancedSampler(LongTailSampler):
    """Instance-balanced sampling (q = 1): every epoch is a random permutation of ``0..N-1``.

    Kang et al., ICLR 2020, the default sampler of joint (stage-1) training.
    """

    def _draw(self, epoch: int, generator: torch.Generator) -> Tensor:
        return torch.randperm(self.num_total, generator=generator)
