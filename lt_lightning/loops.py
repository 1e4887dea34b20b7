"""The one manual evaluation pass a hook may run: the NC callback's measurement, NCM's centroids and
τ-norm's selection all read a loader through :func:`evaluation_pass` inside :func:`evaluation_mode`.

Lightning runs its own loops for fit/validate/test; these passes run inside hooks, so they prepare a
batch themselves, the same way for all three: move it to the module's device and convert it with the
trainer's precision plugin (``bf16-true`` / ``16-true`` cast the inputs to the parameters' dtype), with
a progress bar on global rank zero when the trainer shows one. The model runs at its parameters'
precision, without autocast: under ``*-mixed`` training the measurements are made in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn

from lt_lightning.progress import progress, trainer_shows_progress

__all__ = ["evaluation_mode", "evaluation_pass"]

T = TypeVar("T")


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; on exit every submodule's mode and the global RNGs come back.

    The RNGs matter (Lightning's ``isolate_rng``: torch CPU and CUDA, numpy, Python): building a
    DataLoader iterator draws a base seed from torch's global generator, so a training run with a pass
    in a hook stays bit-identical to one without it. After an exception inside, the modes come back
    but the RNGs do not (``isolate_rng`` restores them on a normal exit only; the failing run is over).
    """
    modes = [(m, m.training) for m in module.modules()]
    try:
        with isolate_rng(include_cuda=torch.cuda.is_available()), torch.no_grad():
            module.eval()
            yield
    finally:
        for m, mode in modes:
            m.training = mode  # per module: .train(mode) would recurse over children


def evaluation_pass(
    trainer: Any,
    module: nn.Module,
    loader: Iterable[Any],
    step: Callable[[Tensor], T],
    *,
    desc: str,
    max_batches: int | None = None,
) -> Iterator[tuple[T, Tensor]]:
    """``(step(x), y)`` for every ``(x, y)`` batch of ``loader`` (at most ``max_batches``).

    ``x`` is moved to ``module``'s device and converted by ``trainer.precision_plugin`` (no autocast).
    ``trainer`` may be ``None`` (inputs as they come, no bar).

    Raises:
        TypeError: a batch that is not ``(x, y)``.
    """
    plugin = getattr(trainer, "precision_plugin", None)
    shown = trainer_shows_progress(trainer)
    total = _length(loader, max_batches) if shown else None
    device = getattr(module, "device", None)
    if not isinstance(device, torch.device):
        device = next(iter(module.parameters()), torch.empty(0)).device
    for i, batch in enumerate(progress(loader, desc, enabled=shown, total=total)):
        if max_batches is not None and i >= max_batches:
            break
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(f"expected (x, y) batches from the datamodule, got {type(batch).__name__}")
        x, y = move_data_to_device((batch[0], batch[1]), device)
        if plugin is not None:
            x = plugin.convert_input(x)
        yield step(x), y


def _length(loader: Any, max_batches: int | None) -> int | None:
    try:
        n = len(loader)
    except TypeError:
        return max_batches
    return n if max_batches is None else min(n, max_batches)
