"""Kang's class-aware (class-balanced, q = 0) sampler (Kang et al., ICLR 2020), vectorised and exact."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from lt_lightning.data.samplers.base import Labels, LongTailSampler
from lt_lightning.data.samplers.kernels import PartialShuffle, SegmentedShuffle

__all__ = ["ClassBalancedSampler"]

#: cost of one vectorised Fisher-Yates step, in sorted entries (chooses the partial-shuffle path)
_PARTIAL_STEP_COST = 500


class ClassBalancedSampler(LongTailSampler):
    """Kang's class-aware sampler (q = 0), used for cRT / LWS (Kang et al., ICLR 2020).

    The epoch is a sequence of visits. Visits come in rounds; each round is a fresh uniformly random
    permutation of the non-empty classes. A visit to class ``c`` yields the next ``samples_per_class``
    samples of ``c``'s stream, where the stream is a concatenation of independent uniform
    permutations of ``c``'s samples (without replacement until exhausted, then reshuffled). The
    sequence is truncated to ``N`` samples (the last visit may be cut short).

    Differences from the reference code (``ClassAwareSampler``): the reference draws
    ``max_c n_c * K`` samples per epoch and keeps its class/stream iterators alive across epochs; here
    an epoch draws ``N`` samples and starts fresh from ``(seed, epoch)``, so that the order is
    reproducible and identical on every DDP rank.

    Vectorised, no loop over samples or classes (only short loops: over the <= 6 table sizes, over
    the ``R s`` partial-shuffle steps where that is the cheaper path, over the class permutations of
    >= 2048 classes with one ``randperm`` each). In round ``r`` every class is visited exactly once,
    so that visit is class ``c``'s ``r``-th and reads stream positions ``r s .. r s + s - 1``. With
    ``R = ceil(ceil(N / s) / K)`` rounds class ``c`` needs ``ceil(R s / n_c)`` permutations, drawn by
    one :class:`SegmentedShuffle` (as are the ``R`` class permutations); a large class of which only
    a prefix of one permutation is read gets that prefix from :class:`PartialShuffle` instead.

    Args:
        labels, seed, num_replicas, rank, num_classes: see :class:`LongTailSampler`.
        samples_per_class: consecutive samples per class visit (Kang uses 4).
    """

    build_options = ("samples_per_class",)

    def __init__(
        self,
        labels: Labels,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
        samples_per_class: int = 4,
    ) -> None:
        if (
            isinstance(samples_per_class, bool)
            or int(samples_per_class) != samples_per_class
            or samples_per_class < 1
        ):
            raise ValueError(f"samples_per_class must be a positive integer, got {samples_per_class!r}")
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, num_classes=num_classes)
        self.samples_per_class = s = int(samples_per_class)
        num_present = len(self.present)
        self.num_visits = math.ceil(self.num_total / s)
        self.num_rounds = math.ceil(self.num_visits / num_present)
        self._visit_shuffle = SegmentedShuffle(torch.full((self.num_rounds,), num_present))
        # Visit v belongs to round v // K' and reads its class's stream from position (v // K') * s.
        self._visit_stream_offset = torch.arange(self.num_visits) // num_present * s
        # Stream layout: every class owns a block of stream entries. A class with n_c >= R s needs only
        # the first R s entries of one permutation; if that is cheaper (few steps, much skipped work),
        # those come from a partial Fisher-Yates shuffle and the block holds R s entries. The other
        # classes' blocks hold ceil(R s / n_c) whole permutations, laid out first, by ascending class
        # size, so that the segment sizes are non-decreasing (as SegmentedShuffle requires).
        sizes = self._present_sizes
        needed = self.num_rounds * s
        perms = (needed + sizes - 1) // sizes
        prefix = sizes >= needed
        prefix_total = int(sizes[prefix].sum())
        if needed * (int(prefix.sum()) + _PARTIAL_STEP_COST) >= prefix_total:
            prefix = torch.zeros_like(prefix)
        block = torch.where(prefix, needed, sizes * perms)
        layout = torch.argsort(torch.where(prefix, sizes.max() + 1, sizes), stable=True)
        self._block_start = torch.empty_like(sizes)
        self._block_start[layout] = torch.cumsum(block[layout], 0) - block[layout]
        full = layout[~prefix[layout]]
        self._stream_shuffle = SegmentedShuffle(torch.repeat_interleave(sizes[full], perms[full]))
        self._prefix_shuffle = PartialShuffle(sizes[layout[prefix[layout]]], needed)

    def _draw(self, epoch: int, generator: torch.Generator) -> Tensor:
        n, s = self.num_total, self.samples_per_class
        # The position within round r's class permutation is the class (index into `present`).
        visit_class = self._visit_shuffle(generator)[: self.num_visits]
        # Position within its class of every stream entry.
        stream = np.empty(
            self._stream_shuffle.total + self._prefix_shuffle.sizes.size * self._prefix_shuffle.k,
            dtype=np.int64,
        )
        self._stream_shuffle(generator, out=stream[: self._stream_shuffle.total])
        self._prefix_shuffle(generator, out=stream[self._stream_shuffle.total :])
        # [V, s] then truncated: every block holds >= R s entries, so the cut-off tail reads are valid.
        first = self._block_start.index_select(0, visit_class).add_(self._visit_stream_offset)
        member = torch.from_numpy(stream).index_select(0, (first.unsqueeze(1) + torch.arange(s)).view(-1))
        member.view(-1, s).add_(self._present_starts.index_select(0, visit_class).unsqueeze(1))
        return self.order.index_select(0, member[:n])
