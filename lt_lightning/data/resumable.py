"""A training DataLoader whose position inside the epoch is saved in checkpoints (exact mid-epoch resume).

Lightning saves the ``state_dict`` of every training loader that has one (``_Stateful``) with the fit
loop, and loads it before the resumed epoch's iterator is created. Our samplers draw each epoch's order
from ``(seed, epoch)`` alone, so the position is one number, the batches already trained this epoch;
on load the sampler skips that many batches' samples, and the resumed epoch trains exactly the batches
the interrupted one had left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader

__all__ = ["ResumableDataLoader"]


class ResumableDataLoader(DataLoader):
    """``DataLoader`` with ``state_dict`` / ``load_state_dict`` for the position within the epoch.

    ``batches_done`` is a callable returning the number of batches of the current epoch that have been
    trained (the datamodule reads it from its trainer's loop). It is read when a checkpoint is written,
    so a loader-side count (which runs ahead with prefetching workers) is never used.
    """

    batches_done: Callable[[], int] | None = None

    def state_dict(self) -> dict[str, Any]:
        done = int(self.batches_done()) if self.batches_done is not None else 0
        return {"batches_done": done, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        done, batch_size = int(state.get("batches_done", 0)), state.get("batch_size")
        if done == 0:
            return
        if batch_size != self.batch_size:
            raise ValueError(
                f"the checkpoint was taken mid-epoch with batch size {batch_size}; resuming it exactly needs "
                f"the same batch size, got {self.batch_size}"
            )
        skip = getattr(self.sampler, "skip_next", None)
        if skip is None:
            raise ValueError(
                f"mid-epoch resume needs a sampler with skip_next(); {type(self.sampler).__name__} has none"
            )
        skip(done * batch_size)
