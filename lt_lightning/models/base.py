"""The shared base LightningModule: backbone → neck → head → loss.

A method is a subclass that overrides ``build_head`` and/or ``compute_loss`` (and, for stateful methods,
``on_train_features``). Everything else — optimiser and schedule, mixup, logging of loss, top-1,
balanced and many/medium/few accuracy, the head protocol read by the NC callback — lives here.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning.callbacks.finite import finite_flags
from lt_lightning.losses import mixup_batch
from lt_lightning.metrics import ShotAccuracy
from lt_lightning.models.schedules import LR_SCHEDULES, lr_factor
from lt_lightning.nn.backbones import build_backbone
from lt_lightning.nn.heads import NECK_MODES, FeatureNeck, LinearHead

__all__ = ["CLASS_PATH_KEY", "LongTailModule", "load_module_from_checkpoint"]

OPTIMIZERS = ("sgd", "adamw")
#: checkpoint key holding the module's import path, so stage 2 can rebuild any stage-1 method
CLASS_PATH_KEY = "lt_lightning_class_path"
#: checkpoint key holding every rank's mixup generator state and its epoch (mid-epoch resume)
MIXUP_STATE_KEY = "lt_lightning_mixup_state"


class LongTailModule(L.LightningModule):
    """Base of every training method.

    Args:
        num_classes: K (linked from the datamodule by the CLI).
        class_counts: ``[K]`` training counts (linked from the datamodule), for shot-group accuracy.
        many_threshold, few_threshold: shot-group thresholds (linked from the datamodule).
        backbone: a name of :func:`lt_lightning.nn.backbones.build_backbone` or a ready ``nn.Module``
            with an ``out_features`` attribute.
        backbone_kwargs: keyword arguments of the backbone (e.g. ``{"width": 32}`` for 128-d ResNet-32).
        fixdim: append a projection so the feature dimension equals K (Zhu et al.).
        trainable_backbone: if given, only backbone parameters whose names start with one of these
            prefixes train (e.g. ``["net.layer4"]``: Kang's Places-LT stage 1 trains the last block).
        neck: feature normalisation before the head: ``"none"``, ``"bn"``, ``"l2"``, ``"bn_l2"``.
        feature_scale: constant factor after the neck (e.g. Markou's feature temperature).
        optimizer: ``"sgd"`` (momentum, optional Nesterov) or ``"adamw"``.
        lr, momentum, nesterov, weight_decay: optimiser settings.
        lr_schedule: ``"constant"``, ``"cosine"`` or ``"multistep"``.
        lr_interval: ``"step"`` (the factor follows the fractional epoch, smooth) or ``"epoch"`` (held
            constant within an epoch, as the authors' code does; e.g. Yang's warm-up lr·(e+1)/5 is
            ``warmup_epochs=4, warmup_start_factor=0.2``, Tang's 1/3 → 1 over 5 epochs is ``5, 1/3``).
        warmup_epochs, warmup_start_factor: linear warm-up from ``start·lr`` to ``lr`` over these epochs.
        milestones, milestone_factors: multistep epochs and the cumulative lr factors from them on.
        mixup_alpha: mixup's Beta(α, α) (0 = off); labels are mixed in the loss.
        seed: seed of the module's own randomness (mixup).
    """

    def __init__(
        self,
        num_classes: int = 10,
        class_counts: Sequence[int] | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
        backbone: str | nn.Module = "resnet32",
        backbone_kwargs: dict[str, Any] | None = None,
        fixdim: bool = False,
        trainable_backbone: Sequence[str] | None = None,
        neck: Literal[NECK_MODES] = "none",
        feature_scale: float = 1.0,
        optimizer: Literal[OPTIMIZERS] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 5e-4,
        lr_schedule: Literal[LR_SCHEDULES] = "cosine",
        lr_interval: Literal["step", "epoch"] = "step",
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.0,
        milestones: Sequence[int] = (),
        milestone_factors: Sequence[float] = (),
        mixup_alpha: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"] if isinstance(backbone, nn.Module) else None)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if class_counts is not None and len(class_counts) != num_classes:
            raise ValueError(f"class_counts has {len(class_counts)} entries but num_classes={num_classes}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
        if len(milestones) != len(milestone_factors):
            raise ValueError(
                f"milestones {list(milestones)} and milestone_factors {list(milestone_factors)} differ in length"
            )
        if mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0, got {mixup_alpha}")
        if lr_interval not in ("step", "epoch"):
            raise ValueError(f"lr_interval must be 'step' or 'epoch', got {lr_interval!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if warmup_epochs < 0 or not 0.0 <= warmup_start_factor <= 1.0:
            raise ValueError(
                f"warmup_epochs must be >= 0 and warmup_start_factor in [0, 1], got {warmup_epochs}, "
                f"{warmup_start_factor}"
            )
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}")
        self.num_classes = num_classes
        self.class_counts = list(class_counts) if class_counts is not None else None
        if isinstance(backbone, nn.Module):
            if not hasattr(backbone, "out_features"):
                raise ValueError("a backbone module must have an int attribute out_features (d)")
            self.backbone = backbone
        else:
            self.backbone = build_backbone(
                backbone, num_classes=num_classes, fixdim=fixdim, **(backbone_kwargs or {})
            )
        if trainable_backbone is not None:
            prefixes = tuple(trainable_backbone)
            names = [n for n, _ in self.backbone.named_parameters()]
            unmatched = [p for p in prefixes if not any(n.startswith(p) for n in names)]
            if unmatched:
                raise ValueError(f"trainable_backbone prefixes {unmatched} match no backbone parameter")
            for name, param in self.backbone.named_parameters():
                param.requires_grad_(name.startswith(prefixes))
        self.feature_dim = int(self.backbone.out_features)
        self.neck = FeatureNeck(self.feature_dim, neck, scale=feature_scale)
        self.head = self.build_head(self.feature_dim, num_classes)
        metric = partial(
            ShotAccuracy,
            num_classes,
            class_counts=self.class_counts,
            many_threshold=many_threshold,
            few_threshold=few_threshold,
        )
        self.val_metrics = metric()
        self.test_metrics = metric()
        self._mixup_gen: torch.Generator | None = None
        self._mixup_resume: dict[str, Any] | None = None  # from a mid-epoch checkpoint, used at train start

    # ---- what a method overrides ------------------------------------------------------------------
    def build_head(self, in_features: int, num_classes: int) -> nn.Module:
        """The classifier head (``weight [K, d]``, ``bias [K] | None``, ``forward [N, d] -> [N, K]``)."""
        return LinearHead(in_features, num_classes)

    def compute_loss(self, logits: Tensor, features: Tensor, targets: Tensor, count_labels: Tensor) -> Tensor:
        """Training loss of one batch. ``count_labels`` are the un-mixed labels (mixup)."""
        return F.cross_entropy(logits, targets)

    def on_train_features(self, features: Tensor, targets: Tensor) -> None:
        """Called with every training batch's features before the head (moving averages etc.)."""

    # ---- the head protocol (NC callback, stage 2) --------------------------------------------------
    def extract_features(self, x: Tensor) -> Tensor:
        """``[N, d]`` features: the classifier's input (after the neck)."""
        return self.neck(self.backbone(x))

    def forward_head(self, features: Tensor) -> Tensor:
        """``[N, K]`` logits used for prediction."""
        return self.head(features)

    def classifier_weight_bias(self) -> tuple[Tensor, Tensor | None]:
        """The effective linear classifier ``(W [K, d], b [K] | None)`` for NC metrics."""
        return self.head.weight, self.head.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.extract_features(x))

    # ---- training -----------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # Mixup draws from its own generator, re-seeded from (seed, rank, epoch) every epoch: never from
        # global RNG, different on every rank, and a run resumed at an epoch boundary draws the same stream.
        seed = np.random.SeedSequence([self.hparams.seed, self.global_rank, self.current_epoch])
        self._mixup_gen = torch.Generator().manual_seed(int(seed.generate_state(1, np.uint64)[0] >> 1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        alpha = self.hparams.mixup_alpha
        if alpha > 0:
            x, y_a, y_b, lam = mixup_batch(x, y, alpha, generator=self._mixup_gen)
        features = self.extract_features(x)
        self.on_train_features(features, y)
        logits = self.forward_head(features)
        if alpha > 0:
            loss = lam * self.compute_loss(logits, features, y_a, y) + (1 - lam) * self.compute_loss(
                logits, features, y_b, y
            )
        else:
            loss = self.compute_loss(logits, features, y, y)
        # read by FiniteGuard before the optimizer step (kept on the device: no host sync here)
        self._finite_flags = finite_flags(loss, features)
        # not on the progress bar: that would read the loss back to the host every step
        # sync_dist: under DDP the logged values are means over all ranks' samples (an all-reduce, no
        # host sync; a no-op on one process)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(y), sync_dist=True)
        if alpha == 0:
            acc = (logits.argmax(dim=1) == y).float().mean()
            self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    # ---- evaluation ---------------------------------------------------------------------------------
    def _eval_step(self, batch: tuple[Tensor, Tensor], metrics: ShotAccuracy, prefix: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metrics.update(logits, y)
        self.log(f"{prefix}/loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return logits

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def _log_shot_metrics(self, metrics: ShotAccuracy, prefix: str) -> dict[str, Tensor]:
        values = metrics.compute()  # reduced across ranks by torchmetrics: identical everywhere
        self.log_reduced({f"{prefix}/{k}": v for k, v in values.items()})
        metrics.reset()
        return values

    def log_reduced(self, values: dict[str, Tensor | float]) -> None:
        """Log epoch-level values that are already identical on every rank (a metric's ``compute``).

        ``sync_dist=False`` (another reduction would only cost a collective), and Lightning's advice to
        sync exactly these names is silenced so that users are not told their numbers are per-rank.
        """
        _silence_sync_dist_advice(list(values))
        self.log_dict(values, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._log_shot_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_shot_metrics(self.test_metrics, "test")

    # ---- optimisation -------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        hp = self.hparams
        params = self.trainable_parameters()
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay
            )
        else:
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant" and hp.warmup_epochs == 0:
            return opt
        if not (self.trainer.max_epochs and self.trainer.max_epochs > 0):
            raise ValueError(
                f"lr_schedule={hp.lr_schedule!r} with warm-up {hp.warmup_epochs} is defined in epochs: "
                "set trainer max_epochs (> 0)"
            )
        max_epochs = self.trainer.max_epochs
        per_epoch = hp.lr_interval == "epoch"
        steps_per_epoch = 1.0 if per_epoch else max(self.trainer.estimated_stepping_batches / max_epochs, 1.0)
        factor = partial(
            _step_lr_factor,
            steps_per_epoch=steps_per_epoch,
            schedule=hp.lr_schedule,
            max_epochs=max_epochs,
            warmup_epochs=hp.warmup_epochs,
            warmup_start_factor=hp.warmup_start_factor,
            milestones=tuple(hp.milestones),
            milestone_factors=tuple(hp.milestone_factors),
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": hp.lr_interval}}

    # ---- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_PATH_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"
        if self._mixup_gen is not None and self.hparams.mixup_alpha > 0:
            # every rank's mixup stream (uint8 state tensors: weights-only safe), for exact mid-epoch resume
            state = self._mixup_gen.get_state()
            states = self.all_gather(state) if self.trainer.world_size > 1 else state[None]
            checkpoint[MIXUP_STATE_KEY] = {"epoch": self.current_epoch, "states": states.cpu()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._mixup_resume = checkpoint.get(MIXUP_STATE_KEY)

    def on_train_start(self) -> None:
        loop = self.trainer.fit_loop
        # configure_optimizers reads estimated_stepping_batches, which builds the training loader before
        # Lightning restores the loops; the fit loop then keeps that loader and never loads the
        # checkpoint's loader state (the position within the epoch). Rebuilding it here, after the
        # restore and before the first batch, loads that state: exact mid-epoch resume.
        if loop.restarting and getattr(loop, "_combined_loader_states_to_load", None):
            loop._combined_loader = None
            loop.setup_data()
        resumed, self._mixup_resume = self._mixup_resume, None
        if resumed is not None and resumed["epoch"] == self.current_epoch:
            # resumed mid-epoch (on_train_epoch_start is not called again): continue this rank's stream
            states = resumed["states"]
            self._mixup_gen = torch.Generator()
            self._mixup_gen.set_state(states[min(self.global_rank, len(states) - 1)])


def _silence_sync_dist_advice(names: Sequence[str]) -> None:
    """Silence Lightning's advice to pass ``sync_dist=True`` for exactly these already-reduced values.

    Lightning warns on every distributed epoch-level ``self.log(..., sync_dist=False)``; for a value a
    torchmetrics ``compute`` has already reduced over ranks the advice is wrong (syncing again would only
    cost a collective), and it tells users their numbers are not global.
    """
    pattern = "|".join(re.escape(n) for n in names)
    warnings.filterwarnings("ignore", message=rf".*self\.log\('({pattern})'.*sync_dist=True")


def _step_lr_factor(step: int, *, steps_per_epoch: float, **kwargs) -> float:
    return lr_factor(step / steps_per_epoch, **kwargs)


def load_module_from_checkpoint(path: str, map_location: str | torch.device = "cpu") -> LongTailModule:
    """Rebuild any lt_lightning method from its checkpoint (the class is read from the checkpoint).

    The file is read with ``torch.load(weights_only=True)`` (see :mod:`lt_lightning.checkpoints`): a
    checkpoint from someone else cannot run code, and the class it names must be a ``LongTailModule``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is empty, corrupt, holds non-weights objects, or is not a checkpoint written
            by an lt_lightning module.
    """
    from lt_lightning.checkpoints import load_checkpoint_file

    what = "stage-1 checkpoint"
    ckpt = load_checkpoint_file(path, map_location="cpu", what=what)
    class_path = ckpt.get(CLASS_PATH_KEY)
    if not isinstance(class_path, str) or "state_dict" not in ckpt:
        raise ValueError(
            f"{what} {path!r} is not a checkpoint of an lt_lightning module (no {CLASS_PATH_KEY!r})"
        )
    module_name, _, cls_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"{what} {path!r} names the class {class_path!r}, which cannot be imported") from err
    if not (isinstance(cls, type) and issubclass(cls, LongTailModule)):
        raise ValueError(f"{what} {path!r} names {class_path!r}, which is not an lt_lightning LongTailModule")
    return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True)
