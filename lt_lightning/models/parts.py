"""The parts a method is built from: the representation (backbone → neck) and the injected optimizer,
schedule and mixup, with the plain records of them that a checkpoint keeps.

A checkpoint is read with ``torch.load(weights_only=True)``, so its hyper-parameters may only hold
plain data: the optimizer as ``{"class_path", "init_args"}``, the schedule and mixup as dicts of their
fields. :func:`give_parts` turns either form into the objects a module uses and writes the records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping, Sequence
from typing import Any

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
    "NeckMode",
    "build_representation",
    "check_data_facts",
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
