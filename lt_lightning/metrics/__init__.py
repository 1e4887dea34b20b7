"""torchmetrics Metrics for long-tailed recognition and neural collapse (functional maths in ``functional``)."""

from lt_lightning.metrics import functional
from lt_lightning.metrics.neural_collapse import NeuralCollapse
from lt_lightning.metrics.shot_accuracy import ShotAccuracy, shot_accuracy

# Importing the submodule ``neural_collapse`` binds that name on the package; rebind it to the function.
neural_collapse = functional.neural_collapse
minority_collapse = functional.minority_collapse

__all__ = [
    "NeuralCollapse",
    "ShotAccuracy",
    "functional",
    "minority_collapse",
    "neural_collapse",
    "shot_accuracy",
]
