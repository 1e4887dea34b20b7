"""Learning-rate schedules as pure functions of the (fractional) epoch."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["LR_SCHEDULES", "lr_factor"]

LR_SCHEDULES = ("constant", "cosine", "multistep")


def lr_factor(
    epoch: float,
    *,
    schedule: str,
    max_epochs: int,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.0,
    milestones: Sequence[int] = (),
    milestone_factors: Sequence[float] = (),
) -> float:
    """Multiplier of the base learning rate at a fractional epoch (``step / steps_per_epoch``).

    Linear warm-up from ``warmup_start_factor`` to 1 over ``warmup_epochs``; then ``"constant"`` (1),
    ``"cosine"`` (half a cosine from 1 to 0 between the end of warm-up and ``max_epochs``) or
    ``"multistep"`` (the factor ``milestone_factors[j]`` from epoch ``milestones[j]`` on; the factors are
    cumulative, e.g. Yang's CIFAR recipe ``milestones=[160, 180], milestone_factors=[0.1, 0.01]``).
    """
    if epoch < warmup_epochs:
        return warmup_start_factor + (1.0 - warmup_start_factor) * epoch / warmup_epochs
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(max_epochs - warmup_epochs, 1e-12)
        progress = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "multistep":
        factor = 1.0
        for milestone, f in zip(milestones, milestone_factors):
            if epoch >= milestone:
                factor = f
        return factor
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
