"""Optimisation parts a method is given: the optimizer factory, the learning-rate schedule and AGD.

- The optimizer is injected as Lightning's ``OptimizerCallable`` (``params -> Optimizer``): a class
  (``torch.optim.AdamW``), a ``functools.partial`` of one, or in a config ``{class_path, init_args}``
  (``torch.optim.SGD`` with ``lr``, ``momentum``, ``weight_decay``). :func:`optimizer_from_config` and
  :func:`describe_optimizer` turn a checkpoint's record into the callable and back.
- :class:`LRSchedule` is the schedule as data (warm-up, then constant / cosine / multistep) and a
  factory of the ``LambdaLR`` that follows it (:meth:`LRSchedule.build`).
- :class:`AGD` is automatic gradient descent (Bernstein, Mingard, Huang, Azizan, Yue, arXiv:2304.05187,
  2023), as Markou et al. (NeurIPS 2024) train their implicit-ETF networks with it: no learning rate,
  no schedule. For a network of L weight tensors W_l (linear ``[out, in]`` or conv ``[out, in, kh, kw]``;
  no biases):

  - spectral scale ``s_l = sqrt(fan_out / fan_in)``, divided by ``sqrt(kh * kw)`` for a convolution;
  - ``G = (1/L) Σ_l s_l Σ_{i,j} ‖∇W_l[:, :, i, j]‖_F`` (one Frobenius norm per kernel position; a linear
    layer has the single position ``(i, j) = ()``);
  - step size ``η = log((1 + sqrt(1 + 4G)) / 2)``;
  - update ``W_l[:, :, i, j] ← W_l[:, :, i, j] − gain · (η / L) · s_l · ∇W_l[:, :, i, j] / ‖∇W_l[:, :, i, j]‖_F``
    (a kernel position whose gradient is 0 does not move);
  - initialisation (:func:`agd_orthogonal_init_`): every kernel position a uniformly random
    semi-orthogonal matrix times ``s_l``, so all its singular values equal ``s_l``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from torch.optim.optimizer import ParamsT

from lt_lightning.checkpoints import resolve_class

__all__ = [
    "AGD",
    "LR_INTERVALS",
    "LR_SCHEDULES",
    "LRInterval",
    "LRSchedule",
    "OptimizerFactory",
    "ScheduleName",
    "agd_orthogonal_init_",
    "agd_scale",
    "build_optimizer",
    "check_agd_parameters",
    "default_optimizer",
    "describe_optimizer",
    "lr_factor",
    "optimizer_class",
    "optimizer_from_config",
]

#: Lightning's ``OptimizerCallable``: named parameters (or parameters) -> optimizer
OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
ScheduleName = Literal["constant", "cosine", "multistep"]
LRInterval = Literal["step", "epoch"]
LR_SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
LR_INTERVALS: tuple[str, ...] = get_args(LRInterval)


# --------------------------------------------------------------------------------------------------
# the optimizer as an injected callable
# --------------------------------------------------------------------------------------------------
def default_optimizer() -> OptimizerFactory:
    """SGD with momentum 0.9, lr 0.1, weight decay 5e-4 (the CIFAR recipes' optimiser): the default."""
    return functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=5e-4)


def optimizer_class(factory: Any) -> type[torch.optim.Optimizer] | None:
    """The optimizer class ``factory`` builds, when it can be told without calling it.

    A class is itself; a ``functools.partial`` (also jsonargparse's, which wraps the class in its
    arguments) is searched for the first optimizer class in its function and arguments.
    """
    if isinstance(factory, type):
        return factory if issubclass(factory, torch.optim.Optimizer) else None
    if isinstance(factory, functools.partial):
        for part in (factory.func, *factory.args):
            found = optimizer_class(part)
            if found is not None:
                return found
    return None


def describe_optimizer(factory: Any) -> dict[str, Any] | None:
    """``{"class_path", "init_args"}`` of an optimizer factory (a class or a partial of one with keyword
    arguments), the form a checkpoint keeps; ``None`` when the callable cannot be described (a lambda)."""
    cls = optimizer_class(factory)
    if cls is None:
        return None
    init_args: dict[str, Any] = {}
    if isinstance(factory, functools.partial):
        if factory.func is not cls and cls not in factory.args:
            return None
        init_args = {k: v for k, v in factory.keywords.items() if _plain(v)}
        if len(init_args) != len(factory.keywords):
            return None
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


#: torch's optimizers with a fused CUDA step (one kernel launch for all parameters, and it honours
#: ``found_inf``, so :class:`~lt_lightning.callbacks.FiniteGuard` skips a bad step for free)
FUSED_ON_CUDA: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
)


