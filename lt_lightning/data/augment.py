"""Batch-level augmentation that needs no checkpoint state: mixup (Zhang et al., ICLR 2018), seeded per batch.

A batch's mixup is drawn from :func:`mixup_generator` over ``(seed, epoch, rank, batch_idx)`` alone, so
nothing has to be saved for an exact resume: a resumed run (mid-epoch or not) redraws every remaining
batch's ``lam`` and permutation exactly. :class:`Mixup` is the part a model takes (``mixup: Mixup |
None``); :func:`mixup_batch` is the pure function under it.

Under DDP every rank mixes with one ``lam`` per global batch, as Yang et al.'s DataParallel training
did (one ``mixup_data`` call per global batch): each rank draws ``lam`` from rank 0's stream
``(seed, epoch, 0, batch_idx)``, so the ranks agree without a broadcast (no collective, no host sync);
the permutation comes from the rank's own stream. A single-process run draws what it always drew.

Nothing here synchronises with the device: ``lam`` is drawn on the host from a CPU generator and the
permutation is copied to the batch's device without blocking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Mixup", "mixup_batch", "mixup_generator"]

# Keeps mixup's streams apart from any other 4-integer SeedSequence of the package (the device
# pipeline's crop/flip stream is SeedSequence([seed, epoch, rank, 0xA06])).
_MIXUP_STREAM = 0x313F


def mixup_batch(
    x: Tensor,
    y: Tensor,
    alpha: float,
    *,
    generator: torch.Generator | None = None,
    lam_generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Mixup (Zhang et al. ICLR 2018): ``x' = lam x + (1 - lam) x[perm]`` with ``lam ~ Beta(alpha, alpha)``.

    ``lam`` is drawn on the host from ``generator`` (a CPU generator; no device sync) and returned as a
    Python float; ``alpha = 0`` gives ``lam = 1`` (no mixing), as in the authors' code. The permutation
    is drawn on ``x``'s device when the generator lives there, otherwise on the CPU and copied over.

    Args:
        x: ``[N, ...]`` inputs.
        y: ``[N]`` labels.
        alpha: Beta concentration, >= 0.
        generator: source of randomness (default: torch's global generators). Use a CPU generator: a
            CUDA one makes drawing lambda a device sync.
        lam_generator: a CPU generator that draws ``lam`` instead of ``generator`` (which then draws
            only the permutation): one seeded alike on every rank gives every rank the same ``lam``.

    Returns:
        ``(x_mixed, y_a, y_b, lam)`` with ``y_a = y`` and ``y_b = y[perm]``; combine losses as
        ``lam * loss(y_a) + (1 - lam) * loss(y_b)``.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"mixup alpha must be a float >= 0, got {alpha!r}")
    if y.shape[:1] != x.shape[:1]:
        raise ValueError(f"x and y must have the same batch size, got {tuple(x.shape)} and {tuple(y.shape)}")
    if alpha > 0:
        # torch has no Beta sampler that takes a generator: seed numpy's from it (host-only).
        lam_gen = generator if lam_generator is None else lam_generator
        gen_device = lam_gen.device if lam_gen is not None else "cpu"
        seed = int(torch.randint(0, 2**62, (1,), generator=lam_gen, device=gen_device))
        lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    else:
        lam = 1.0
    n = x.shape[0]
    if generator is None or generator.device.type == x.device.type:
        perm = torch.randperm(n, generator=generator, device=x.device)
    else:
        perm = torch.randperm(n, generator=generator).to(x.device, non_blocking=True)
    x_mixed = lam * x + (1.0 - lam) * x[perm]
    return x_mixed, y, y[perm], lam


def mixup_generator(seed: int, epoch: int, rank: int, batch_idx: int) -> torch.Generator:
    """The CPU generator of one batch's mixup, seeded by numpy's ``SeedSequence`` over the four integers.

    Distinct ``(seed, epoch, rank, batch_idx)`` give unrelated streams (a hash, not a sum, so ``(0, 1,
    ...)`` and ``(1, 0, ...)`` do not collide); every rank mixes its own batches differently.

    Raises:
        ValueError: an argument that is not a non-negative integer.

    >>> a, b = mixup_generator(0, 3, 1, 7), mixup_generator(0, 3, 1, 7)
    >>> torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    True
    """
    values = {"seed": seed, "epoch": epoch, "rank": rank, "batch_idx": batch_idx}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"mixup_generator: {name} must be a non-negative integer, got {value!r}")
    entropy = [int(v) for v in values.values()] + [_MIXUP_STREAM]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


@dataclass(frozen=True)
class Mixup:
    """Mixup as an injected part: ``Mixup(alpha)(x, y, seed=..., epoch=..., rank=..., batch_idx=...)``.

    Each batch draws its permutation from :func:`mixup_generator` ``(seed, epoch, rank, batch_idx)`` and
    ``lam ~ Beta(alpha, alpha)`` from rank 0's ``(seed, epoch, 0, batch_idx)``: one ``lam`` per global
    batch, the same on every rank (Yang's DataParallel), with no communication. It holds no state to
    checkpoint.
    ``alpha = 0`` returns the batch unchanged (``lam = 1``, ``y_b = y``) without drawing anything.

    Args:
        alpha: Beta concentration, a finite number >= 0 (Yang et al.: 1.0 on CIFAR-LT, 0.2 on
            ImageNet-LT).

    >>> x, y = torch.ones(4, 2), torch.arange(4)
    >>> Mixup(0.0)(x, y, seed=0, epoch=0, rank=0, batch_idx=0)[3]
    1.0
    """

    alpha: float = 0.0

    def __post_init__(self) -> None:
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < math.inf:
            raise ValueError(f"Mixup alpha must be a finite number >= 0, got {alpha!r}")

    def __call__(
        self, x: Tensor, y: Tensor, *, seed: int, epoch: int, rank: int, batch_idx: int
    ) -> tuple[Tensor, Tensor, Tensor, float]:
        """Mix one batch: ``(x_mixed, y_a, y_b, lam)`` as :func:`mixup_batch` returns them.

        Args:
            x: ``[N, ...]`` inputs; y: ``[N]`` labels.
            seed, epoch, rank, batch_idx: the batch's identity (the run's seed, the epoch, the process's
                rank, the batch's index within the epoch); the same four give the same mix.
        """
        if self.alpha == 0:
            if y.shape[:1] != x.shape[:1]:
                raise ValueError(
                    f"x and y must have the same batch size, got {tuple(x.shape)} and {tuple(y.shape)}"
                )
            return x, y, y, 1.0
        generator = mixup_generator(seed, epoch, rank, batch_idx)
        # every rank seeds lam as rank 0 does: one lam per global batch, no broadcast
        lam_generator = None if rank == 0 else mixup_generator(seed, epoch, 0, batch_idx)
        return mixup_batch(x, y, self.alpha, generator=generator, lam_generator=lam_generator)
