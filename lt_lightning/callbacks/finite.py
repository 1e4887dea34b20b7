"""Stop a diverging run at the step it diverged, without a host synchronisation per step.

Every training step, :class:`FiniteGuard` reads the ``finite_flags`` a
:class:`~lt_lightning.models.LongTailModule` leaves on the device (is the loss finite, are the
features finite; under gradient accumulation, of every micro-batch of the step), and on the device alone records the first step where either is not, and skips that
step's update. The flags are read back to the host only every ``check_every_n_steps`` steps (by
default the trainer's ``log_every_n_steps``, when Lightning reads the logged values anyway), before
every checkpoint is written and when training ends; the run then stops with :class:`NonFiniteError`
naming the first bad step and the quantity. No checkpoint is written after a non-finite step.

Evaluation inputs are checked too (one device flag per batch, read once per epoch): NaN or inf in the
validation or test data warns once per split, naming the split and the first bad batch, instead of a
silent ``val/loss nan``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

__all__ = ["FINITE_QUANTITIES", "FiniteGuard", "NonFiniteError"]

#: what the flags cover, in order
FINITE_QUANTITIES = ("loss", "features")


class NonFiniteError(RuntimeError):
    """Training produced NaN or inf."""


def _finite_flags_of(state: dict[str, Any]) -> tuple[list[str], list[Tensor]]:
    """The floating-point tensors of a state dict and a 0-d device bool per tensor (finite), no host read."""
    names = [k for k, v in state.items() if isinstance(v, Tensor) and v.is_floating_point()]
    return names, [torch.isfinite(state[k]).all() for k in names]


class FiniteGuard(Callback):
    """Raise :class:`NonFiniteError` soon after the first training step whose loss or features are NaN or inf.

    On the device, per step: the module's ``[2]`` flags are reduced over ranks under DDP (so every rank
    agrees), the first bad step and its quantities are recorded, and the step's update is skipped:
    optimizers that take ``found_inf`` as ``GradScaler`` gives it (torch's fused optimizers,
    :class:`lt_lightning.optim.AGD`) skip it on the device; for the others the gradients of a bad step
    are zeroed and its parameters put back after the step (momentum buffers decay by one step).

    On the host, every ``check_every_n_steps`` steps, before every checkpoint and at the end of
    training: if a step was bad, raise. A checkpoint whose weights hold a non-finite tensor is refused
    too (a last line against a divergence the flags did not see). The lt-lightning CLI adds this
    callback to every run.

    Args:
        check_every_n_steps: how often the flags are read (``None``: the trainer's ``log_every_n_steps``).
    """

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        if check_every_n_steps is not None and (
            isinstance(check_every_n_steps, bool)
            or not isinstance(check_every_n_steps, int)
            or check_every_n_steps < 1
        ):
            raise ValueError(
                f"check_every_n_steps must be a positive int or None, got {check_every_n_steps!r}"
            )
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: Tensor | None = None  # step of the first bad update (-1: none), on the device
        self._what: Tensor | None = None  # [2] bool: which quantities were non-finite at that step
        self._step: Tensor | None = None  # the step counter, on the device
        self._pending: Tensor | None = None  # flags of this step's micro-batches so far (all-finite: True)
        self._saved: list[tuple[Tensor, Tensor]] = []  # parameters before the step (no found_inf)
        self._bad_now: Tensor | None = None
        self._checked_at = -1  # the global step of the last host read
        self._eval_bad: Tensor | None = None  # first evaluation batch with non-finite inputs (-1: none)
        self._warned: set[str] = set()  # the splits already warned about (once a run each)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        device = pl_module.device
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self._what = torch.zeros(len(FINITE_QUANTITIES), dtype=torch.bool, device=device)
        self._step = torch.full((), trainer.global_step, dtype=torch.long, device=device)
        self._pending = None
        self._checked_at = trainer.global_step

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # every micro-batch of an accumulated step: a bad one among them makes the whole step bad
        flags = getattr(pl_module, "finite_flags", None)
        if flags is not None:
            self._pending = flags if self._pending is None else self._pending & flags

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        flags = self._pending if self._pending is not None else getattr(pl_module, "finite_flags", None)
        self._pending = None
        if flags is None or self._first_bad is None:
            return
        bad = (~flags).to(torch.float32)
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce(bad, reduce_op="sum")  # a collective on the device, no host read
        bad = bad > 0
        any_bad = bad.any()
        new = any_bad & (self._first_bad < 0)
        self._first_bad = torch.where(new, self._step, self._first_bad)
        self._what = torch.where(new, bad, self._what)
        self._step = self._step + 1
        self._bad_now = any_bad
        self._saved = _skip_update(optimizer, any_bad)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        # after the optimizer step (and before any checkpoint of this batch): put a bad step's parameters back
        if self._saved and self._bad_now is not None:
            _restore(self._saved, self._bad_now)
        self._saved = []
        every = self.check_every_n_steps or max(int(trainer.log_every_n_steps), 1)
        step = trainer.global_step
        if step % every == 0 and step != self._checked_at:  # once per step (accumulation: many batches)
            self._checked_at = step
            self.check(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: Trainer, also: Sequence[Tensor] = ()) -> list[bool]:
        """Raise :class:`NonFiniteError` if a step so far was non-finite.

        One host read, which also reads ``also`` (0-d device bools) and returns them.
        """
        flags = [] if self._first_bad is None or self._what is None else [self._first_bad, *self._what]
        parts = [t.reshape(1).long() for t in (*flags, *also)]
        if not parts:
            return []
        device = parts[0].device
        values = torch.cat([t.to(device) for t in parts]).tolist()
        read, values = values[: len(flags)], values[len(flags) :]
        if read and read[0] >= 0:
            which = " and ".join(q for q, b in zip(FINITE_QUANTITIES, read[1:]) if b)
            raise NonFiniteError(
                f"non-finite {which} (NaN or inf) at training step {read[0]} (noticed at step "
                f"{trainer.global_step}); its update was skipped and no checkpoint was written after it. "
                "Lower the learning rate or check the data."
            )
        return [bool(v) for v in values]

    # ---- evaluation data: warn once per split, read once per evaluation epoch ------------------------------
    def _eval_batch(self, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (list, tuple)) and batch else batch
        if not (isinstance(x, Tensor) and x.is_floating_point()):
            return
        bad = ~torch.isfinite(x).all()
        if self._eval_bad is None:
            self._eval_bad = torch.full((), -1, dtype=torch.long, device=x.device)
        self._eval_bad = torch.where(bad & (self._eval_bad < 0), batch_idx, self._eval_bad)

    def _eval_end(self, trainer: Trainer, split: str) -> None:
        bad, self._eval_bad = self._eval_bad, None
        if bad is None or split in self._warned:
            return
        first = int(bad)  # one host read per evaluation epoch
        if first >= 0:
            self._warned.add(split)
            rank = f" (rank {trainer.global_rank})" if trainer.world_size > 1 else ""
            warnings.warn(
                f"the {split} data holds NaN or inf inputs (first in {split} batch {first}{rank}): {split}/loss and "
                f"the {split} metrics are NaN or wrong; check the data (warned once)",
                stacklevel=1,
            )

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch(pl_module, batch, batch_idx)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_end(trainer, "val")

    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch(pl_module, batch, batch_idx)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_end(trainer, "test")

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        names, finite = _finite_flags_of(checkpoint.get("state_dict", {}))
        ok = self.check(trainer, also=finite)  # the flags and every weight in one host read
        bad = [name for name, good in zip(names, ok) if not good]
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteError(
                f"refusing to write a checkpoint at step {trainer.global_step}: non-finite weights in {shown}"
            )


def _skip_update(optimizer: torch.optim.Optimizer, bad: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Make this step's update a no-op when ``bad`` (a device bool), without reading it on the host.

    Optimizers that read ``found_inf`` (torch's fused ones, AGD) skip the step themselves, as under
    ``GradScaler``. For the others the gradients of a bad step are zeroed (so no NaN reaches momentum
    buffers) and the parameters are snapshotted, to be put back after the step by :func:`_restore`.
    """
    inner = getattr(optimizer, "optimizer", optimizer)  # Lightning's LightningOptimizer wraps it
    if getattr(inner, "_step_supports_amp_scaling", False) and _fused(inner):
        inner.found_inf = bad.to(torch.float32)  # type: ignore[attr-defined]  # GradScaler's protocol
        return []
    params = [p for group in inner.param_groups for p in group["params"] if p.grad is not None]
    for p in params:
        p.grad.masked_fill_(bad, 0.0)  # type: ignore[union-attr]
    return list(zip(params, torch._foreach_clone(params) if params else []))


def _restore(saved: list[tuple[Tensor, Tensor]], bad: Tensor) -> None:
    """Put the parameters of a bad step back (``torch.where``: exact, NaN-safe, no host read)."""
    with torch.no_grad():
        for p, before in saved:
            p.copy_(torch.where(bad, before, p))


def _fused(optimizer: torch.optim.Optimizer) -> bool:
    """True for optimizers whose step reads ``found_inf``: AGD, and torch's with ``fused=True``."""
    if not any("fused" in g for g in optimizer.param_groups):
        return True  # ours (AGD): no fused option, always honours found_inf
    return all(bool(g.get("fused")) for g in optimizer.param_groups)
