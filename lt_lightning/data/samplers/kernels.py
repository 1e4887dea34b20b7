"""Exact, vectorised random kernels the samplers are built from (no Python loop over samples or classes).

* :class:`SegmentedShuffle`: independent uniform permutations of consecutive segments of fixed sizes;
* :class:`PartialShuffle`: ordered uniformly random ``k``-subsets (a ``k``-step Fisher-Yates, batched);
* :func:`alias_table` / :func:`alias_draw`: Walker's alias method for i.i.d. draws from ``K`` weights.

Every kernel draws from the ``torch.Generator`` it is given, never from a global RNG.

Rounding (used by every "uniform index" below): ``floor(u * n) < n`` for every double
``u <= 1 - 2^-53`` (``torch.rand``'s largest value) and integer ``n >= 1``: the exact product
``n - n 2^-53`` is within half an ulp of the double just below ``n`` (or is that double when ``n`` is a
power of 2), so round-to-nearest never reaches ``n``; smaller ``u`` give smaller products.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch

__all__ = [
    "RANDPERM_MIN",
    "TABLE_MAX",
    "PartialShuffle",
    "SegmentedShuffle",
    "alias_draw",
    "alias_table",
    "permutation_table",
]

TABLE_MAX = 6  # segments up to this size are shuffled by drawing a row of a table of all n! orders
RANDPERM_MIN = 2048  # segments from this size on get their own torch.randperm (loop cost per entry tiny)


@functools.cache
def permutation_table(size: int) -> np.ndarray:
    """``[size!, size]`` int64: every permutation of ``0..size-1``, one per row."""
    return np.array(list(itertools.permutations(range(size))), dtype=np.int64).reshape(-1, size)


class SegmentedShuffle:
    """Independent uniform permutations of consecutive segments, precomputed for fixed segment sizes.

    For segment sizes ``n_0 <= n_1 <= ... <= n_{G-1}`` (non-decreasing; ``M = sum n_g`` entries), each
    call returns ``[M]`` int64 ``local`` such that ``local[a_g : a_g + n_g]`` is a uniformly random
    permutation of ``0..n_g-1`` (``a_g`` the segment's start), independently across segments and calls.

    Exact and vectorised, three regimes:

    * segments of size <= 6: one uniformly random row of the table of all ``n!`` permutations;
    * segments of size >= 2048: one ``torch.randperm`` each (a loop over at most ``M / 2048`` segments);
    * the sizes in between: sort packed int64 keys ``(segment, random bits, position)`` (numpy's vectorised
      value sort; an argsort is several times slower). If two entries of a segment draw the same random
      bits the whole draw is rejected and redrawn: conditioned on distinct keys the order within every
      segment is exactly uniform (the keys are i.i.d., hence exchangeable), and the event is symmetric in
      the entries so rejecting it introduces no bias. The number of random bits is chosen so that a
      rejection happens with probability <= 1/32. If too few bits remain (huge segments or very many
      segments), distinct keys come from a random permutation of the entries instead.
    """

    def __init__(
        self,
        sizes: torch.Tensor,
        *,
        table_max: int = TABLE_MAX,
        randperm_min: int = RANDPERM_MIN,
        method: str = "auto",
        rand_bits: int | None = None,
    ) -> None:
        # table_max / randperm_min / method / rand_bits exist so that tests can drive every regime
        # (including frequent rejections) on small inputs.
        if method not in ("auto", "bits", "perm"):
            raise ValueError(f"method must be 'auto', 'bits' or 'perm', got {method!r}")
        sizes = torch.as_tensor(sizes, dtype=torch.int64)
        if sizes.ndim != 1 or (sizes < 0).any() or (sizes[1:] < sizes[:-1]).any():
            raise ValueError("segment sizes must be a non-decreasing 1-D tensor of non-negative integers")
        sizes_np = sizes.numpy()
        self.total = int(sizes_np.sum())
        # Table regime: one contiguous run of segments per size 1..6.
        self.runs: list[tuple[int, int, int]] = []  # (size, first entry, number of segments)
        start = 0
        for size in range(1, table_max + 1):
            count = int(np.count_nonzero(sizes_np == size))
            if count:
                self.runs.append((size, start, count))
                start += size * count
        self.sort_start = start
        huge = sizes_np[sizes_np >= max(randperm_min, table_max + 1)]
        self.huge = [int(n) for n in huge]
        big = sizes_np[(sizes_np > table_max) & (sizes_np < max(randperm_min, table_max + 1))]
        self.sort_total = int(big.sum())
        self.method = "none"
        if len(big) == 0:
            return
        segment = np.repeat(np.arange(len(big), dtype=np.int64), big)
        seg_start = np.repeat(np.cumsum(big) - big, big)
        position = np.arange(self.sort_total, dtype=np.int64) - seg_start
        self.pos_bits = max(int(big.max() - 1).bit_length(), 1)
        seg_bits = max(int(len(big) - 1).bit_length(), 1)
        self.rand_bits = 63 - seg_bits - self.pos_bits if rand_bits is None else int(rand_bits)
        pairs = float(np.sum(big.astype(np.float64) * (big - 1) / 2))
        few_ties = self.rand_bits >= 20 and pairs <= 2.0 ** (self.rand_bits - 5)  # P(reject) <= 1/32
        if method == "bits" or (method == "auto" and few_ties):
            self.method = "bits"
            self.base = (segment << (self.rand_bits + self.pos_bits)) | position
        else:
            self.method = "perm"
            self.base = segment * self.sort_total
            self.seg_start = seg_start

    def __call__(self, generator: torch.Generator, out: np.ndarray | None = None) -> torch.Tensor:
        """Draw; ``out`` (``[M]`` int64 numpy, optional) receives the result in place."""
        out = np.empty(self.total, dtype=np.int64) if out is None else out
        for size, start, count in self.runs:
            if size == 1:
                out[start : start + count] = 0
                continue
            table = permutation_table(size)
            rows = torch.randint(0, len(table), (count,), generator=generator).numpy()
            np.take(table, rows, axis=0, out=out[start : start + size * count].reshape(count, size))
        sort_stop = self.sort_start + self.sort_total
        if self.method == "bits":
            self._sorted_bits(generator, out[self.sort_start : sort_stop])
        elif self.method == "perm":
            self._sorted_perm(generator, out[self.sort_start : sort_stop])
        start = sort_stop
        for size in self.huge:
            out[start : start + size] = torch.randperm(size, generator=generator).numpy()
            start += size
        return torch.from_numpy(out)

    def _sorted_bits(self, generator: torch.Generator, out: np.ndarray) -> None:
        for _ in range(1000):  # P(reject) <= 1/32 per try
            keys = torch.randint(0, 2**self.rand_bits, (self.sort_total,), generator=generator).numpy()
            keys <<= self.pos_bits
            keys += self.base
            keys.sort()
            high = keys >> self.pos_bits
            if not np.any(high[1:] == high[:-1]):
                np.bitwise_and(keys, (1 << self.pos_bits) - 1, out=out)
                return
        raise RuntimeError("segmented shuffle: random keys kept colliding")  # pragma: no cover

    def _sorted_perm(self, generator: torch.Generator, out: np.ndarray) -> None:
        ranks = torch.randperm(self.sort_total, generator=generator).numpy()
        keys = self.base + ranks
        keys.sort()
        keys -= self.base  # every segment keeps its place, so this recovers the sorted ranks
        inverse = np.empty_like(ranks)
        inverse[ranks] = np.arange(self.sort_total)
        np.subtract(inverse[keys], self.seg_start, out=out)


class PartialShuffle:
    """Ordered uniformly random ``k``-subsets of ``0..n_b-1`` for a batch of sizes ``n_b >= k``.

    Each call returns ``[B, k]`` int64 whose row ``b`` is the first ``k`` entries of a uniformly random
    permutation of ``0..n_b-1`` (independent rows): ``k`` steps of Fisher-Yates, each vectorised over
    the ``B`` rows, so the cost is ``O(k B)`` however large ``n_b`` is. Used for the classes of which
    an epoch of Kang's sampler reads only a small prefix of one permutation.
    """

    def __init__(self, sizes: torch.Tensor, k: int) -> None:
        sizes_np = torch.as_tensor(sizes, dtype=torch.int64).numpy()
        if sizes_np.ndim != 1 or (len(sizes_np) and sizes_np.min() < k) or k < 0:
            raise ValueError(f"every size must be >= k = {k}, got sizes {sizes_np.tolist()}")
        self.sizes = sizes_np
        self.k = int(k)
        self.starts = np.cumsum(sizes_np) - sizes_np
        self.local = np.arange(int(sizes_np.sum()), dtype=np.int64) - np.repeat(self.starts, sizes_np)

    def __call__(self, generator: torch.Generator, out: np.ndarray | None = None) -> torch.Tensor:
        """Draw; ``out`` (``[B * k]`` int64 numpy, optional) receives the rows in place."""
        rows = len(self.sizes)
        out = np.empty((rows, self.k), dtype=np.int64) if out is None else out.reshape(rows, self.k)
        if rows == 0 or self.k == 0:
            return torch.from_numpy(out)
        uniforms = torch.rand(self.k, rows, dtype=torch.float64, generator=generator).numpy()
        values = self.local.copy()
        for t in range(self.k):
            here = self.starts + t
            # j uniform in t..n-1; floor(u * (n - t)) < n - t (see the module docstring).
            there = here + (uniforms[t] * (self.sizes - t)).astype(np.int64)
            picked = values[there]
            values[there] = values[here]
            values[here] = picked
            out[:, t] = picked
        return torch.from_numpy(out)


def alias_table(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker's alias table for sampling ``0..K-1`` with probability ∝ ``weights``, vectorised.

    Args:
        weights: ``[K]`` non-negative, positive sum.

    Returns:
        ``prob`` ``[K]`` float64 and ``alias`` ``[K]`` int64: draw a bucket ``k`` uniformly, keep it with
        probability ``prob[k]``, else take ``alias[k]``.

    Vose's sweep fills light buckets (scaled weight ``w < 1``) in order from the current heavy item and
    hands a heavy item's own bucket to the next heavy item once its residual drops to <= 1. With
    ``D_i`` the cumulative deficits ``1 - w`` of the light items and ``E_j`` the cumulative excesses
    ``w - 1`` of the heavy ones, the residual of heavy ``j`` after the lights up to ``D`` is
    ``1 + E_j - D``. Hence light ``i`` is filled by the first heavy ``j`` with ``E_j > D_{i-1}``, and
    heavy ``j`` keeps ``1 + E_j - D_i`` for the first ``i >= 0`` with ``D_i >= E_j`` (``D_0 = 0``) and aliases heavy
    ``j + 1``: two prefix sums and two binary searches instead of a Python loop over classes.
    """
    weights = weights.to(torch.float64)
    k = len(weights)
    scaled = weights * (k / weights.sum())
    prob = scaled.clamp(max=1.0)
    alias = torch.arange(k)
    light = torch.nonzero(scaled < 1.0).flatten()
    heavy = torch.nonzero(scaled >= 1.0).flatten()
    # Scaled weights sum to k, so no light (or, after rounding, no heavy) item means all equal 1
    # up to rounding (e.g. one class: sqrt(15) * (1 / sqrt(15)) can round to 1 - 2^-53).
    if len(light) == 0 or len(heavy) == 0:
        return torch.ones(k, dtype=torch.float64), alias
    deficit = 1.0 - scaled[light]
    cum_deficit = torch.cumsum(deficit, 0)
    cum_excess = torch.cumsum(scaled[heavy] - 1.0, 0)
    donor = torch.searchsorted(cum_excess, cum_deficit - deficit, right=True).clamp_(max=len(heavy) - 1)
    alias[light] = heavy[donor]
    if len(heavy) > 1:
        # D_0 = 0 is included: a heavy item with w = 1 exactly is exhausted before any light item.
        cum_deficit = torch.cat([cum_deficit.new_zeros(1), cum_deficit])
        stop = torch.searchsorted(cum_deficit, cum_excess[:-1]).clamp_(max=len(light))
        prob[heavy[:-1]] = (1.0 + cum_excess[:-1] - cum_deficit[stop]).clamp_(0.0, 1.0)
        alias[heavy[:-1]] = heavy[1:]
    prob[heavy[-1]] = 1.0
    return prob, alias


def alias_draw(prob: torch.Tensor, alias: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``[n]`` i.i.d. draws from an alias table (one float64 uniform per draw)."""
    k = len(prob)
    scaled = torch.rand(n, dtype=torch.float64, generator=generator).mul_(k)
    bucket = scaled.long()  # < k: see the rounding note in the module docstring
    keep = scaled.frac_() < prob.index_select(0, bucket)  # the fractional part is uniform, independent
    return torch.where(keep, bucket, alias.index_select(0, bucket))
