"""Lightning callbacks: neural-collapse measurement, the finite guard, the per-class table, prediction
files and W&B config logging."""

from lt_lightning.callbacks.finite import FiniteGuard, NonFiniteError
from lt_lightning.callbacks.neural_collapse import NeuralCollapseCallback
from lt_lightning.callbacks.per_class_table import PerClassTable
from lt_lightning.callbacks.predictions import PredictionWriter
from lt_lightning.callbacks.wandb_config import SaveConfigToLoggers

__all__ = [
    "FiniteGuard",
    "NeuralCollapseCallback",
    "NonFiniteError",
    "PerClassTable",
    "PredictionWriter",
    "SaveConfigToLoggers",
]
