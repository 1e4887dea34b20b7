"""The shared base LightningModule: backbone → neck → head → loss, and the steps.

A method subclasses :class:`LongTailModule`, assigns ``self.head`` after ``super().__init__()`` and
overrides ``compute_loss`` (and ``on_train_features`` for state kept from training batches). The parts
are given, not named here: the optimizer (Lightning's ``OptimizerCallable``), the schedule, mixup and
the run's facts (class counts and shot groups, linked from the datamodule by the CLI).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning.data.augment import Mixup
from lt_lightning.metrics import ShotAccuracy
from lt_lightning.models.evaluation import EvaluationSteps
from lt_lightning.models.hooks import method_callbacks
from lt_lightning.models.migration import checkpoint_source
from lt_lightning.models.parts import (
    LINKED_FACTS,
    Backbone,
    CompileOption,
    NeckMode,
    TrainMeans,
    build_representation,
    check_data_facts,
    compile_parts,
    give_parts,
)
from lt_lightning.optim import LRSchedule, OptimizerFactory, build_optimizer
from lt_lightning.spec import check_shot_groups

__all__ = ["CLASS_PATH_KEY", "LongTailModule"]

#: checkpoint key holding the module's import path, so stage 2 can rebuild any stage-1 method
CLASS_PATH_KEY = "lt_lightning_class_path"
_PLAIN_STEP_ATTRIBUTES = frozenset({"_current_fx_name", "finite_flags"})  # never parameters/buffers


def finite_flags(loss: Tensor, features: Tensor) -> Tensor:
    """``[2]`` bool on the device: is the loss finite, are all features finite (read by the finite guard)."""
    return torch.stack((torch.isfinite(loss.detach()).all(), torch.isfinite(features.detach()).all()))


class LongTailModule(EvaluationSteps, L.LightningModule):
    """Base of every training method.

    Args:
        num_classes: K (linked from the datamodule by the CLI).
        class_counts: ``[K]`` training counts (linked from the datamodule); losses that use them read them
            here. Must equal the datamodule's when the trainer starts.
        shot_groups: ``[K]`` shot group per class, 0 many / 1 medium / 2 few (linked from the datamodule,
            which owns the rule: count thresholds or class-index ranges). Without it the module takes the
            datamodule's groups when the trainer starts; given, it must equal them.
        backbone: a name of :func:`lt_lightning.nn.backbones.build_backbone` or, from Python only, a
            ready ``nn.Module`` with an int ``out_features`` or ``num_features`` (timm) attribute (d).
        backbone_kwargs: keyword arguments of the backbone (e.g. ``{"width": 32}`` for 128-d ResNet-32).
        fixdim: append a projection so the feature dimension equals K (Zhu et al.).
        trainable_backbone: if given, only backbone parameters whose names start with one of these
            prefixes train (e.g. ``["net.layer4"]``: Kang's Places-LT stage 1 trains the last block).
            A backbone built by name must then load pretrained weights (``backbone_kwargs.weights_path``).
        neck: feature normalisation before the head: ``"none"``, ``"bn"``, ``"l2"``, ``"bn_l2"``.
        feature_scale: constant factor after the neck (e.g. Markou's feature temperature).
        optimizer: the optimizer factory (``params -> Optimizer``), e.g. ``torch.optim.SGD`` with
            ``lr``, ``momentum``, ``weight_decay`` in a config; ``None``: SGD, lr 0.1, momentum 0.9, weight
            decay 5e-4. :class:`lt_lightning.optim.AGD` (Markou et al.) needs a constant schedule and only
            2-d/4-d trainable weights, and gets its orthogonal init at the start of the first fit.
        lr_schedule: warm-up and decay (:class:`~lt_lightning.optim.LRSchedule`; default: cosine).
        mixup: mixup of the training batches (:class:`~lt_lightning.data.augment.Mixup`; ``None``: off),
            seeded per batch from ``(seed, epoch, rank, batch index)``.
        seed: seed of the module's own randomness (mixup).
        channels_last: keep the backbone's weights and image inputs in ``torch.channels_last`` format.
        compile_backbone: ``True`` compiles the backbone, ``"step"`` the step's model part with CUDA graphs;
            GPU only (:func:`~lt_lightning.models.parts.compile_parts`; state-dict keys unchanged).

    Mixed precision (``bf16-mixed`` / ``16-mixed``) works for every method; where precision matters the
    pieces stay wider (the ETF buffer and parameters float32, the nearest-ETF solve, TDE's head and the DR
    loss in float32, NCM / τ statistics and NC metrics in float64).
    """

    #: options that only change evaluation: a config or command line overrides a checkpoint's value
    evaluation_options: ClassVar[tuple[str, ...]] = ()
    #: options a checkpoint's fitted state depends on: refused as an override at evaluation
    fitted_options: ClassVar[tuple[str, ...]] = ()
    #: False for methods with nothing to train (τ-norm, NCM): they are validated or tested, not fitted
    trains: ClassVar[bool] = True
    #: this class's hyper-parameters are a stage-2 record (no representation options of their own)
    is_stage2: ClassVar[bool] = False

    head: nn.Module

    def __init__(
        self,
        num_classes: int = 10,
        class_counts: Sequence[int] | None = None,
        shot_groups: Sequence[int] | None = None,
        backbone: Backbone = "resnet32",
        backbone_kwargs: dict[str, Any] | None = None,
        fixdim: bool = False,
        trainable_backbone: Sequence[str] | None = None,
        neck: NeckMode = "none",
        feature_scale: float = 1.0,
        optimizer: OptimizerFactory | None = None,
        lr_schedule: LRSchedule | None = None,
        mixup: Mixup | None = None,
        seed: int = 0,
        channels_last: bool = False,
        compile_backbone: CompileOption = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=[n for n, v in (("backbone", backbone), ("neck", neck)) if isinstance(v, nn.Module)]
        )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if class_counts is not None and len(class_counts) != num_classes:
            raise ValueError(f"class_counts has {len(class_counts)} entries but num_classes={num_classes}")
        self.num_classes = num_classes
        self.class_counts = None if class_counts is None else [int(n) for n in class_counts]
        groups = None if shot_groups is None else check_shot_groups(shot_groups, num_classes)
        self.optimizer, self.lr_schedule, self.mixup = give_parts(self.hparams, optimizer, lr_schedule, mixup)
        rep = (backbone, backbone_kwargs, fixdim, trainable_backbone, neck, feature_scale, num_classes)
        self.backbone, self.neck, self.feature_dim = build_representation(*rep, channels_last)
        self.channels_last, self.compile_backbone = channels_last, compile_backbone
        self._compiled: dict[str, Any] = {}  # compile_parts' callables, from setup
        self._train_means = TrainMeans()
        self.val_metrics = ShotAccuracy(num_classes, shot_groups=groups)
        self.test_metrics = ShotAccuracy(num_classes, shot_groups=groups)
        self.finite_flags: Tensor | None = None  # set by training_step, read by the finite guard

    def __setattr__(self, name: str, value: Any) -> None:
        # set ~40 times a step (Lightning names the running hook): nn.Module's checks would store it alike
        if name in _PLAIN_STEP_ATTRIBUTES:
            return object.__setattr__(self, name, value)
        super().__setattr__(name, value)

    # ---- what a method overrides ------------------------------------------------------------------
    def compute_loss(self, logits: Tensor, features: Tensor, targets: Tensor, count_labels: Tensor) -> Tensor:
        """Training loss of one batch. ``count_labels`` are the un-mixed labels (mixup)."""
        return F.cross_entropy(logits, targets)

    def on_train_features(self, features: Tensor, targets: Tensor) -> None:
        """Called with every training batch's features before the head (moving averages etc.)."""

    # ---- the head protocol (NC callback, stage 2) --------------------------------------------------
    def extract_features(self, x: Tensor) -> Tensor:
        """``[N, d]`` features: the classifier's input (after the neck)."""
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if "representation" in self._compiled:  # compile_parts' backbone → neck
            return self._compiled["representation"](x)
        return self.neck(self._compiled.get("backbone", self.backbone)(x))

    def forward_head(self, features: Tensor) -> Tensor:
        """``[N, K]`` logits used for prediction."""
        return self.head(features)

    def classifier_weight_bias(self) -> tuple[Tensor, Tensor | None]:
        """The effective linear classifier ``(W [K, d], b [K] | None)`` for NC metrics."""
        return self.head.weight, self.head.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.extract_features(x))

    # ---- the run's facts ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if not isinstance(getattr(self, "head", None), nn.Module):
            raise TypeError(f"{type(self).__name__} has no head: assign self.head after super().__init__()")
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "class_counts", None) is not None:
            given = (self.num_classes, self.class_counts, self.hparams.get("shot_groups"))
            groups = check_data_facts(type(self).__name__, dict(zip(LINKED_FACTS, given)), dm)
            if groups is not None:
                self.use_shot_groups(groups)
        if self.compile_backbone and not self._compiled:  # the module moves to its device after setup
            device = self._trainer.strategy.root_device if self._trainer is not None else self.device
            self._compiled = compile_parts(self, self.compile_backbone, device)

    def use_shot_groups(self, groups: Sequence[int]) -> None:
        """Evaluate many/medium/few with ``groups`` ``[K]`` in every :class:`ShotAccuracy` of the module."""
        ids = check_shot_groups(groups, self.num_classes).to(self.device)
        for module in self.modules():
            if isinstance(module, ShotAccuracy):
                module.class_group = ids

    # ---- training -----------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        mixed = self.mixup is not None and self.mixup.alpha > 0
        if mixed:
            position = {"epoch": self.current_epoch, "rank": self.global_rank, "batch_idx": batch_idx}
            x, y_a, y_b, lam = self.mixup(x, y, seed=self.hparams.seed, **position)
        features = self.extract_features(x)
        self.on_train_features(features, y)
        logits = self.forward_head(features)
        compute_loss = self._compiled.get("loss", self.compute_loss)
        if mixed:
            loss = lam * compute_loss(logits, features, y_a, y)
            loss = loss + (1 - lam) * compute_loss(logits, features, y_b, y)
        else:
            loss = compute_loss(logits, features, y, y)
        self.finite_flags = finite_flags(loss, features)  # device tensor: no host sync here
        self._train_means.step(self, loss, None if mixed else logits, y)
        return loss

    def on_train_epoch_end(self) -> None:
        self._train_means.log_epoch(self)

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def configure_optimizers(self):
        named = self.named_trainable_parameters()
        if not named:
            raise ValueError(
                f"{type(self).__name__} has nothing to train; run `lt-lightning validate` or `test`"
            )
        optimizer = build_optimizer(self.optimizer, named)  # named: errors (AGD's) can name a parameter
        max_epochs = self.trainer.max_epochs
        steps = lambda: self.trainer.estimated_stepping_batches / max_epochs  # noqa: E731 (asked lazily)
        scheduler = self.lr_schedule.build(optimizer, max_epochs=max_epochs, steps_per_epoch=steps)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    def configure_callbacks(self) -> list[L.Callback]:
        return method_callbacks(self)

    # ---- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_PATH_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.weights_from_checkpoint = True  # a later fit must not re-initialise them (AGD's init)

    @classmethod
    def builds(cls, other: type) -> bool:
        """Whether constructing ``cls`` can give an ``other`` (a factory's classes; else subclasses)."""
        return issubclass(other, cls)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, always weights-only; also reads lt_lightning 0.1 checkpoints
        (:mod:`~lt_lightning.models.migration`); on a factory (``DecoupledModule``) gives the named class."""
        target, source = checkpoint_source(checkpoint_path, cls, LongTailModule)
        kwargs.setdefault("weights_only", True)
        return super(LongTailModule, target).load_from_checkpoint(source, *args, **kwargs)
