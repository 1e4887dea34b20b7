"""``lt-lightning``: LightningCLI over every lt_lightning method and datamodule.

    lt-lightning fit -c configs/digits_lt/joint.yaml
    lt-lightning test -c configs/digits_lt/tau_norm.yaml --model.init_args.stage1_checkpoint run.ckpt

``num_classes``, ``class_counts`` and the shot-group thresholds are linked from the datamodule into the
model. The default logger is W&B (offline when there is no API key or network), or a CSV logger when
``WANDB_MODE=disabled`` or wandb is unavailable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

import lt_lightning.callbacks
import lt_lightning.data.datamodules
import lt_lightning.models  # noqa: F401
from lt_lightning.callbacks.finite import FiniteGuard
from lt_lightning.callbacks.wandb_config import SaveConfigToLoggers
from lt_lightning.data.datamodules import LongTailDataModule
from lt_lightning.models.base import LongTailModule

__all__ = ["LTLightningCLI", "build_cli", "default_logger", "main"]


def default_logger(save_dir: str = "runs") -> dict:
    """The trainer's default logger as a LightningCLI class_path dict."""
    try:
        import wandb  # noqa: F401

        available = True
    except ImportError:
        available = False
    if not available or os.environ.get("WANDB_MODE") == "disabled":
        return {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": save_dir}}
    return {
        "class_path": "lt_lightning.loggers.WandbLoggerOfflineSafe",
        "init_args": {"save_dir": save_dir, "project": "lt_lightning"},
    }


class LTLightningCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for name in ("num_classes", "class_counts", "many_threshold", "few_threshold"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> LTLightningCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line."""
    return LTLightningCLI(
        LongTailModule,
        LongTailDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": default_logger(),
            "callbacks": [FiniteGuard()],
            "plugins": [{"class_path": "lt_lightning.checkpoints.AtomicCheckpointIO"}],
        },
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lt-lightning`` console script."""
    build_cli(args)


if __name__ == "__main__":
    main()
