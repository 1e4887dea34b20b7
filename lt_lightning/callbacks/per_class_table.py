"""A W&B table of per-class test accuracy, training count and shot group."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lt_lightning.spec import SHOT_GROUP_NAMES

__all__ = ["PER_CLASS_COLUMNS", "PerClassTable", "per_class_rows"]

#: columns of the per-class table
PER_CLASS_COLUMNS = ("class", "train_count", "accuracy", "shot_group")


def per_class_rows(
    per_class_acc: Tensor, class_counts: Sequence[int] | None, class_group: Tensor | Sequence[int] | None
) -> list[list]:
    """Rows ``[class, train_count, accuracy, shot_group]`` (``None`` for an unknown count/group, and for
    the accuracy of a class absent from the evaluation set)."""
    acc = per_class_acc.detach().double().cpu().tolist()
    groups = list(
        class_group.tolist() if isinstance(class_group, Tensor) else class_group or [None] * len(acc)
    )
    counts = list(class_counts) if class_counts is not None else [None] * len(acc)
    return [
        [
            k,
            None if n is None else int(n),
            None if a != a else float(a),
            None if g is None else SHOT_GROUP_NAMES[g],
        ]
        for k, (n, a, g) in enumerate(zip(counts, acc, groups))
    ]


class PerClassTable(Callback):
    """Log ``test/per_class`` to every ``WandbLogger`` at the end of a test: one row per class.

    Reads the module's ``test_metrics`` (a :class:`~lt_lightning.metrics.ShotAccuracy`) before the module
    computes and resets it, and the training counts and shot groups of the datamodule. Collective under
    DDP (the per-class counts are summed over ranks); only global rank zero logs. The lt-lightning CLI
    adds it to every run; without a W&B logger it does nothing.
    """

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        metrics = getattr(pl_module, "test_metrics", None)
        if not loggers or metrics is None:
            return
        per_class = metrics.per_class_accuracy()  # collective under DDP: every rank calls it
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        rows = per_class_rows(per_class, getattr(dm, "class_counts", None), getattr(dm, "shot_groups", None))
        for logger in loggers:
            logger.log_table(key="test/per_class", columns=list(PER_CLASS_COLUMNS), data=rows)
