"""The base of the stage-2 methods: a frozen stage-1 representation, read from its checkpoint once.

:class:`Stage2Module` is the only reader of the stage-1 checkpoint. It reads the file weights-only,
rebuilds the stage-1 backbone and neck from the recorded hyper-parameters with the same builders a
method uses (:func:`~lt_lightning.models.parts.build_representation`, the stage-1 class's
``build_head``), loads their weights, and records the stage-1 class and hyper-parameters as
``stage1_module``, so that a stage-2 checkpoint rebuilds the architecture without the stage-1 file
(the weights are in its own state dict). No LightningModule of stage 1 is instantiated.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor, nn

from lt_lightning.checkpoints import load_checkpoint_file, resolve_class
from lt_lightning.data.augment import Mixup
from lt_lightning.models.base import CLASS_PATH_KEY, LongTailModule
from lt_lightning.models.migration import migrate_checkpoint, migrate_hparams
from lt_lightning.models.parts import build_representation
from lt_lightning.optim import LRSchedule, OptimizerFactory

__all__ = ["BN_MODES", "BNMode", "Stage1", "Stage2Module", "read_stage1", "stage2_options"]

BNMode = Literal["reestimate", "frozen"]
BN_MODES: tuple[str, ...] = get_args(BNMode)


@dataclass
class Stage1:
    """What stage 2 keeps of stage 1: the representation, the classifier and the record that rebuilds it."""

    backbone: nn.Module
    neck: nn.Module
    head: nn.Module
    record: dict[str, Any]


def _defaults(cls: type) -> dict[str, Any]:
    """Default values of every ``__init__`` argument along ``cls``'s MRO (the subclass's first)."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, p in inspect.signature(init).parameters.items():
            if p.default is not inspect.Parameter.empty:
                out[name] = p.default
    return out


def stage2_options(cls: type) -> set[str]:
    """The options of a stage-2 class: its ``__init__`` arguments down to :class:`Stage2Module`'s (not
    :class:`LongTailModule`'s representation options, which the stage-1 record holds)."""
    out: set[str] = set()
    for klass in cls.__mro__:
        if klass is LongTailModule:
            break
        init = klass.__dict__.get("__init__")
        if init is not None:
            out |= {
                name
                for name, p in inspect.signature(init).parameters.items()
                if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            }
    return out


def read_stage1(path: str, record: dict[str, Any] | None, num_classes: int) -> Stage1:
    """The stage-1 representation from ``path`` (``record`` is None) or, with fresh weights, from a
    ``stage1_module`` record ``{"class_path", "init_args"}`` a stage-2 checkpoint kept.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a checkpoint of an lt_lightning stage-1 method, K differs from the data's, or a
            backbone that was a module (not a name) and cannot be rebuilt.
    """
    what = f"stage-1 checkpoint {path!r}" if record is None else "stage1_module"
    state: dict[str, Tensor] | None = None
    if record is None:
        ckpt = migrate_checkpoint(load_checkpoint_file(path, map_location="cpu", what="stage-1 checkpoint"))
        class_path = ckpt.get(CLASS_PATH_KEY)
        if not isinstance(class_path, str) or "state_dict" not in ckpt:
            raise ValueError(f"{what} is not a checkpoint of an lt_lightning module (no {CLASS_PATH_KEY!r})")
        hparams = ckpt.get("hyper_parameters") or {}
        record = {
            "class_path": class_path,
            "init_args": {k: v for k, v in hparams.items() if not k.startswith("_")},
        }
        state = ckpt["state_dict"]
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("init_args"), dict)
        or "class_path" not in record
    ):
        raise ValueError(f"stage1_module must be {{'class_path': ..., 'init_args': {{...}}}}, got {record!r}")
    record = {"class_path": record["class_path"], "init_args": migrate_hparams(record["init_args"])}
    cls = resolve_class(record["class_path"], LongTailModule, what)
    if getattr(cls, "is_stage2", False):
        raise ValueError(f"{what} is a {cls.__name__} checkpoint (a stage-2 method); give the stage-1 run's")
    init = {**_defaults(cls), **record["init_args"]}
    if init.get("num_classes") != num_classes:
        raise ValueError(
            f"the {what} has {init.get('num_classes')} classes but the data has num_classes={num_classes}"
        )
    if not isinstance(init.get("backbone"), str):
        raise ValueError(
            f"the {what} was built with a backbone module, not a name: it cannot be rebuilt here"
        )
    kwargs = {k: v for k, v in (init.get("backbone_kwargs") or {}).items() if k != "weights_path"}
    backbone, neck, d = build_representation(
        init["backbone"], kwargs, init.get("fixdim", False), None, init.get("neck", "none"),
        init.get("feature_scale", 1.0), num_classes, init.get("channels_last", False),
    )  # fmt: skip
    head = cls.build_head(init, d, num_classes)  # type: ignore[attr-defined]
    if state is not None:
        for prefix, part in (("backbone.", backbone), ("neck.", neck), ("head.", head)):
            part.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return Stage1(backbone, neck, head, record)


