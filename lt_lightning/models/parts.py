"""The parts a method is built from: the representation (backbone → neck) and the injected optimizer,
schedule and mixup, with the plain records of them that a checkpoint keeps.

A checkpoint is read with ``torch.load(weights_only=True)``, so its hyper-parameters may only hold
plain data: the optimizer as ``{"class_path", "init_args"}``, the schedule and mixup as dicts of their
fields. :func:`give_parts` turns either form into the objects a module uses and writes the records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lt_lightning.data.augment import Mixup
from lt_lightning.nn.backbones import BackboneName, build_backbone, feature_dim_of
from lt_lightning.nn.heads import FeatureNeck, NeckMode
from lt_lightning.optim import (
    AGD,
    LRSchedule,
    OptimizerFactory,
    describe_optimizer,
    optimizer_class,
    optimizer_from_config,
)

__all__ = [
    "LINKED_FACTS",
    "Backbone",
    "CompileOption",
    "NeckMode",
    "TrainMeans",
    "build_representation",
    "check_data_facts",
    "compile_parts",
    "give_parts",
    "mixup_from_config",
]

#: the facts of a run its datamodule owns and links into the model (the CLI's links, in this order)
LINKED_FACTS = ("num_classes", "class_counts", "shot_groups")

#: the ``backbone`` option's type: a name :func:`~lt_lightning.nn.backbones.build_backbone` accepts. The
#: modules also take a ready ``nn.Module`` from Python (checked at run time); the annotation leaves it
#: out on purpose, since jsonargparse would list every ``nn.Module`` subclass in ``--help``.
Backbone = BackboneName


def build_representation(
    backbone: str | nn.Module,
    backbone_kwargs: dict[str, Any] | None,
    fixdim: bool,
    trainable_backbone: Sequence[str] | None,
    neck: str | nn.Module,
    feature_scale: float,
    num_classes: int,
    channels_last: bool = False,
) -> tuple[nn.Module, nn.Module, int]:
    """``(backbone, neck, d)``: the backbone by name (or as given), frozen but for ``trainable_backbone``,
    and the feature neck (or the given one).

    Raises:
        ValueError: a module without a feature dimension, ``trainable_backbone`` prefixes that match
            nothing, or freezing a backbone built by name without pretrained weights.
    """
    if isinstance(backbone, nn.Module):
        feature_dim_of(backbone)  # refuses a module without out_features / num_features
        net = backbone
    else:
        net = build_backbone(backbone, num_classes=num_classes, fixdim=fixdim, **(backbone_kwargs or {}))
    if trainable_backbone is not None:
        _freeze_all_but(
            net, tuple(trainable_backbone), built=not isinstance(backbone, nn.Module), kwargs=backbone_kwargs
        )
    d = feature_dim_of(net)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    head_input = neck if isinstance(neck, nn.Module) else FeatureNeck(d, neck, scale=feature_scale)
    return net, head_input, d


#: ``compile_backbone``: False (eager), True (the backbone), ``"step"`` (the training step's model part)
CompileOption = bool | Literal["step"]


def compile_parts(module: Any, option: CompileOption, device: torch.device) -> dict[str, Callable[..., Any]]:
    """The compiled callables a module uses in place of its eager parts (empty: all eager).

    ``True`` compiles the backbone; ``"step"`` compiles what a training step computes: backbone → neck
    as one graph and ``compute_loss``, with CUDA graphs (``mode="reduce-overhead"``: one launch per part
    instead of one per kernel; Lightning's loop, the optimizer and the callbacks stay outside the graphs).
    Compiling wraps references, so parameters and state-dict keys stay those of the eager module.
    On a CPU the option is off (with a warning): a small network's step is as fast eager, and the
    compile costs more than a short CPU run.
    """
    if option not in (False, True, "step"):
        raise ValueError(f"compile_backbone must be false, true or 'step', got {option!r}")
    if not option:
        return {}
    if device.type != "cuda":
        rank_zero_warn(
            f"compile_backbone={option!r} is off on {device.type}: the module runs eager (CUDA only)"
        )
        return {}
    if option is True:
        return {"backbone": torch.compile(module.backbone)}
    representation = nn.Sequential(module.backbone, module.neck)  # the same modules, not copies
    return {
        "representation": torch.compile(representation, mode="reduce-overhead"),
        "loss": torch.compile(module.compute_loss, mode="reduce-overhead"),
    }


class TrainMeans:
    """Epoch means of the training loss and accuracy, summed on the device with no per-step host read
    and no per-step logging call: ``[2]`` sums (loss · batch size, correct predictions) on the device,
    the sample counts as host ints (known without reading the device)."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.n = self.n_acc = 0

    def step(
        self, module: Any, loss: torch.Tensor, logits: torch.Tensor | None, targets: torch.Tensor
    ) -> None:
        """Add a training batch (``logits`` None: no accuracy, e.g. mixup); log ``train/loss_step`` on
        the steps Lightning's logger writes (every ``log_every_n_steps``), the only logging call of a step."""
        self.add(loss, logits, targets)
        trainer = module._trainer
        every = trainer.log_every_n_steps if trainer is not None else 0  # no trainer: nothing to log to
        if every and (module.global_step + 1) % every == 0:
            # sync_dist: under DDP the value is the mean over ranks (an all-reduce every n steps only)
            module.log(
                "train/loss_step", loss, on_step=True, on_epoch=False, batch_size=len(targets), sync_dist=True
            )

    def log_epoch(self, module: Any) -> None:
        """Log the epoch means (``train/loss_epoch``, ``train/loss`` for callbacks, ``train/acc``) and reset."""
        strategy = module.trainer.strategy
        loss, acc = self.pop(lambda t: strategy.reduce(t, reduce_op="sum"))
        if loss is not None:  # train/loss: the name Lightning's callback_metrics give the epoch mean
            module.log("train/loss_epoch", loss, on_epoch=True)
            module.log("train/loss", loss, on_epoch=True, logger=False)
        if acc is not None:
            module.log("train/acc", acc, on_epoch=True)

    def add(self, loss: torch.Tensor, logits: torch.Tensor | None, targets: torch.Tensor) -> None:
        n = len(targets)
        correct = (logits.argmax(dim=1) == targets).sum() if logits is not None else loss.new_zeros(())
        step = torch.stack((loss.detach().float() * n, correct.float()))
        self.sums = step if self.sums is None else self.sums.add_(step)
        self.n += n
        self.n_acc += n if logits is not None else 0

    def pop(
        self, reduce: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(mean loss, mean accuracy)`` as 0-d device tensors over all ranks (``reduce``: a sum over
        ranks), None where nothing was summed; resets the sums."""
        if self.sums is None:
            return None, None
        has_acc = self.n_acc > 0  # the same on every rank (mixup is on or off for the run)
        counts = torch.tensor([self.n, self.n_acc], dtype=torch.float32, device=self.sums.device)
        total = reduce(torch.cat((self.sums, counts)))  # one collective per epoch under DDP
        self.sums, self.n, self.n_acc = None, 0, 0
        return total[0] / total[2], (total[1] / total[3] if has_acc else None)


def _freeze_all_but(
    net: nn.Module, prefixes: tuple[str, ...], built: bool, kwargs: dict[str, Any] | None
) -> None:
    names = [n for n, _ in net.named_parameters()]
    unmatched = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unmatched:
        raise ValueError(f"trainable_backbone prefixes {unmatched} match no backbone parameter")
    if built and not (kwargs or {}).get("weights_path"):
        # freezing most of a randomly initialised network trains a random-feature model, silently
        raise ValueError(
            f"trainable_backbone={list(prefixes)} freezes the rest of a backbone without pretrained weights: "
            "set backbone_kwargs.weights_path to a saved state dict (e.g. Kang's Places-LT recipe: an "
            "ImageNet-pretrained ResNet-152), or drop trainable_backbone"
        )
    for name, param in net.named_parameters():
        param.requires_grad_(name.startswith(prefixes))


def mixup_from_config(value: Mixup | dict[str, Any] | None) -> Mixup | None:
    """A :class:`~lt_lightning.data.augment.Mixup` from itself, a dict of its fields, or ``None`` (off)."""
    if value is None or isinstance(value, Mixup):
        return value
    if isinstance(value, dict):
        return Mixup(**value)
    raise ValueError(f"mixup must be a Mixup, a dict of its fields or None, got {value!r}")


def give_parts(
    hparams: MutableMapping[str, Any], optimizer: Any, lr_schedule: Any, mixup: Any
) -> tuple[OptimizerFactory, LRSchedule, Mixup | None]:
    """The optimizer factory, schedule and mixup from objects or records; ``hparams`` keeps the records.

    An optimizer callable that cannot be described (a lambda) is left out of the hyper-parameters with a
    warning: loading such a checkpoint then needs it again (``load_from_checkpoint(path, optimizer=...)``).
    """
    factory = optimizer_from_config(optimizer)
    schedule = LRSchedule.from_config(lr_schedule)
    mix = mixup_from_config(mixup)
    cls = optimizer_class(factory)
    if cls is not None and issubclass(cls, AGD) and not schedule.is_constant:
        raise ValueError(
            "the AGD optimizer chooses its own step size: set lr_schedule.name constant and warmup_epochs 0, "
            f"got {schedule}"
        )
    if not isinstance(hparams.get("optimizer"), dict):  # the CLI already recorded its config
        record = None if optimizer is None else describe_optimizer(factory)
        if optimizer is not None and record is None:
            rank_zero_warn(
                f"the optimizer {optimizer!r} cannot be recorded in the hyper-parameters (only a class or a "
                "functools.partial of one can); pass it again to load_from_checkpoint(..., optimizer=...)"
            )
            hparams.pop("optimizer", None)
        else:
            hparams["optimizer"] = record
    if "lr_schedule" in hparams:
        hparams["lr_schedule"] = schedule.to_config()
    if "mixup" in hparams:
        hparams["mixup"] = None if mix is None else dataclasses.asdict(mix)
    return factory, schedule, mix


def check_data_facts(owner: str, given: dict[str, Any], dm: Any) -> list[int] | None:
    """Refuse a datamodule whose facts differ from the ones a module was built with (``given``:
    ``num_classes``, ``class_counts``, ``shot_groups``, None where not given); the datamodule's shot groups
    when the module was given none (they are used, never written back: the datamodule owns them).

    Raises:
        ValueError: a fact differs, naming both values (``owner`` is the module's class name).
    """
    facts = {"num_classes": int(dm.num_classes), "class_counts": [int(n) for n in dm.class_counts]}
    groups = getattr(dm, "shot_groups", None)
    if groups is not None:
        facts["shot_groups"] = [int(g) for g in groups]
    for name, value in facts.items():
        mine = given.get(name)
        if mine is not None and _plain_fact(mine) != value:
            raise ValueError(
                f"{owner} was built with {name}={mine!r} but the datamodule {type(dm).__name__} has "
                f"{name}={value!r}; build the model from the datamodule's facts (the CLI links them; from "
                f"Python pass {name}=dm.{name})"
            )
    return facts.get("shot_groups") if given.get("shot_groups") is None else None


def _plain_fact(value: Any) -> Any:
    """A fact as the datamodule states it: ``[K]`` ids or counts as a list of ints (given as a list, a
    tuple or a tensor, e.g. :func:`lt_lightning.spec.shot_groups`'s LongTensor), K as an int."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return value