def fused_by_default(factory: Any, params: Iterable[Tensor]) -> bool:
    """Whether :func:`build_optimizer` turns on ``fused``: torch's SGD, Adam or AdamW (exactly those
    classes), every parameter on a CUDA device, and neither ``fused`` nor ``foreach`` set by the config
    (a set value, ``false`` included, is kept). A factory that cannot be described is left alone."""
    if optimizer_class(factory) not in FUSED_ON_CUDA:
        return False
    record = describe_optimizer(factory)
    if record is None or {"fused", "foreach"} & record["init_args"].keys():
        return False
    params = list(params)
    return bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)


def build_optimizer(factory: OptimizerFactory, named: list[tuple[str, Tensor]]) -> torch.optim.Optimizer:
    """``factory(named)``, with ``fused=True`` where :func:`fused_by_default` says so.

    On a GPU the foreach step of these optimizers launches kernels per parameter group of tensors, and
    the finite guard's skip of a bad step (for optimizers that cannot skip it themselves) costs three
    more launches per parameter, every step: ~300 for a ResNet-32, of a step budget of a few ms. The
    fused step does the update, and the skip, in one. Results differ from the foreach step in the last
    bits only (fused multiply-adds); set ``fused: false`` to keep the foreach step.
    """
    if fused_by_default(factory, (p for _, p in named)):
        return factory(named, fused=True)  # type: ignore[call-arg]
    return factory(named)


def _plain(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str, type(None))):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False


def optimizer_from_config(value: Any, where: str = "optimizer") -> OptimizerFactory:
    """An optimizer factory from a callable (returned as is) or a ``{class_path, init_args}`` record.

    The class named by a record must be a ``torch.optim.Optimizer`` subclass of an already imported
    module (or of lt_lightning): a record read from a checkpoint cannot make us import anything else.

    Raises:
        ValueError: a record that names no importable optimizer class, or unknown ``init_args``.
    """
    if value is None:
        return default_optimizer()
    if callable(value) and not isinstance(value, Mapping):
        return value
    if not isinstance(value, Mapping) or "class_path" not in value:
        raise ValueError(
            f"{where} must be an optimizer class or callable, or {{'class_path': ..., 'init_args': {{...}}}}; "
            f"got {value!r}"
        )
    cls = resolve_class(str(value["class_path"]), torch.optim.Optimizer, where)
    init_args = dict(value.get("init_args") or {})
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in init_args if k not in params)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"{where}: {cls.__name__} has no arguments {unknown}")
    return functools.partial(cls, **init_args)