class Stage2Module(LongTailModule):
    """Stage 2 of decoupled training (Kang et al., ICLR 2020) on a frozen stage-1 representation.

    A method subclasses it and sets ``self.head`` from ``self.stage1_classifier`` (``(weight [K, d],
    bias [K] | None)`` of the stage-1 head). The backbone and neck are frozen.

    Args:
        stage1_checkpoint: path of a checkpoint written by any lt_lightning stage-1 method (configs write
            ``runs/<dataset>/<method>/seed{seed}/last.ckpt``: the CLI fills in ``seed_everything``).
        stage1_module: leave unset. The module records the stage-1 class and hyper-parameters here, so a
            stage-2 checkpoint rebuilds the stage-1 architecture without the stage-1 file. When given,
            ``stage1_checkpoint`` is not read.
        bn_mode: ``"reestimate"`` (Kang's code keeps the backbone in train mode, so BatchNorm statistics
            follow the stage-2 sampler) or ``"frozen"`` (backbone and neck in eval mode).
        num_classes, class_counts, shot_groups, optimizer, lr_schedule, mixup, seed: as
            :class:`~lt_lightning.models.base.LongTailModule` (K must equal the checkpoint's).

    Raises:
        FileNotFoundError: no checkpoint at ``stage1_checkpoint``.
        ValueError: the checkpoint's K differs from the data's, or it is not a stage-1 checkpoint.
    """

    is_stage2: ClassVar[bool] = True

    def __init__(
        self,
        stage1_checkpoint: str,
        stage1_module: dict[str, Any] | None = None,
        bn_mode: BNMode = "reestimate",
        num_classes: int = 10,
        class_counts: Sequence[int] | None = None,
        shot_groups: Sequence[int] | None = None,
        optimizer: OptimizerFactory | None = None,
        lr_schedule: LRSchedule | None = None,
        mixup: Mixup | None = None,
        seed: int = 0,
    ) -> None:
        if bn_mode not in BN_MODES:
            raise ValueError(f"unknown bn_mode {bn_mode!r}; valid: {', '.join(BN_MODES)}")
        stage1 = read_stage1(stage1_checkpoint, stage1_module, num_classes)
        super().__init__(
            num_classes=num_classes,
            class_counts=class_counts,
            shot_groups=shot_groups,
            backbone=stage1.backbone,  # type: ignore[arg-type]  # a module, from Python
            neck=stage1.neck,  # type: ignore[arg-type]
            optimizer=optimizer,
            lr_schedule=lr_schedule,
            mixup=mixup,
            seed=seed,
            channels_last=bool(stage1.record["init_args"].get("channels_last", False)),
        )
        self._record_own_class()
        self.hparams["stage1_module"] = stage1.record
        for module in (self.backbone, self.neck):
            module.requires_grad_(False)
        head = stage1.head
        #: the stage-1 classifier ``(weight [K, d], bias [K] | None)`` (plain tensors, not saved)
        self.stage1_classifier: tuple[Tensor, Tensor | None] = (
            head.weight.detach().clone(),
            None if head.bias is None else head.bias.detach().clone(),
        )
        self.stage1_head_type: type[nn.Module] = type(head)
        # classifiers fitted from data at evaluation (τ-norm, NCM) are not ready until then
        self.register_buffer("post_hoc_ready", torch.tensor(type(self).trains))
        # bn_mode "frozen" from the start: Lightning keeps each submodule's mode as it finds it (and puts
        # it back after validation), so the frozen BatchNorm layers must already be in eval mode
        self.train(self.training)

    def _record_own_class(self) -> None:
        """Keep this class's own options in the hyper-parameters, and the class that was built.

        ``save_hyperparameters`` also records :class:`LongTailModule`'s representation options (``backbone``,
        ``fixdim``, ...), which a stage-2 class does not take (``stage1_module`` records them): a checkpoint
        holding them would not reload. Built through the ``DecoupledModule`` factory, the CLI records the
        factory's options and class: the built class and its own options are kept, so that its checkpoint
        reloads as that class."""
        allowed = stage2_options(type(self))
        for key in [k for k in self.hparams if not k.startswith("_") and k not in allowed]:
            del self.hparams[key]
        own = f"{type(self).__module__}.{type(self).__qualname__}"
        if self.hparams.get("_class_path") not in (None, own):
            self.hparams["_class_path"] = own

    def on_train_start(self) -> None:
        # Lightning keeps every submodule's mode when a fit starts (it calls no .train()): set the
        # stage-2 modes here, so that bn_mode "frozen" really keeps the representation in eval mode
        super().on_train_start()
        self.train()

    def train(self, mode: bool = True) -> Stage2Module:
        super().train(mode)
        if mode and self.hparams.get("bn_mode") == "frozen":
            self.backbone.eval()
            self.neck.eval()
        return self

    def extract_features(self, x: Tensor) -> Tensor:
        # The representation is frozen: no graph through it (saves the backbone's activations).
        with torch.no_grad():
            return super().extract_features(x)
