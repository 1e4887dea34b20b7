"""Send the full resolved LightningCLI configuration to every W&B run (not only hyper-parameters)."""

from __future__ import annotations

import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

__all__ = ["SaveConfigToLoggers"]


class SaveConfigToLoggers(SaveConfigCallback):
    """Writes ``config.yaml`` like Lightning's callback (overwriting a previous one in the same folder,
    so a second run into the same ``save_dir`` does not abort) and updates each ``WandbLogger``'s
    ``run.config`` with the whole configuration: trainer, data, model, callbacks and links."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_check=True))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(config, allow_val_change=True)
