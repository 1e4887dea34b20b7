"""Neural-collapse and long-tail metrics as pure tensor functions (tensors in; the Metrics wrap them).

The torchmetrics layout: one module per concept, private helpers named after their metric
(``_neural_collapse_update``, ``_shot_accuracy_compute``), the thin stateful classes in
:mod:`lt_lightning.metrics`.

- :mod:`._inputs`: entry checks of features ``[N, d]``, labels ``[N]`` and classifiers ``[K, d]``;
- :mod:`.nc_state`: the streaming float64 statistics (batch Welford update, exact merge, NC4 pass);
- :mod:`.nc_float32`: the one-shot float32 GEMM path and its checked argmax;
- :mod:`.geometry`: NC1–NC3, bias collapse, equinorms, CDNV from the statistics (Papyan et al. 2020;
  Zhu et al. 2021);
- :mod:`.seli`: distances to the SELI geometry of the label matrix (Thrampoulidis et al. 2022);
- :mod:`.calibration`: ECE and precision per shot group from per-class binned counts;
- :mod:`.minority_collapse`: cosines and norm ratios per shot group (Fang et al. 2021);
- :mod:`.shot_accuracy`: overall, balanced and many/medium/few accuracy (Kang et al. 2020);
- :mod:`.neural_collapse`: the public one-shot :func:`neural_collapse`.

Submodules import one another directly, never through this package.
"""

from lt_lightning.metrics.functional.geometry import NC_KEYS, UndefinedMetricWarning
from lt_lightning.metrics.functional.minority_collapse import MINORITY_COLLAPSE_KEYS, minority_collapse
from lt_lightning.metrics.functional.neural_collapse import neural_collapse
from lt_lightning.metrics.functional.seli import SELI_KEYS, seli_targets
from lt_lightning.metrics.functional.shot_accuracy import shot_accuracy
from lt_lightning.spec import SHOT_GROUP_NAMES

__all__ = [
    "MINORITY_COLLAPSE_KEYS",
    "NC_KEYS",
    "SELI_KEYS",
    "SHOT_GROUP_NAMES",
    "UndefinedMetricWarning",
    "minority_collapse",
    "neural_collapse",
    "seli_targets",
    "shot_accuracy",
]
