"""The base of every training sampler, the exact evaluation sampler, and their shared helpers.

:class:`LongTailSampler` owns what all training samplers share: label validation, the class-major
layout, the world (``num_replicas`` / ``rank``), the epoch, the epoch's generator and the mid-epoch
skip. A subclass implements :meth:`~LongTailSampler._draw` (the global order of one epoch); the rank's
share of it comes from :meth:`~LongTailSampler.rank_indices` (a contiguous slice of the padded order,
overridden only by samplers whose epoch is a list of whole batches). ``__iter__`` lives here only: it
takes this rank's indices from :meth:`~LongTailSampler.rank_indices` and leaves out the first
``skip_next`` of them, so every sampler resumes mid-epoch the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence, Sized
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DistributedSampler

from lt_lightning.data.samplers.kernels import alias_draw

__all__ = ["DistributedEvalSampler", "LongTailSampler", "as_labels", "epoch_generator", "resolve_world"]

#: what a sampler accepts as labels: ``[N]`` integers as a list, numpy array or tensor
Labels = Sequence[int] | np.ndarray | Tensor


def as_labels(labels: object, num_classes: int | None) -> tuple[Tensor, int]:
    """Validate ``labels`` ([N] integers in ``0..num_classes-1``) and return them as int64 and K."""
    if isinstance(labels, Tensor):
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


def resolve_world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
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


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch)``; distinct pairs give unrelated streams.

    ``seed + epoch`` (torch's choice) would make ``(0, 1)`` and ``(1, 0)`` collide; numpy's
    ``SeedSequence`` hashes the pair instead.
    """
    if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


class LongTailSampler(DistributedSampler):
    """Base class: an epoch-seeded global order of ``N`` sample indices, sliced contiguously per rank.

    Subclasses implement :meth:`_draw`. Subclassing :class:`~torch.utils.data.DistributedSampler` keeps
    Lightning from wrapping the sampler (see :mod:`lt_lightning.data.samplers`);
    ``DistributedSampler.__init__`` is not called because it needs an initialised process group when
    ``num_replicas`` is ``None``.

    Args:
        labels: ``[N]`` integer class labels (list, numpy array or tensor).
        seed: base seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        num_replicas: world size; defaults to ``torch.distributed``'s if initialised, else 1.
        rank: this process's rank; defaults to ``torch.distributed``'s if initialised, else 0.
        num_classes: K; defaults to ``max(labels) + 1``. Classes without samples are never drawn.
    """

    #: the keyword options of :func:`~lt_lightning.data.samplers.build_sampler` this sampler takes
    #: (beyond seed, world and ``num_classes``); an option left ``None`` there is an error
    build_options: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        labels: Labels,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        labels, num_classes = as_labels(labels, num_classes)
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.labels = labels
        self.num_classes = num_classes
        self.num_replicas, self.rank = resolve_world(num_replicas, rank)
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

    def global_indices(self, epoch: int) -> Tensor:
        """The single-process order of ``epoch``: ``[num_total]`` int64 sample indices.

        Depends only on ``(seed, epoch)`` (and the labels), drawn from a local generator.
        """
        return self._draw(epoch, epoch_generator(self.seed, epoch))

    def _draw(self, epoch: int, generator: torch.Generator) -> Tensor:
        """The global order of ``epoch`` from ``generator``: ``[num_total]`` int64 (the subclass hook)."""
        raise NotImplementedError

    def rank_indices(self, epoch: int) -> Tensor:
        """This rank's ``[num_samples]`` indices of ``epoch``: its contiguous slice of the padded order.

        The global order is padded like torch's ``DistributedSampler`` with ``drop_last=False``
        (extended to ``total_size`` entries by repeating it from its start); rank ``r`` takes entries
        ``[r * num_samples, (r + 1) * num_samples)``, so the ranks' slices concatenate to the padded
        single-process epoch.
        """
        indices = self.global_indices(epoch)
        if self.total_size > len(indices):  # torch's padding: repeat the list from its start
            repeats = math.ceil(self.total_size / len(indices))
            indices = indices.repeat(repeats)[: self.total_size]
        start = self.rank * self.num_samples
        return indices[start : start + self.num_samples]

    def skip_next(self, num_samples: int) -> None:
        """Make the next :meth:`__iter__` start ``num_samples`` into this rank's slice of the epoch.

        Used once, by a mid-epoch resume (:mod:`lt_lightning.data.loading`): the resumed epoch
        continues with the very samples the interrupted one would have drawn next.
        """
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or not 0 <= num_samples:
            raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
        if num_samples > self.num_samples:
            raise ValueError(f"cannot skip {num_samples} samples of an epoch of {self.num_samples} per rank")
        self._skip = int(num_samples)

    def __iter__(self) -> Iterator[int]:
        indices = self.rank_indices(self.epoch)
        skip, self._skip = self._skip, 0
        return iter(indices[skip:].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(N={self.num_total}, num_classes={self.num_classes}, seed={self.seed}, "
            f"rank={self.rank}/{self.num_replicas}, epoch={self.epoch})"
        )

    def _draw_with_replacement(self, prob: Tensor, alias: Tensor, generator: torch.Generator) -> Tensor:
        """``N`` i.i.d. draws: a class from the alias table over :attr:`present`, then a uniform sample of it.

        Args:
            prob, alias: ``[K']`` alias table (:func:`~lt_lightning.data.samplers.kernels.alias_table`)
                over the non-empty classes.
        """
        n = self.num_total
        local = alias_draw(prob, alias, n, generator)
        sizes = self._present_sizes.index_select(0, local)
        # floor(u * n_c) < n_c: the rounding note of lt_lightning.data.samplers.kernels.
        within = torch.rand(n, dtype=torch.float64, generator=generator).mul_(sizes).long()
        return self.order.index_select(0, self._present_starts.index_select(0, local).add_(within))


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
        self.dataset = data_source  # type: ignore[assignment]  # a length is accepted too
        self.num_replicas, self.rank = resolve_world(num_replicas, rank)
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
