"""The one mid-epoch resume-position mechanism of the training loaders (exact mid-epoch resume).

Lightning saves the ``state_dict`` of every training loader that has one (its ``_Stateful`` protocol)
with the fit loop, and loads it before the resumed epoch's iterator is created. Our samplers draw each
epoch's order from ``(seed, epoch)`` alone (and the device pipeline its crops and flips from ``(seed,
epoch, rank)``), so the position is one number: the samples of this rank's slice of the epoch already
trained (batches trained × batch size). On load the sampler skips that many samples
(:meth:`~lt_lightning.data.samplers.LongTailSampler.skip_next`), and the resumed epoch trains exactly the
batches the interrupted one had left. An exact resume needs the same batch size and the same number of
processes (each rank's slice depends on it), so the state records both and loading checks them.

Both training loaders take the position from :class:`ResumePosition`: :class:`ResumableDataLoader` (the
``DataLoader`` path) and :class:`~lt_lightning.data.device_pipeline.DeviceLoader`.

State: ``{"samples_done": int, "batch_size": int, "num_replicas": int}``. Checkpoints written before
this module hold ``{"batches_done": int, "batch_size": int}``; they are read as ``batches_done ×
batch_size`` samples with the world size unchecked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from lt_lightning.compat import batches_trained_this_epoch

__all__ = ["ResumableDataLoader", "ResumePosition", "track_position", "warn_if_one_short_batch"]


class ResumePosition:
    """The position within the epoch of a training loader, as its ``state_dict`` / ``load_state_dict``.

    The loader class provides ``sampler`` (with ``skip_next`` and, for the world size,
    ``num_replicas``), ``batch_size`` and ``__len__`` (batches per epoch). ``batches_trained`` is a
    callable returning the batches of the current epoch already trained (:func:`track_position` sets it
    from the trainer's loop); it is read when a checkpoint is written, so a loader-side count (which runs
    ahead with prefetching workers) is never used.
    """

    sampler: Any
    batch_size: int | None
    __len__: Callable[[], int]  # batches per epoch (the loader class's own; declared, not defined here)
    #: batches of the current epoch already trained (set by :func:`track_position`); None: not tracked
    batches_trained: Callable[[], int] | None = None

    def _num_replicas(self) -> int:
        return int(getattr(self.sampler, "num_replicas", 1))

    def state_dict(self) -> dict[str, Any]:
        """``{"samples_done", "batch_size", "num_replicas"}``: this rank's position within the epoch."""
        batches = int(self.batches_trained()) if self.batches_trained is not None else 0
        batch_size = int(self.batch_size or 1)
        return {
            "samples_done": batches * batch_size,
            "batch_size": batch_size,
            "num_replicas": self._num_replicas(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next epoch's iteration continue after the samples a mid-epoch checkpoint had trained.

        A position of 0 (an end-of-epoch checkpoint: the resumed run starts the next epoch) skips nothing
        and checks nothing, so a run may resume at an epoch boundary with another batch size or process
        count; so does one that covers the loader's whole epoch with the same batch size and process count.

        Raises:
            ValueError: a mid-epoch position saved with another batch size or number of processes, or a
                sampler without ``skip_next``.
        """
        batch_size = state.get("batch_size")
        if "samples_done" in state:
            samples, replicas = int(state["samples_done"]), state.get("num_replicas")
        else:  # written before the world size was recorded: {"batches_done": n, "batch_size": b}
            samples, replicas = int(state.get("batches_done", 0)) * int(batch_size or 0), None
        world = self._num_replicas()
        same_world = replicas is None or replicas == world
        whole_epoch = batch_size == self.batch_size and samples >= len(self) * int(batch_size or 0)
        # a position covering this run's whole epoch is an epoch end only with the same world: with
        # another, the same samples are another share of the epoch (issue 20: 1 -> 2 processes resumed
        # 6 of 13 batches as a finished epoch of 6)
        if samples == 0 or (same_world and whole_epoch):
            return
        differ = []
        if batch_size != self.batch_size:
            differ.append(f"batch size {batch_size} (this run: {self.batch_size})")
        if replicas is not None and replicas != world:
            differ.append(f"{replicas} process{'es' if replicas != 1 else ''} (this run: {world})")
        if differ:
            raise ValueError(
                f"the checkpoint was taken mid-epoch with {' and '.join(differ)}: an exact resume needs the "
                "same batch size and process count (each process trains its own slice of the epoch); resume "
                "with those, or from a checkpoint at an epoch boundary"
            )
        skip = getattr(self.sampler, "skip_next", None)
        if skip is None:
            raise ValueError(
                f"mid-epoch resume needs a sampler with skip_next(); {type(self.sampler).__name__} has none"
            )
        skip(samples)


class ResumableDataLoader(ResumePosition, DataLoader):
    """``DataLoader`` whose position within the epoch is saved in checkpoints (:class:`ResumePosition`)."""


def track_position(loader: ResumePosition, trainer: Any | None) -> ResumePosition:
    """Let ``loader`` read the batches of the epoch ``trainer`` has trained, for its checkpoint state.

    Without a trainer (a loader built outside ``fit``) the position stays untracked (0).
    """
    if trainer is not None:
        loader.batches_trained = functools.partial(batches_trained_this_epoch, trainer)
    warn_if_one_short_batch(loader)
    return loader


def warn_if_one_short_batch(loader: ResumePosition) -> None:
    """Warn (once per setting) when the training batch size exceeds this process's share of the
    training set: every epoch is then one short batch, which a user rarely means."""
    try:
        samples = len(loader.sampler)
    except TypeError:  # a sampler without a length
        return
    batch_size = int(loader.batch_size or 1)
    if 0 < samples < batch_size:
        world = loader._num_replicas()
        share = f" per process ({world} processes)" if world > 1 else ""
        rank_zero_warn(
            f"batch_size={batch_size} is larger than the training set ({samples} samples{share}): every epoch is one "
            "batch of them; lower --data.init_args.batch_size",
            category=UserWarning,
        )
