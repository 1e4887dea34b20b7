"""``DecoupledModule(mode=...)``: the stage-2 method by name, so configs and checkpoints that name it load."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal, get_args

from lt_lightning.data.augment import Mixup
from lt_lightning.models.decoupled.crt import CRTModule, LWSModule
from lt_lightning.models.decoupled.maxnorm import PGDEvery, WeightBalancingModule
from lt_lightning.models.decoupled.post_hoc import TAU_GRID, NCMModule, TauNormModule
from lt_lightning.models.decoupled.stage2 import BNMode, Stage2Module, _defaults
from lt_lightning.optim import LRSchedule, OptimizerFactory

__all__ = ["MODES", "DecoupledMode", "DecoupledModule", "decoupled_class"]

DecoupledMode = Literal["crt", "lws", "tau_norm", "ncm", "weight_balancing"]
#: the stage-2 methods by name
MODES: dict[str, type[Stage2Module]] = {
    "crt": CRTModule,
    "lws": LWSModule,
    "tau_norm": TauNormModule,
    "ncm": NCMModule,
    "weight_balancing": WeightBalancingModule,
}


def decoupled_class(mode: str) -> type[Stage2Module]:
    """The stage-2 class of ``mode``.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown decoupled mode {mode!r}; valid: {', '.join(get_args(DecoupledMode))}")
    return MODES[mode]


class DecoupledModule(Stage2Module):
    """Stage 2 of decoupled training by mode: builds a :class:`CRTModule`, :class:`LWSModule`,
    :class:`TauNormModule`, :class:`NCMModule` or :class:`WeightBalancingModule` (the object returned
    is of that class).

    Options that the chosen mode does not have must keep their defaults (e.g. ``tau`` with ``mode: crt``
    is an error).

    Args:
        stage1_checkpoint: path of a checkpoint written by any lt_lightning stage-1 method (configs write
            ``runs/<dataset>/<method>/seed{seed}/last.ckpt``: the CLI fills in ``seed_everything``).
        stage1_module: leave unset (a stage-2 checkpoint's record of the stage-1 architecture).
        mode: ``"crt"``, ``"lws"``, ``"tau_norm"``, ``"ncm"`` or ``"weight_balancing"``.
        bn_mode: ``"reestimate"`` (BatchNorm statistics follow the stage-2 sampler, as Kang's code) or
            ``"frozen"`` (crt, lws, weight_balancing).
        tau: a fixed τ (tau_norm; ``None``: chosen on validation).
        tau_grid: τ values swept (tau_norm; Kang: 0, 0.1, …, 2.0).
        ncm_center: subtract the mean training feature first (ncm).
        ncm_normalize: L2-normalise the features and class means (ncm).
        ncm_metric: ``"euclidean"`` or ``"cosine"`` score (ncm).
        maxnorm_thresh: MaxNorm threshold fraction, ``None`` off (weight_balancing).
        pgd_every: ``"step"`` or ``"epoch"``: when MaxNorm projects (weight_balancing).
        cb_beta: β of the class-balanced loss weights (weight_balancing).
        num_classes: K (linked from the datamodule).
        class_counts: ``[K]`` training counts (linked from the datamodule).
        shot_groups: ``[K]`` shot groups (linked from the datamodule).
        optimizer: the optimizer factory (crt, lws, weight_balancing).
        lr_schedule: the schedule (crt, lws, weight_balancing).
        mixup: mixup of the training batches (crt, lws, weight_balancing).
        seed: seed of the module's own randomness.
    """

    @classmethod
    def builds(cls, other: type) -> bool:
        return other in MODES.values()

    def __new__(  # type: ignore[misc]  # returns the mode's class
        cls,
        stage1_checkpoint: str,
        stage1_module: dict[str, Any] | None = None,
        mode: DecoupledMode = "crt",
        bn_mode: BNMode = "reestimate",
        tau: float | None = None,
        tau_grid: Sequence[float] = TAU_GRID,
        ncm_center: bool = True,
        ncm_normalize: bool = True,
        ncm_metric: Literal["euclidean", "cosine"] = "euclidean",
        maxnorm_thresh: float | None = 0.1,
        pgd_every: PGDEvery = "step",
        cb_beta: float = 0.9999,
        num_classes: int = 10,
        class_counts: Sequence[int] | None = None,
        shot_groups: Sequence[int] | None = None,
        optimizer: OptimizerFactory | None = None,
        lr_schedule: LRSchedule | None = None,
        mixup: Mixup | None = None,
        seed: int = 0,
    ) -> Stage2Module:
        options = dict(locals())
        for name in ("cls", "mode", "__class__"):
            options.pop(name, None)
        target = decoupled_class(mode)
        own = set(_defaults(target)) | {"stage1_checkpoint"}
        defaults = {k: p.default for k, p in inspect.signature(DecoupledModule.__new__).parameters.items()}
        foreign = sorted(
            k for k, v in options.items() if k not in own and _plain(v) != _plain(defaults.get(k))
        )
        if foreign:
            raise ValueError(f"{', '.join(foreign)} do not apply to mode {mode!r} ({target.__name__})")
        return target(**{k: v for k, v in options.items() if k in own})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


# jsonargparse reads the options of a class that defines __new__ from __new__: give it the Args
DecoupledModule.__new__.__doc__ = DecoupledModule.__doc__
