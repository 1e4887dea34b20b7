"""Lightning callbacks: neural-collapse measurement and W&B config logging."""

from lt_lightning.callbacks.neural_collapse import NeuralCollapseCallback
from lt_lightning.callbacks.wandb_config import SaveConfigToLoggers

__all__ = ["NeuralCollapseCallback", "SaveConfigToLoggers"]
