"""Lightning callbacks: neural-collapse measurement, prediction files and W&B config logging."""

from lt_lightning.callbacks.neural_collapse import NeuralCollapseCallback
from lt_lightning.callbacks.predictions import PredictionWriter
from lt_lightning.callbacks.wandb_config import SaveConfigToLoggers

__all__ = ["NeuralCollapseCallback", "PredictionWriter", "SaveConfigToLoggers"]
