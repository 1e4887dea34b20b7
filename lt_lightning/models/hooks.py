"""Callbacks a method adds for itself (:meth:`~lt_lightning.models.LongTailModule.configure_callbacks`).

- :class:`AGDInit`: AGD's orthogonal initialisation of the trained weights (Markou et al.'s ``train.py``
  calls ``optimiser.init_weights()`` before training) and the log of AGD's step size.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from lt_lightning.optim import AGD, agd_orthogonal_init_, check_agd_parameters, optimizer_class

__all__ = ["AGDInit", "method_callbacks"]


class AGDInit(L.Callback):
    """Initialise a module's trainable weights for AGD at the start of its first ``fit``.

    ``setup`` runs before Lightning restores a ``fit(ckpt_path=...)``, so resumed weights win; a module
    loaded from a checkpoint (``weights_from_checkpoint``) or already initialised is left alone. Logs
    ``train/agd_log_step`` (AGD's ``log η`` of the step, a device tensor: no host read) every step.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or getattr(pl_module, "weights_from_checkpoint", False):
            return
        if getattr(pl_module, "_agd_initialized", False):
            return
        named = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        check_agd_parameters(named)
        agd_orthogonal_init_(p for _, p in named)
        pl_module._agd_initialized = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        log_step = getattr(trainer.optimizers[0], "last_log_step", None) if trainer.optimizers else None
        if log_step is not None:
            pl_module.log("train/agd_log_step", log_step, on_step=True, on_epoch=True, batch_size=1)


def method_callbacks(module: Any) -> list[L.Callback]:
    """The callbacks ``module`` needs for its parts (AGD's init when its optimizer is AGD)."""
    cls = optimizer_class(getattr(module, "optimizer", None))
    return [AGDInit()] if cls is not None and issubclass(cls, AGD) else []
