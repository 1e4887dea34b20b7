"""torchmetrics Metrics for long-tailed recognition and neural collapse (functional maths in ``functional``).

The modules of this package import only ``functional``'s submodules, :mod:`lt_lightning.spec` and
:mod:`lt_lightning.compat`, never this package's ``__init__``, so the imports below work in any order.
"""

from lt_lightning.metrics import functional
from lt_lightning.metrics.calibration import ShotCalibration
from lt_lightning.metrics.neural_collapse import NeuralCollapse
from lt_lightning.metrics.shot_accuracy import ShotAccuracy

# Importing the submodules ``neural_collapse`` and ``shot_accuracy`` binds those names on the package to
# the modules; after all the imports, rebind them (and minority_collapse) to the one-shot functions.
neural_collapse = functional.neural_collapse
minority_collapse = functional.minority_collapse
shot_accuracy = functional.shot_accuracy

__all__ = [
    "NeuralCollapse",
    "ShotAccuracy",
    "ShotCalibration",
    "functional",
    "minority_collapse",
    "neural_collapse",
    "shot_accuracy",
]
