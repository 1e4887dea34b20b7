"""Markou's stratified batches: every batch holds each class in its training proportion."""

from __future__ import annotations

import torch
from torch import Tensor

from lt_lightning.data.samplers.base import Labels, LongTailSampler

__all__ = ["StratifiedBatchSampler"]


class StratifiedBatchSampler(LongTailSampler):
    """Stratified batches (Markou et al., ``nc/datasets.py`` ``StratifiedBatchSampler``): every batch holds
    each class in the proportion of the training set.

    Markou's sampler yields the test folds of ``StratifiedKFold(n_splits=n)``, ``n = N // B``: each epoch
    every sample once, in folds of ``floor(N / n)`` or ``ceil(N / n)`` samples (the ``N mod B`` extra
    samples spread over the folds: 258 or 259 on CIFAR-10-LT, N = 12,406, at B = 256; 256 or 257 on
    CIFAR-10). Here each epoch drops ``N mod B`` random samples (a different few every epoch) so that every
    batch has exactly ``B`` samples; each class is then dealt round-robin over the batches, so
    class ``c`` has ``floor`` or ``ceil`` of ``n_c (N // B) B / N / (N // B)`` samples in every batch.

    The epoch's global order (:meth:`global_indices`) is the ``N // B`` global batches one after the
    other. Under DDP the global batch ``b`` is the union of the ranks' ``b``-th batches: rank ``r``
    takes the ``r``-th ``B / R`` of every (shuffled) global batch (:meth:`rank_indices`), so each
    rank's loader must use the per-rank batch ``B / R``.

    Args:
        labels: ``[N]`` integer class labels.
        batch_size: the GLOBAL batch size B (summed over ranks; divisible by the world size).
        seed, num_replicas, rank, num_classes: as :class:`~lt_lightning.data.samplers.LongTailSampler`.
    """

    build_options = ("batch_size",)

    def __init__(
        self,
        labels: Labels,
        *,
        batch_size: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, num_classes=num_classes)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size % self.num_replicas:
            raise ValueError(
                f"the stratified sampler's global batch_size {batch_size} must be divisible by the world "
                f"size {self.num_replicas}"
            )
        if batch_size > len(self.labels):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(self.labels)} training samples")
        self.batch_size = batch_size
        self.num_batches = len(self.labels) // batch_size
        self.num_samples = self.num_batches * batch_size // self.num_replicas
        self.total_size = self.num_samples * self.num_replicas

    @property
    def num_total(self) -> int:
        """``(N // B) * B``: the samples of the epoch's global batches."""
        return self.num_batches * self.batch_size

    def _draw(self, epoch: int, generator: torch.Generator) -> Tensor:
        n, kept = len(self.labels), self.num_total
        keep = torch.randperm(n, generator=generator)[:kept]  # drop N mod B random samples
        # class-major, shuffled within each class: sort the kept samples by (label, random key)
        key = self.labels.index_select(0, keep).double() + torch.rand(
            kept, generator=generator, dtype=torch.float64
        )
        class_major = keep.index_select(0, torch.argsort(key))
        # deal round-robin: position i goes to batch i mod num_batches, so each class spreads evenly
        batches = class_major.view(-1, self.num_batches).T.contiguous()  # [num_batches, B]
        # shuffle within each batch (so rank slices are not class blocks) and the batch order
        within = torch.argsort(torch.rand(batches.shape, generator=generator), dim=1)
        batches = batches.gather(1, within)
        return batches.index_select(0, torch.randperm(self.num_batches, generator=generator)).flatten()

    def rank_indices(self, epoch: int) -> Tensor:
        """This rank's ``[num_samples]`` indices: its ``B / R`` share of every global batch, batch by batch."""
        batches = self.global_indices(epoch).view(self.num_batches, self.batch_size)
        per_rank = self.batch_size // self.num_replicas
        return batches[:, self.rank * per_rank : (self.rank + 1) * per_rank].flatten()
