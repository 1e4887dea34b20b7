"""Stop a diverging run at the step it diverges, before the weights or a checkpoint are spoiled."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

__all__ = ["FINITE_FLAGS_ATTR", "FINITE_QUANTITIES", "FiniteGuard", "NonFiniteError", "finite_flags"]

#: the module attribute where ``training_step`` leaves its finiteness flags (see :func:`finite_flags`)
FINITE_FLAGS_ATTR = "_finite_flags"
#: what the flags cover, in order
FINITE_QUANTITIES = ("loss", "features")


class NonFiniteError(RuntimeError):
    """Training produced NaN or inf; raised before the optimiser step that would spread it."""


def finite_flags(loss: Tensor, features: Tensor) -> Tensor:
    """``[2]`` bool on the device: is the loss finite, are all features finite. No host sync."""
    return torch.stack((torch.isfinite(loss.detach()).all(), torch.isfinite(features.detach()).all()))


def _non_finite_tensors(state: dict[str, Any]) -> list[str]:
    names = [k for k, v in state.items() if isinstance(v, Tensor) and v.is_floating_point()]
    if not names:
        return []
    ok = torch.stack([torch.isfinite(state[k]).all().cpu() for k in names]).tolist()
    return [k for k, good in zip(names, ok) if not good]


class FiniteGuard(Callback):
    """Raise :class:`NonFiniteError` at the first training step whose loss or features are NaN or inf.

    The check runs in ``on_before_optimizer_step`` (after backward, before the weights change), so the
    weights stay those of the last good step and the last checkpoint on disk stays good. It reads the
    ``[2]`` flags a :class:`~lt_lightning.models.LongTailModule` computes in ``training_step``: one
    host read of two booleans per step (and under DDP one all-reduce, so every rank stops at the same
    step instead of one rank hanging in the next collective). A module that leaves no flags is not
    checked per step.

    As a last line, ``on_save_checkpoint`` refuses to write a checkpoint whose ``state_dict`` holds a
    non-finite tensor (e.g. a run diverged in a step this guard did not see).

    The lt-lightning CLI adds this callback to every run.
    """

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        flags = getattr(pl_module, FINITE_FLAGS_ATTR, None)
        if flags is None:
            return
        bad = (~flags).to(torch.float32)
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce(bad, reduce_op="sum")
        bad = bad.tolist()
        if any(bad):
            which = " and ".join(q for q, b in zip(FINITE_QUANTITIES, bad) if b)
            raise NonFiniteError(
                f"non-finite {which} (NaN or inf) at training step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx}); stopped before "
                "the optimizer step, so no checkpoint with non-finite weights is written. Lower the "
                "learning rate or check the data."
            )

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        bad = _non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteError(
                f"refusing to write a checkpoint at step {trainer.global_step}: non-finite weights in {shown}"
            )
