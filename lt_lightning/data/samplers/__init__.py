"""Long-tailed training samplers (Kang et al., "Decoupling representation and classifier for
long-tailed recognition", ICLR 2020; Markou et al., NeurIPS 2024) and an exact, unpadded evaluation
sampler. :data:`SAMPLERS` is the one table of named samplers; :func:`build_sampler` builds from it.

Every training sampler but ``"stratified"`` draws ``N = len(labels)`` samples per epoch. With ``n_c``
the number of training samples of class ``c``:

* ``"instance"`` (:class:`InstanceBalancedSampler`, q = 1): a shuffled pass, a permutation of ``0..N-1``.
* ``"class"`` (:class:`ClassBalancedSampler`, q = 0): Kang's class-aware sampler. Classes are visited
  round-robin over a freshly shuffled class list; each visit yields ``samples_per_class`` (4)
  consecutive samples of that class, taken by cycling through a per-class shuffled index list (without
  replacement until the class is exhausted, then reshuffled). The sequence is truncated to ``N``.
* ``"sqrt"`` (:class:`SquareRootSampler`): the power sampler with q = 1/2.
* ``"power"`` (:class:`PowerSampler`): a class is drawn with probability ``n_c^q / sum_k n_k^q``
  (with replacement), then a sample of that class uniformly at random.
* ``"progressive"`` (:class:`ProgressivelyBalancedSampler`): like the power sampler, with the
  epoch-dependent class weight ``(1 - λ_e) n_c + λ_e N / K``, ``λ_e = e / (T - 1)``.
* ``"stratified"`` (:class:`StratifiedBatchSampler`): Markou's batches, each holding every class in its
  training proportion; ``(N // B) * B`` samples per epoch, every sample at most once.

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
concatenation of the ranks' slices is the padded single-process epoch. (The stratified sampler instead
gives each rank its share of every global batch.)

Classes with zero samples (possible when ``num_classes`` is given and a class is absent from
``labels``) are never drawn by any sampler: they take no part in Kang's rounds, get probability 0 in
the power sampler, and ``K`` in the progressive weight ``N / K`` counts the non-empty classes only.

Epochs are independent: every epoch starts afresh from ``(seed, epoch)`` (Kang's reference code keeps
its per-class iterators running across epochs instead). Resuming needs no sampler state: Lightning
calls ``set_epoch`` with the restored epoch before iterating, and a mid-epoch resume calls
:meth:`LongTailSampler.skip_next` (:mod:`lt_lightning.data.loading`).

Cost: building one epoch is vectorised (no Python loop over samples or classes). For an
iNaturalist-2018-sized label set (N = 437,513, K = 8,142) every sampler costs a few times one
``torch.randperm(N)``; see ``bench/samplers.py``.

Evaluation: :class:`DistributedEvalSampler` gives every rank a disjoint, unpadded, in-order block, so
each sample is seen exactly once over all ranks (exact metrics). Ranks may then run different numbers of
steps; do not put per-step collectives (``self.log(..., sync_dist=True)`` in a step) on such a loader.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from lt_lightning.data.samplers.base import DistributedEvalSampler, Labels, LongTailSampler
from lt_lightning.data.samplers.class_balanced import ClassBalancedSampler
from lt_lightning.data.samplers.instance import InstanceBalancedSampler
from lt_lightning.data.samplers.power import PowerSampler, SquareRootSampler
from lt_lightning.data.samplers.progressive import ProgressivelyBalancedSampler, progressive_lambda
from lt_lightning.data.samplers.stratified import StratifiedBatchSampler

__all__ = [
    "SAMPLERS",
    "SAMPLER_NAMES",
    "ClassBalancedSampler",
    "DistributedEvalSampler",
    "InstanceBalancedSampler",
    "LongTailSampler",
    "PowerSampler",
    "ProgressivelyBalancedSampler",
    "SamplerName",
    "SquareRootSampler",
    "StratifiedBatchSampler",
    "build_sampler",
    "progressive_lambda",
]

#: the names of the training samplers (the datamodules' ``sampler`` option)
SamplerName = Literal["instance", "class", "sqrt", "power", "progressive", "stratified"]
SAMPLER_NAMES: tuple[str, ...] = get_args(SamplerName)

#: the one table of named samplers: name -> class, in the order of :data:`SAMPLER_NAMES`
SAMPLERS: dict[str, type[LongTailSampler]] = {
    "instance": InstanceBalancedSampler,
    "class": ClassBalancedSampler,
    "sqrt": SquareRootSampler,
    "power": PowerSampler,
    "progressive": ProgressivelyBalancedSampler,
    "stratified": StratifiedBatchSampler,
}

#: what each build option must be, for the error when a sampler that needs it does not get it
_OPTION_HINTS = {
    "q": "a number in [0, 1]",
    "num_epochs": "the schedule length T >= 1",
    "batch_size": "the global training batch",
    "samples_per_class": "a positive integer",
}


def build_sampler(
    name: str,
    labels: Labels,
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
    """Build a training sampler by name (a key of :data:`SAMPLERS`).

    Each sampler takes the options in its ``build_options``: ``q`` is required by ``"power"`` and
    rejected by the other names (it would contradict them); ``num_epochs`` is required by
    ``"progressive"`` and ignored otherwise (a datamodule may always pass the run length);
    ``samples_per_class`` is used by ``"class"`` only; ``batch_size`` (the global batch) is required by
    ``"stratified"`` and ignored otherwise.

    >>> build_sampler("sqrt", [0, 0, 0, 1]).q
    0.5
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}")
    cls = SAMPLERS[name]
    if q is not None and "q" not in cls.build_options:
        takes_q = " or ".join(repr(n) for n, c in SAMPLERS.items() if "q" in c.build_options)
        raise ValueError(f"q={q!r} only applies to the {takes_q} sampler, not to {name!r}")
    given = {
        "q": q,
        "num_epochs": num_epochs,
        "samples_per_class": samples_per_class,
        "batch_size": batch_size,
    }
    options: dict[str, Any] = {option: given[option] for option in cls.build_options}
    for option, value in options.items():
        if value is None:
            raise ValueError(f"the {name!r} sampler needs {option} ({_OPTION_HINTS[option]})")
    return cls(labels, seed=seed, num_replicas=num_replicas, rank=rank, num_classes=num_classes, **options)
