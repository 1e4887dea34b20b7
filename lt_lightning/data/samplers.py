"""Long-tailed training samplers (Kang et al., "Decoupling representation and classifier for
long-tailed recognition", ICLR 2020) and an exact, unpadded evaluation sampler.

Every training sampler draws ``N = len(labels)`` samples per epoch. With ``n_c`` the number of training
samples of class ``c``:

* ``"instance"`` (:class:`InstanceBalancedSampler`, q = 1): a shuffled pass, a permutation of ``0..N-1``.
* ``"class"`` (:class:`ClassBalancedSampler`, q = 0): Kang's class-aware sampler. Classes are visited
  round-robin over a freshly shuffled class list; each visit yields ``samples_per_class`` (4)
  consecutive samples of that class, taken by cycling through a per-class shuffled index list (without
  replacement until the class is exhausted, then reshuffled). The sequence is truncated to ``N``.
* ``"power"`` (:class:`PowerSampler`): a class is drawn with probability ``n_c^q / sum_k n_k^q``
  (with replacement), then a sample of that class uniformly at random.
* ``"sqrt"`` (:class:`SquareRootSampler`): the power sampler with q = 1/2.
* ``"progressive"`` (:class:`ProgressivelyBalancedSampler`): like the power sampler, with the
  epoch-dependent class weight ``(1 - λ_e) n_c + λ_e N / K``, ``λ_e = e / (T - 1)``.

Randomness: the order of an epoch depends only on ``(seed, epoch)``. It is drawn from a local
``torch.Generator`` seeded from both (never from the global torch/numpy RNG), so every DDP rank draws
the same global order and :meth:`LongTailSampler.global_indices` is reproducible.

DDP: all samplers subclass :class:`torch.utils.data.DistributedSampler` on purpose. Lightning
(``use_distributed_sampler=True``, the default) wraps any other sampler in its
``DistributedSamplerWrapper``, which materialises the epoch, re-shuffles it and takes a strided shard.
It leaves a ``DistributedSampler`` untouched (``DataConnector._requires_distributed_sampler``) and
calls its ``set_epoch`` at the start of every epoch (``_set_sampler_epoch`` in the fit loop), which is
exactly what these samplers need. Rank ``r`` of ``R`` takes the *contiguous* slice
``[r * ceil(N/R), (r + 1) * ceil(N/R))`` of the global order padded like torch's ``DistributedSampler``
with ``drop_last=False`` (the list is extended to ``ceil(N/R) * R`` entries by repeating it from its
start). Contiguous rather than strided slices keep Kang's 4-sample class blocks on one rank; the
concatenation of the ranks' slices is the padded single-process epoch.

Classes with zero samples (possible when ``num_classes`` is given and a class is absent from
``labels``) are never drawn by any sampler: they take no part in Kang's rounds, get probability 0 in
the power sampler, and ``K`` in the progressive weight ``N / K`` counts the non-empty classes only.

Epochs are independent: every epoch starts afresh from ``(seed, epoch)`` (Kang's reference code keeps
its per-class iterators running across epochs instead). Resuming from a checkpoint needs no sampler
state: Lightning calls ``set_epoch`` with the restored epoch before iterating.

Cost: building one epoch is vectorised (no Python loop over samples or classes). For an
iNaturalist-2018-sized label set (N = 437,513, K = 8,142) every sampler costs a few times one
``torch.randperm(N)``; see ``bench/samplers.py``.

Evaluation: :class:`DistributedEvalSampler` gives every rank a disjoint, unpadded, in-order block, so
each sample is seen exactly once over all ranks (exact metrics). Ranks may then run different numbers of
steps; do not put per-step collectives (``self.log(..., sync_dist=True)`` in a step) on such a loader.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Sequence, Sized

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

__all__ = [
    "BATCH_SAMPLERS",
    "SAMPLERS",
    "ClassBalancedSampler",
    "DistributedEvalSampler",
    "InstanceBalancedSampler",
    "LongTailSampler",
    "PowerSampler",
    "ProgressivelyBalancedSampler",
    "SquareRootSampler",
    "StratifiedBatchSampler",
    "build_sampler",
    "progressive_lambda",
]

SAMPLERS = ("instance", "class", "sqrt", "power", "progressive")
#: samplers whose epoch is a list of whole batches (not N independent draws): need the batch size
BATCH_SAMPLERS = ("stratified",)


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def _as_labels(labels: object, num_classes: int | None) -> tuple[torch.Tensor, int]:
    """Validate ``labels`` ([N] integers in ``0..num_classes-1``) and return them as int64 and K."""
    if isinstance(labels, torch.Tensor):
        tensor = labels.detach().cpu()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(labels))
        except (TypeError, ValueError) as err:
            raise TypeError(f"labels must be a 1-D sequence of integers, got {labels!r}") from err
    if tensor.ndim != 1:
        raise ValueError(f"labels must be one-dimensional [N], got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError("labels must not be empty: a sampler needs at least one sample")
    if tensor.dtype == torch.bool or tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise TypeError(f"labels must have an integer dtype, got {tensor.dtype}")
    tensor = tensor.to(torch.int64)
    low, high = int(tensor.min()), int(tensor.max())
    if low < 0:
        raise ValueError(f"labels must be >= 0, got the label {low}")
    if num_classes is None:
        num_classes = high + 1
    elif isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    if high >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes}), got {high}")
    return tensor.contiguous(), num_classes


def _resolve_world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """Default the world size / rank from an initialised process group, else to 1 / 0."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if isinstance(num_replicas, bool) or int(num_replicas) != num_replicas or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}")
    if isinstance(rank, bool) or int(rank) != rank or not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be an integer in 0..{int(num_replicas) - 1}, got {rank!r}")
    return int(num_replicas), int(rank)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch)``; distinct pairs give unrelated streams.

    ``seed + epoch`` (torch's choice) would make ``(0, 1)`` and ``(1, 0)`` collide; numpy's
    ``SeedSequence`` hashes the pair instead.
    """
    if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


_TABLE_MAX = 6  # segments up to this size are shuffled by drawing a row of a table of all n! orders
_RANDPERM_MIN = 2048  # segments from this size on get their own torch.randperm (loop cost per entry tiny)
_PARTIAL_STEP_COST = 500  # cost of one vectorised Fisher-Yates step, in sorted entries (for the choice)


@functools.cache
def _permutation_table(size: int) -> np.ndarray:
    """``[size!, size]`` int64: every permutation of ``0..size-1``, one per row."""
    return np.array(list(itertools.permutations(range(size))), dtype=np.int64).reshape(-1, size)


class _SegmentedShuffle:
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
        table_max: int = _TABLE_MAX,
        randperm_min: int = _RANDPERM_MIN,
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
            table = _permutation_table(size)
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


class _PartialShuffle:
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
            # j uniform in t..n-1; floor(u * (n - t)) < n - t (see _draw_with_replacement).
            there = here + (uniforms[t] * (self.sizes - t)).astype(np.int64)
            picked = values[there]
            values[there] = values[here]
            values[here] = picked
            out[:, t] = picked
        return torch.from_numpy(out)


def _alias_table(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def _alias_draw(prob: torch.Tensor, alias: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``[n]`` i.i.d. draws from an alias table (one float64 uniform per draw)."""
    k = len(prob)
    scaled = torch.rand(n, dtype=torch.float64, generator=generator).mul_(k)
    bucket = scaled.long()  # < k: see the rounding argument in _draw_with_replacement
    keep = scaled.frac_() < prob.index_select(0, bucket)  # the fractional part is uniform, independent
    return torch.where(keep, bucket, alias.index_select(0, bucket))


def _power_class_weights(counts: torch.Tensor, q: float) -> torch.Tensor:
    """``n_c^q`` in float64, exactly 0 for empty classes (``0**0`` would be 1)."""
    counts = counts.to(torch.float64)
    return torch.where(counts > 0, counts.clamp_min(1.0).pow(q), torch.zeros_like(counts))


def progressive_lambda(epoch: int, num_epochs: int) -> float:
    """Interpolation weight of the progressively-balanced sampler (Kang et al., ICLR 2020).

    ``λ_e = e / (T - 1)`` for ``e = 0..T-1`` (the paper writes ``e / T``, which never reaches the
    class-balanced end; we follow the reference's ``T - 1`` so the last epoch is class-balanced).
    Epochs ``e >= T - 1`` give 1 (clamped). With ``T = 1`` the formula is 0/0: epoch 0 gets λ = 0
    (instance-balanced, the start of the schedule) and any later epoch λ = 1.
    """
    if isinstance(num_epochs, bool) or int(num_epochs) != num_epochs or num_epochs < 1:
        raise ValueError(f"num_epochs must be a positive integer, got {num_epochs!r}")
    if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    if num_epochs == 1:
        return 0.0 if epoch == 0 else 1.0
    return min(epoch / (num_epochs - 1), 1.0)


# --------------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------------


class LongTailSampler(DistributedSampler):
    """Base class: an epoch-seeded global order of ``N`` sample indices, sliced contiguously per rank.

    Subclasses implement :meth:`_draw`. Subclassing :class:`~torch.utils.data.DistributedSampler` keeps
    Lightning from wrapping the sampler (see the module docstring); ``DistributedSampler.__init__`` is
    not called because it needs an initialised process group when ``num_replicas`` is ``None``.

    Args:
        labels: ``[N]`` integer class labels (list, numpy array or tensor).
        seed: base seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        num_replicas: world size; defaults to ``torch.distributed``'s if initialised, else 1.
        rank: this process's rank; defaults to ``torch.distributed``'s if initialised, else 0.
        num_classes: K; defaults to ``max(labels) + 1``. Classes without samples are never drawn.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        labels, num_classes = _as_labels(labels, num_classes)
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.labels = labels
        self.num_classes = num_classes
        self.num_replicas, self.rank = _resolve_world(num_replicas, rank)
        self.seed = int(seed)
        self.epoch = 0
        self._skip = 0  # samples of this rank's slice to leave out at the next __iter__ (mid-epoch resume)
        self.shuffle = True
        self.drop_last = False
        self.num_samples = math.ceil(len(labels) / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        # Class-major layout shared by the subclasses: the samples of class c are
        # order[offsets[c] : offsets[c] + class_counts[c]].
        self.class_counts = torch.bincount(labels, minlength=num_classes)
        self.order = torch.argsort(labels, stable=True)
        self.offsets = torch.cumsum(self.class_counts, 0) - self.class_counts
        self.present = torch.nonzero(self.class_counts).flatten()  # [K'] classes with samples
        self._present_sizes = self.class_counts.index_select(0, self.present)
        self._present_starts = self.offsets.index_select(0, self.present)

    @property
    def num_total(self) -> int:
        """N, the number of samples drawn per epoch over all ranks (before padding)."""
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields (Lightning calls this every epoch)."""
        if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def global_indices(self, epoch: int) -> torch.LongTensor:
        """The single-process order of ``epoch``: ``[N]`` int64 sample indices.

        Depends only on ``(seed, epoch)`` (and the labels), drawn from a local generator.
        """
        return self._draw(epoch, _epoch_generator(self.seed, epoch))

    def _draw(self, epoch: int, generator: torch.Generator) -> torch.LongTensor:
        raise NotImplementedError

    def skip_next(self, num_samples: int) -> None:
        """Make the next :meth:`__iter__` start ``num_samples`` into this rank's slice of the epoch.

        Used once, by a mid-epoch resume (:class:`~lt_lightning.data.resumable.ResumableDataLoader`):
        the resumed epoch continues with the very samples the interrupted one would have drawn next.
        """
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or not 0 <= num_samples:
            raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
        if num_samples > self.num_samples:
            raise ValueError(f"cannot skip {num_samples} samples of an epoch of {self.num_samples} per rank")
        self._skip = int(num_samples)

    def __iter__(self) -> Iterator[int]:
        indices = self.global_indices(self.epoch)
        if self.total_size > len(indices):  # torch's padding: repeat the list from its start
            repeats = math.ceil(self.total_size / len(indices))
            indices = indices.repeat(repeats)[: self.total_size]
        start = self.rank * self.num_samples
        skip, self._skip = self._skip, 0
        return iter(indices[start + skip : start + self.num_samples].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(N={self.num_total}, num_classes={self.num_classes}, seed={self.seed}, "
            f"rank={self.rank}/{self.num_replicas}, epoch={self.epoch})"
        )

    def _draw_with_replacement(
        self, prob: torch.Tensor, alias: torch.Tensor, generator: torch.Generator
    ) -> torch.LongTensor:
        """``N`` i.i.d. draws: a class from the alias table over :attr:`present`, then a uniform sample of it.

        Args:
            prob, alias: ``[K']`` alias table (:func:`_alias_table`) over the non-empty classes.
        """
        n = self.num_total
        local = _alias_draw(prob, alias, n, generator)
        sizes = self._present_sizes.index_select(0, local)
        # floor(u * n_c) < n_c for every double u <= 1 - 2^-53 (torch.rand's largest value): the exact
        # product n_c - n_c 2^-53 is within half an ulp of the double just below n_c (or is that double
        # when n_c is a power of 2), so round-to-nearest never reaches n_c; smaller u give smaller
        # products.
        within = torch.rand(n, dtype=torch.float64, generator=generator).mul_(sizes).long()
        return self.order.index_select(0, self._present_starts.index_select(0, local).add_(within))


class InstanceBalancedSampler(LongTailSampler):
    """Instance-balanced sampling (q = 1): every epoch is a random permutation of ``0..N-1``.

    Kang et al., ICLR 2020, the default sampler of joint (stage-1) training.
    """

    def _draw(self, epoch: int, generator: torch.Generator) -> torch.LongTensor:
        return torch.randperm(self.num_total, generator=generator)


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
    one :class:`_SegmentedShuffle` (as are the ``R`` class permutations); a large class of which only
    a prefix of one permutation is read gets that prefix from :class:`_PartialShuffle` instead.

    Args:
        labels, seed, num_replicas, rank, num_classes: see :class:`LongTailSampler`.
        samples_per_class: consecutive samples per class visit (Kang uses 4).
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
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
        self._visit_shuffle = _SegmentedShuffle(torch.full((self.num_rounds,), num_present))
        # Visit v belongs to round v // K' and reads its class's stream from position (v // K') * s.
        self._visit_stream_offset = torch.arange(self.num_visits) // num_present * s
        # Stream layout: every class owns a block of stream entries. A class with n_c >= R s needs only
        # the first R s entries of one permutation; if that is cheaper (few steps, much skipped work),
        # those come from a partial Fisher-Yates shuffle and the block holds R s entries. The other
        # classes' blocks hold ceil(R s / n_c) whole permutations, laid out first, by ascending class
        # size, so that the segment sizes are non-decreasing (as _SegmentedShuffle requires).
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
        self._stream_shuffle = _SegmentedShuffle(torch.repeat_interleave(sizes[full], perms[full]))
        self._prefix_shuffle = _PartialShuffle(sizes[layout[prefix[layout]]], needed)

    def _draw(self, epoch: int, generator: torch.Generator) -> torch.LongTensor:
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


class PowerSampler(LongTailSampler):
    """Power sampling: class ``c`` with probability ``n_c^q / sum_k n_k^q``, with replacement.

    Kang et al., ICLR 2020, Eq. (1): q = 1 instance-balanced (with replacement), q = 0 class-balanced
    (with replacement, unlike :class:`ClassBalancedSampler`), q = 1/2 square-root sampling. After the
    class, a sample of that class is drawn uniformly at random.

    Args:
        labels, seed, num_replicas, rank, num_classes: see :class:`LongTailSampler`.
        q: exponent in ``[0, 1]``.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        q: float,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be a number in [0, 1], got {q!r}")
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, num_classes=num_classes)
        self.q = float(q)
        self.class_weights = _power_class_weights(self.class_counts, self.q)
        self._alias = _alias_table(self.class_weights.index_select(0, self.present))

    def class_probabilities(self) -> torch.Tensor:
        """``[K]`` float64 probability of drawing each class (0 for empty classes)."""
        return self.class_weights / self.class_weights.sum()

    def _draw(self, epoch: int, generator: torch.Generator) -> torch.LongTensor:
        return self._draw_with_replacement(*self._alias, generator)


class SquareRootSampler(PowerSampler):
    """Square-root sampling: :class:`PowerSampler` with q = 1/2 (Mahajan et al., 2018; Kang et al.)."""

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(
            labels, q=0.5, seed=seed, num_replicas=num_replicas, rank=rank, num_classes=num_classes
        )


class ProgressivelyBalancedSampler(LongTailSampler):
    """Progressively-balanced sampling (Kang et al., ICLR 2020, Sec. 3).

    At epoch ``e`` class ``c`` is drawn (with replacement) with probability proportional to
    ``(1 - λ_e) n_c + λ_e N / K``, ``λ_e`` from :func:`progressive_lambda` (0 at the first epoch,
    1 from epoch ``T - 1`` on), then a sample of that class uniformly at random. ``K`` counts the
    non-empty classes, so λ = 1 is uniform over them and empty classes are never drawn.

    Args:
        labels, seed, num_replicas, rank, num_classes: see :class:`LongTailSampler`.
        num_epochs: T >= 1, the length of the schedule.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        num_epochs: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        progressive_lambda(0, num_epochs)  # validates num_epochs
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, num_classes=num_classes)
        self.num_epochs = int(num_epochs)

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        """``[K]`` float64 class probabilities at ``epoch`` (0 for empty classes)."""
        lam = progressive_lambda(epoch, self.num_epochs)
        counts = self.class_counts.to(torch.float64)
        uniform = self.num_total / len(self.present)
        weights = torch.where(counts > 0, (1.0 - lam) * counts + lam * uniform, torch.zeros_like(counts))
        return weights / weights.sum()

    def _draw(self, epoch: int, generator: torch.Generator) -> torch.LongTensor:
        weights = self.class_probabilities(epoch).index_select(0, self.present)
        return self._draw_with_replacement(*_alias_table(weights), generator)


class StratifiedBatchSampler(LongTailSampler):
    """Stratified batches (Markou et al., ``nc/datasets.py`` ``StratifiedBatchSampler``): every batch holds
    each class in the proportion of the training set.

    Markou's sampler yields the test folds of ``StratifiedKFold(n_splits=N // B)``: each epoch every sample
    once, and each class's samples spread evenly over the ``N // B`` batches. Here each epoch drops
    ``N mod B`` random samples (a different few every epoch) so that every batch has exactly ``B``
    samples (Markou's have ``B`` or ``B + 1``); each class is then dealt round-robin over the batches, so
    class ``c`` has ``floor`` or ``ceil`` of ``n_c (N // B) B / N / (N // B)`` samples in every batch.
    Under DDP the global batch ``b`` is the union of the ranks' ``b``-th batches: rank ``r`` takes the
    ``r``-th ``B / R`` of every (shuffled) global batch.

    Args:
        labels: ``[N]`` integer class labels.
        batch_size: the GLOBAL batch size B (summed over ranks; divisible by the world size).
        seed, num_replicas, rank, num_classes: as :class:`LongTailSampler`.
    """

    def __init__(self, labels, *, batch_size: int, **kwargs) -> None:
        super().__init__(labels, **kwargs)
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
        return self.num_batches * self.batch_size

    def _draw(self, epoch: int, generator: torch.Generator) -> torch.LongTensor:
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
        return batches.index_select(0, torch.randperm(self.num_batches, generator=generator))

    def global_indices(self, epoch: int) -> torch.LongTensor:
        """``[num_batches * B]`` indices: consecutive blocks of ``B`` are the global batches."""
        return self._draw(epoch, _epoch_generator(self.seed, epoch)).flatten()

    def __iter__(self) -> Iterator[int]:
        batches = self._draw(self.epoch, _epoch_generator(self.seed, self.epoch))  # [num_batches, B]
        per_rank = self.batch_size // self.num_replicas
        mine = batches[:, self.rank * per_rank : (self.rank + 1) * per_rank]
        return iter(mine.flatten().tolist())


def build_sampler(
    name: str,
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    seed: int = 0,
    q: float | None = None,
    num_epochs: int | None = None,
    samples_per_class: int = 4,
    num_replicas: int | None = None,
    rank: int | None = None,
    num_classes: int | None = None,
    batch_size: int | None = None,
) -> LongTailSampler:
    """Build a training sampler by name (one of :data:`SAMPLERS`).

    ``q`` is required by ``"power"`` and rejected by the other names (it would contradict them);
    ``num_epochs`` is required by ``"progressive"`` and ignored otherwise (a datamodule may always pass
    the run length); ``samples_per_class`` is used by ``"class"`` only; ``batch_size`` (the global batch)
    is required by ``"stratified"``.

    >>> build_sampler("sqrt", [0, 0, 0, 1]).q
    0.5
    """
    common = {"seed": seed, "num_replicas": num_replicas, "rank": rank, "num_classes": num_classes}
    if name not in SAMPLERS + BATCH_SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS + BATCH_SAMPLERS)}")
    if q is not None and name != "power":
        raise ValueError(f"q={q!r} only applies to the 'power' sampler, not to {name!r}")
    if name == "instance":
        return InstanceBalancedSampler(labels, **common)
    if name == "class":
        return ClassBalancedSampler(labels, samples_per_class=samples_per_class, **common)
    if name == "sqrt":
        return SquareRootSampler(labels, **common)
    if name == "stratified":
        if batch_size is None:
            raise ValueError("the 'stratified' sampler needs batch_size (the global training batch)")
        return StratifiedBatchSampler(labels, batch_size=batch_size, **common)
    if name == "power":
        if q is None:
            raise ValueError("the 'power' sampler needs q (a number in [0, 1])")
        return PowerSampler(labels, q=q, **common)
    if num_epochs is None:
        raise ValueError("the 'progressive' sampler needs num_epochs (the schedule length T >= 1)")
    return ProgressivelyBalancedSampler(labels, num_epochs=num_epochs, **common)