# --------------------------------------------------------------------------------------------------
# the schedule
# --------------------------------------------------------------------------------------------------
def lr_factor(
    epoch: float,
    *,
    schedule: str,
    max_epochs: int,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.0,
    milestones: Iterable[int] = (),
    milestone_factors: Iterable[float] = (),
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


@dataclass(frozen=True)
class LRSchedule:
    """A learning-rate schedule: linear warm-up, then constant, cosine or multistep (a factory of its LambdaLR).

    Args:
        name: ``"constant"``, ``"cosine"`` (to 0 at ``max_epochs``) or ``"multistep"``.
        interval: ``"step"`` (the factor follows the fractional epoch, smooth) or ``"epoch"`` (held
            constant within an epoch, as the authors' code does; e.g. Yang's warm-up lr·(e+1)/5 is
            ``warmup_epochs=4, warmup_start_factor=0.2``, Tang's 1/3 → 1 over 5 epochs is ``5, 1/3``).
        epoch_offset: train epoch e at the factor of epoch ``e + epoch_offset``. 0 is the schedule as
            written; 1 reproduces Kaihua Tang's code (``run_networks.py`` calls ``scheduler.step()`` at the
            start of every epoch, so under PyTorch >= 1.1 the first epoch already trains at the factor of
            epoch 1: the last cosine epoch trains at lr 0 and each multistep decay comes one epoch early).
        warmup_epochs: length of the linear warm-up, in epochs (0 = none).
        warmup_start_factor: the warm-up starts at ``warmup_start_factor · lr`` and ends at ``lr``.
        milestones: epochs at which ``"multistep"`` steps down (increasing).
        milestone_factors: cumulative lr factor from each milestone on (e.g. ``[0.1, 0.01]``).
    """

    name: ScheduleName = "cosine"
    interval: LRInterval = "step"
    epoch_offset: int = 0
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.0
    milestones: tuple[int, ...] = ()
    milestone_factors: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        object.__setattr__(self, "milestone_factors", tuple(self.milestone_factors))
        if self.name not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.name!r}; valid: {', '.join(LR_SCHEDULES)}")
        if self.interval not in LR_INTERVALS:
            raise ValueError(f"lr_schedule.interval must be 'step' or 'epoch', got {self.interval!r}")
        offset = self.epoch_offset
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"lr_schedule.epoch_offset must be an int >= 0 (Tang's code: 1), got {offset!r}")
        if self.warmup_epochs < 0 or not 0.0 <= self.warmup_start_factor <= 1.0:
            raise ValueError(
                f"warmup_epochs must be >= 0 and warmup_start_factor in [0, 1], got {self.warmup_epochs}, "
                f"{self.warmup_start_factor}"
            )
        if len(self.milestones) != len(self.milestone_factors):
            raise ValueError(
                f"milestones {list(self.milestones)} and milestone_factors {list(self.milestone_factors)} "
                "differ in length"
            )
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {list(self.milestones)}")
        if self.name == "multistep" and not self.milestones:
            # without them the schedule is a constant lr (after any warm-up), silently
            raise ValueError(
                "lr_schedule multistep has no milestones (a constant lr): give lr_schedule.milestones (epochs, "
                "e.g. [160, 180]) and lr_schedule.milestone_factors (e.g. [0.1, 0.01]), or another name"
            )

    @classmethod
    def from_config(cls, value: LRSchedule | Mapping[str, Any] | None) -> LRSchedule:
        """An :class:`LRSchedule` from itself, a dict of its fields (a checkpoint's record) or ``None``
        (the default: cosine, stepped every step)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - fields)
            if unknown:
                raise ValueError(f"lr_schedule has no fields {unknown}; valid: {', '.join(sorted(fields))}")
            return cls(**value)
        raise ValueError(f"lr_schedule must be an LRSchedule or a dict of its fields, got {value!r}")

    def to_config(self) -> dict[str, Any]:
        """The fields as plain data (what a checkpoint keeps)."""
        out = dataclasses.asdict(self)
        out["milestones"], out["milestone_factors"] = list(self.milestones), list(self.milestone_factors)
        return out

    @property
    def is_constant(self) -> bool:
        """True when the factor is 1 at every epoch the run trains."""
        return self.name == "constant" and self.warmup_epochs <= self.epoch_offset

    def factor(self, epoch: float, max_epochs: int) -> float:
        """The lr multiplier at fractional (0-based) training epoch ``epoch``."""
        return lr_factor(
            epoch + self.epoch_offset,
            schedule=self.name,
            max_epochs=max_epochs,
            warmup_epochs=self.warmup_epochs,
            warmup_start_factor=self.warmup_start_factor,
            milestones=self.milestones,
            milestone_factors=self.milestone_factors,
        )

    def build(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        max_epochs: int | None,
        steps_per_epoch: Callable[[], float],
    ) -> dict[str, Any] | None:
        """Lightning's ``lr_scheduler`` config for ``optimizer`` (``None`` when the schedule is constant).

        ``steps_per_epoch`` is called once, at the first scheduler step (never at construction): the
        training loader then exists, so asking the trainer for its length does not build it before a
        resumed run has restored its position (Lightning-AI/pytorch-lightning#20550: a loader built by
        ``estimated_stepping_batches`` in ``configure_optimizers`` never loads its checkpoint state).

        Raises:
            ValueError: a non-constant schedule without ``max_epochs`` (it is defined in epochs).
        """
        if self.is_constant:
            return None
        if not (max_epochs and max_epochs > 0):
            raise ValueError(
                f"lr_schedule {self.name!r} with warm-up {self.warmup_epochs} is defined in epochs: set "
                "trainer max_epochs (> 0)"
            )
        per_step = self.interval == "step"
        cached: list[float] = []

        def factor(step: int) -> float:
            if step == 0 or not per_step:
                return self.factor(float(step), max_epochs)
            if not cached:
                cached.append(max(float(steps_per_epoch()), 1.0))
            return self.factor(step / cached[0], max_epochs)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"scheduler": scheduler, "interval": self.interval}


# --------------------------------------------------------------------------------------------------
# AGD
# --------------------------------------------------------------------------------------------------
def agd_scale(shape: torch.Size | tuple[int, ...]) -> float:
    """Spectral scale ``sqrt(fan_out / fan_in)`` (``/ sqrt(kh * kw)`` for a 4-d conv weight)."""
    scale = math.sqrt(shape[0] / shape[1])
    if len(shape) == 4:
        scale /= math.sqrt(shape[2] * shape[3])
    return scale


def check_agd_parameters(named: Iterable[tuple[str, Tensor]]) -> None:
    """Raise ``ValueError`` naming the first parameter AGD cannot train (only 2-d and 4-d weights).

    AGD's step size comes from the spectral norms of weight matrices; a bias or a BatchNorm affine
    (1-d) has none: build the network without them (e.g. ``bn_affine: false``, ``bias=False``).
    """
    for name, p in named:
        if p.dim() not in (2, 4):
            hint = " (a bias or a BatchNorm scale/shift)" if p.dim() == 1 else ""
            raise ValueError(
                f"AGD trains 2-d (linear) and 4-d (conv) weights only; parameter {name!r} has shape "
                f"{tuple(p.shape)}{hint}: build the model without it (e.g. backbone_kwargs.bn_affine: false, "
                "bias=False) or freeze it"
            )


@torch.no_grad()
def agd_orthogonal_init_(params: Iterable[Tensor]) -> None:
    """AGD's initialisation, in place: each ``[out, in]`` slice (every kernel position of a conv)
    a random semi-orthogonal matrix (``nn.init.orthogonal_``), then scaled by :func:`agd_scale`."""
    for p in params:
        if p.dim() == 2:
            nn.init.orthogonal_(p)
        elif p.dim() == 4:
            for i in range(p.shape[2]):
                for j in range(p.shape[3]):
                    nn.init.orthogonal_(p[:, :, i, j])
        else:
            raise ValueError(f"AGD initialises 2-d and 4-d weights only, got shape {tuple(p.shape)}")
        p.mul_(agd_scale(p.shape))


class AGD(torch.optim.Optimizer):
    """Automatic gradient descent (formulas in the module docstring); ``depth`` L = number of tensors.

    Args:
        params: weight tensors, or ``(name, tensor)`` pairs (``module.named_parameters()``), so an
            unsupported parameter is named in the error. Parameter groups may set their own ``gain``.
        gain: multiplies every update (Markou et al.'s ``nc/models/model_structure.py``: 10).

    ``step`` returns the closure's loss (if any); the step size η of the last step is kept as a device
    tensor in ``last_log_step`` (no host synchronisation). A parameter without a gradient adds 0 to G
    and does not move, but still counts in L. Like torch's fused optimizers, the step honours
    ``grad_scale`` and ``found_inf`` attributes set by a ``GradScaler`` or the finite guard: it unscales
    the gradients and skips the update on the device when ``found_inf`` is non-zero (no host sync).

    Raises:
        ValueError: a parameter that is not 2-d or 4-d (bias, BatchNorm affine), or ``gain <= 0``.
    """

    _step_supports_amp_scaling = True

    def __init__(self, params: ParamsT, gain: float = 1.0) -> None:
        if not gain > 0:
            raise ValueError(f"gain must be > 0, got {gain}")
        super().__init__(params, defaults={"gain": gain})
        for group in self.param_groups:
            names = group.get("param_names") or [f"#{k}" for k in range(len(group["params"]))]
            check_agd_parameters(zip(names, group["params"]))
        self.depth = sum(len(g["params"]) for g in self.param_groups)
        self.last_log_step: Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        entries = []  # (param, scale, per-position gradient norms [1, 1, kh, kw] or [1, 1], group gain)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                norms = torch.linalg.vector_norm(p.grad, dim=(0, 1), keepdim=True)
                entries.append((p, agd_scale(p.shape), norms, group["gain"]))
        if not entries:
            return loss
        grad_scale: Tensor | None = getattr(self, "grad_scale", None)
        found_inf: Tensor | None = getattr(self, "found_inf", None)
        # G accumulates in at least float32 (half-precision parameters), else in the parameters' dtype
        acc = torch.promote_types(entries[0][2].dtype, torch.float32)
        g_total = torch.stack([s * n.sum(dtype=acc) for _, s, n, _ in entries]).sum() / self.depth
        if grad_scale is not None:  # the gradients are scaled: G is not scale-invariant, the directions are
            g_total = g_total / grad_scale.to(acc)
        log_step = torch.log((1 + torch.sqrt(1 + 4 * g_total)) / 2)
        device = entries[0][0].device
        skip = None if found_inf is None else found_inf.to(device).reshape(()) > 0
        for p, scale, norms, gain in entries:
            # 0 where the slice's gradient is 0 (its update is 0 either way)
            factor = torch.where(norms > 0, scale / norms, torch.zeros_like(norms))
            update = (gain / self.depth) * log_step.to(p.dtype) * factor * p.grad
            if skip is not None:  # NaN-safe: a skipped update is exactly 0
                update = torch.where(skip, torch.zeros_like(update), update)
            p.sub_(update)
        self.last_log_step = log_step
        return loss