class DistributedEvalSampler(DistributedSampler):
    """Exact evaluation sharding: rank ``r`` gets ``range(floor(r N / R), floor((r + 1) N / R))``.

    Disjoint, unpadded, in-order blocks whose sizes differ by at most one, so every sample is counted
    exactly once over the ranks. A ``DistributedSampler`` subclass so that Lightning does not replace
    it with its padding sampler. ``set_epoch`` is accepted and has no effect.

    Args:
        data_source: the dataset (anything with ``len``) or its length N >= 0.
        num_replicas: world size; defaults to ``torch.distributed``'s if initialised, else 1.
        rank: this process's rank; defaults to ``torch.distributed``'s if initialised, else 0.

    >>> list(DistributedEvalSampler(5, num_replicas=2, rank=1))
    [2, 3, 4]
    """

    def __init__(
        self, data_source: Sized | int, *, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        if isinstance(data_source, bool):
            raise TypeError(f"data_source must be a dataset or a length, got {data_source!r}")
        if isinstance(data_source, (int, np.integer)):
            length = int(data_source)
        elif isinstance(data_source, Sized):
            length = len(data_source)
        else:
            raise TypeError(f"data_source must be a dataset with len() or a length, got {data_source!r}")
        if length < 0:
            raise ValueError(f"the dataset length must be >= 0, got {length}")
        self.dataset = data_source
        self.num_replicas, self.rank = _resolve_world(num_replicas, rank)
        self.epoch = 0
        self.shuffle = False
        self.drop_last = False
        self.seed = 0
        self.start = self.rank * length // self.num_replicas
        self.stop = (self.rank + 1) * length // self.num_replicas
        self.num_samples = self.stop - self.start
        self.total_size = length

    def set_epoch(self, epoch: int) -> None:
        """No effect on the order (kept for the ``DistributedSampler`` interface)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.num_samples
