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
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lt_lightning.callbacks.finite import finite_flags
from lt_lightning.data.profiles import shot_groups as shot_groups_from_counts
from lt_lightning.losses import mixup_batch
from lt_lightning.metrics import ShotAccuracy
from lt_lightning.metrics.functional import SHOT_GROUP_NAMES
from lt_lightning.models.schedules import LR_SCHEDULES, lr_factor
from lt_lightning.nn.backbones import BACKBONE_NAMES, build_backbone, feature_dim_of
from lt_lightning.nn.heads import NECK_MODES, FeatureNeck, LinearHead
from lt_lightning.optim import AGD, agd_orthogonal_init_, check_agd_parameters

__all__ = [
    "CLASS_PATH_KEY",
    "PER_CLASS_COLUMNS",
    "LongTailModule",
    "load_module_from_checkpoint",
    "module_class",
    "per_class_rows",
]

OPTIMIZERS = ("sgd", "adamw", "agd")
#: the ``backbone`` argument's annotation: a name that :func:`~lt_lightning.nn.backbones.build_backbone`
#: accepts. The modules also take a ready ``nn.Module`` from Python (checked at run time); the annotation
#: leaves it out on purpose, since jsonargparse would list every ``nn.Module`` subclass in ``--help``
#: (it also evaluates ``TYPE_CHECKING`` blocks, so a checker-only union is no way around it).
Backbone = Literal[BACKBONE_NAMES]
#: checkpoint key holding the module's import path, so stage 2 can rebuild any stage-1 method
CLASS_PATH_KEY = "lt_lightning_class_path"
#: checkpoint key holding every rank's mixup generator state and its epoch (mid-epoch resume)
MIXUP_STATE_KEY = "lt_lightning_mixup_state"


class LongTailModule(L.LightningModule):
    """Base of every training method.

    Args:
        num_classes: K (linked from the datamodule by the CLI).
        class_counts: ``[K]`` training counts (linked from the datamodule), for shot-group accuracy.
        many_threshold: classes with more training samples are many-shot (linked from the datamodule).
        few_threshold: classes with fewer training samples are few-shot (linked from the datamodule).
        shot_groups: ``[K]`` explicit shot group per class (0 many, 1 medium, 2 few), overriding the
            thresholds (linked from the datamodule's ``shot_group_boundaries``, e.g. Yang's class ranges).
        backbone: a name of :func:`lt_lightning.nn.backbones.build_backbone` or, from Python only, a
            ready ``nn.Module`` with an int ``out_features`` or ``num_features`` (timm) attribute (d).
        backbone_kwargs: keyword arguments of the backbone (e.g. ``{"width": 32}`` for 128-d ResNet-32).
        fixdim: append a projection so the feature dimension equals K (Zhu et al.).
        trainable_backbone: if given, only backbone parameters whose names start with one of these
            prefixes train (e.g. ``["net.layer4"]``: Kang's Places-LT stage 1 trains the last block).
            A backbone built by name must then load pretrained weights (``backbone_kwargs.weights_path``).
        neck: feature normalisation before the head: ``"none"``, ``"bn"``, ``"l2"``, ``"bn_l2"``.
        feature_scale: constant factor after the neck (e.g. Markou's feature temperature).
        optimizer: ``"sgd"`` (momentum, optional Nesterov), ``"adamw"`` or ``"agd"`` (automatic gradient
            descent, :class:`lt_lightning.optim.AGD`, as Markou et al. train: no learning rate, so
            ``lr_schedule: constant`` without warm-up; only 2-d/4-d weights may train, e.g.
            ``backbone_kwargs.bn_affine: false``; the trainable weights get AGD's orthogonal init at the
            start of the first ``fit``, unless the module was loaded from a checkpoint).
        lr: peak learning rate (unused by ``"agd"``).
        momentum: SGD momentum (unused by ``"adamw"`` and ``"agd"``).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 weight decay of SGD, decoupled decay of AdamW (unused by ``"agd"``).
        gain: AGD's gain (multiplies every update; Markou et al.: 10).
        lr_schedule: ``"constant"``, ``"cosine"`` or ``"multistep"``.
        lr_interval: ``"step"`` (the factor follows the fractional epoch, smooth) or ``"epoch"`` (held
            constant within an epoch, as the authors' code does; e.g. Yang's warm-up lr·(e+1)/5 is
            ``warmup_epochs=4, warmup_start_factor=0.2``, Tang's 1/3 → 1 over 5 epochs is ``5, 1/3``).
        lr_epoch_offset: train epoch e at the schedule's factor of epoch ``e + lr_epoch_offset``. 0 (default)
            is the schedule as written; 1 reproduces Kaihua Tang's code (``run_networks.py`` calls
            ``scheduler.step()`` at the start of every epoch, under PyTorch >= 1.1 the first epoch
            already trains at the factor of epoch 1: the last cosine epoch trains at lr 0 and each
            multistep decay comes one epoch early).
        warmup_epochs: length of the linear learning-rate warm-up, in epochs (0 = none).
        warmup_start_factor: the warm-up starts at ``warmup_start_factor · lr`` and ends at ``lr``.
        milestones: epochs at which the ``"multistep"`` schedule steps down.
        milestone_factors: cumulative lr factor from each milestone on (e.g. ``[0.1, 0.01]``).
        mixup_alpha: mixup's Beta(α, α) (0 = off); labels are mixed in the loss.
        seed: seed of the module's own randomness (mixup).
        channels_last: keep the backbone's weights and its image inputs in ``torch.channels_last``
            memory format (faster convolutions under mixed precision on GPUs; the values are the same).
        compile_backbone: wrap the backbone in ``torch.compile`` (at ``setup``; the state-dict keys
            stay those of the plain backbone).

    Mixed precision (``--trainer.precision bf16-mixed`` / ``16-mixed``) works for every method: the
    backbone and the plain linear heads run under autocast, while the pieces where precision matters
    stay wider whatever the autocast dtype: the fixed ETF buffer and all parameters are float32
    (autocast casts copies), the implicit ETF's class means, nearest-ETF solve and its backward are
    float32 (``lt_lightning.nn.nearest_etf``), TDE's causal-norm head normalises in float32, and the
    decoupled stage's NCM / tau statistics and the NC metrics accumulate in float64.
    """

    def __init__(
        self,
        num_classes: int = 10,
        class_counts: Sequence[int] | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
        shot_groups: Sequence[int] | None = None,
        backbone: Backbone = "resnet32",
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
        gain: float = 1.0,
        lr_schedule: Literal[LR_SCHEDULES] = "cosine",
        lr_interval: Literal["step", "epoch"] = "step",
        lr_epoch_offset: int = 0,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.0,
        milestones: Sequence[int] = (),
        milestone_factors: Sequence[float] = (),
        mixup_alpha: float = 0.0,
        seed: int = 0,
        channels_last: bool = False,
        compile_backbone: bool = False,
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
        if optimizer == "agd" and (lr_schedule != "constant" or warmup_epochs > 0):
            raise ValueError(
                f"optimizer='agd' chooses its own step size: set lr_schedule='constant' and warmup_epochs=0, "
                f"got lr_schedule={lr_schedule!r}, warmup_epochs={warmup_epochs}"
            )
        if not gain > 0:
            raise ValueError(f"gain must be > 0, got {gain}")
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
        if isinstance(lr_epoch_offset, bool) or not isinstance(lr_epoch_offset, int) or lr_epoch_offset < 0:
            raise ValueError(f"lr_epoch_offset must be an int >= 0 (Tang's code: 1), got {lr_epoch_offset!r}")
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
            feature_dim_of(backbone)  # refuses a module without out_features / num_features
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
            if not isinstance(backbone, nn.Module) and not (backbone_kwargs or {}).get("weights_path"):
                # freezing most of a randomly initialised network trains a random-feature model, silently
                raise ValueError(
                    f"trainable_backbone={list(prefixes)} freezes the rest of backbone {backbone!r}, which has no "
                    "pretrained weights: set backbone_kwargs.weights_path to a saved state dict (e.g. Kang's "
                    "Places-LT recipe: an ImageNet-pretrained ResNet-152), or drop trainable_backbone"
                )
            for name, param in self.backbone.named_parameters():
                param.requires_grad_(name.startswith(prefixes))
        self.feature_dim = feature_dim_of(self.backbone)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self._compiled_backbone: nn.Module | None = None
        self.neck = FeatureNeck(self.feature_dim, neck, scale=feature_scale)
        self.head = self.build_head(self.feature_dim, num_classes)
        if shot_groups is not None and len(shot_groups) != num_classes:
            raise ValueError(f"shot_groups has {len(shot_groups)} entries but num_classes={num_classes}")
        metric = partial(ShotAccuracy, num_classes, **self.shot_kwargs())
        self.val_metrics = metric()
        self.test_metrics = metric()
        self._mixup_gen: torch.Generator | None = None
        self._agd_initialized = False  # host flag: AGD's init runs once, never over loaded weights
        self._mixup_resume: dict[str, Any] | None = None  # from a mid-epoch checkpoint, used at train start

    def shot_kwargs(self) -> dict[str, Any]:
        """Shot-group arguments of :class:`ShotAccuracy`: explicit groups if given, else counts + thresholds."""
        hp = self.hparams
        if hp.get("shot_groups") is not None:
            return {"shot_groups": list(hp.shot_groups)}
        return {
            "class_counts": self.class_counts,
            "many_threshold": hp.many_threshold,
            "few_threshold": hp.few_threshold,
        }

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
        if self.hparams.get("channels_last") and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        backbone = self._compiled_backbone if self._compiled_backbone is not None else self.backbone
        return self.neck(backbone(x))

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

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.hparams.get("optimizer") == "agd":
            # AGD's step size log(eta) of this step (Markou logs it): a device tensor, no host read here
            log_step = getattr(self.trainer.optimizers[0], "last_log_step", None)
            if log_step is not None:
                self.log("train/agd_log_step", log_step, on_step=True, on_epoch=True, batch_size=1)

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
        self._log_per_class_table(self.test_metrics, "test")
        self._log_shot_metrics(self.test_metrics, "test")

    def _log_per_class_table(self, metrics: ShotAccuracy, prefix: str) -> None:
        """A W&B table ``{prefix}/per_class`` (class, training count, accuracy, shot group)."""
        from lightning.pytorch.loggers import WandbLogger

        trainer = self._trainer
        loggers = [
            lg for lg in (trainer.loggers if trainer is not None else []) if isinstance(lg, WandbLogger)
        ]
        if not loggers:
            return
        per_class = metrics.per_class_accuracy()  # collective under DDP: every rank calls it
        if not trainer.is_global_zero:
            return
        rows = per_class_rows(per_class, self.class_counts, metrics.class_group)
        for logger in loggers:
            logger.log_table(key=f"{prefix}/per_class", columns=list(PER_CLASS_COLUMNS), data=rows)

    def predict_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Test-time logits and predictions of one batch.

        The logits are those ``test`` scores (TDE's counterfactual logits with ``alpha``, τ-norm's
        normalised classifier, NCM's centroid scores), so ``preds`` agree with the test accuracy.

        Args:
            batch: ``x`` or ``(x, y)`` (targets are passed through when present).

        Returns:
            ``{"logits": [N, K], "preds": [N]}`` plus ``"targets": [N]`` when the batch has labels.
        """
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        logits = self(x)
        out = {"logits": logits, "preds": logits.argmax(dim=1)}
        if y is not None:
            out["targets"] = y
        return out

    # ---- facts of the data (read from the datamodule when the trainer starts) ------------------------
    def adopt_datamodule(self, dm: Any) -> None:
        """Take class counts and shot thresholds from ``dm`` (the CLI links the same values).

        Python users then get the CLI's many/medium/few groups without passing them by hand. A datamodule
        without ``class_counts`` is left alone.

        Raises:
            ValueError: ``dm.num_classes`` differs from the model's K (the classifier cannot change).
        """
        counts = getattr(dm, "class_counts", None)
        if counts is None:
            return
        dm_k = getattr(dm, "num_classes", len(counts))
        if dm_k != self.num_classes:
            raise ValueError(
                f"the datamodule has num_classes={dm_k} but the model was built with num_classes="
                f"{self.num_classes}; build the model with num_classes=dm.num_classes"
            )
        counts = [int(n) for n in counts]
        hp = self.hparams
        many = int(getattr(dm, "many_threshold", hp.many_threshold))
        few = int(getattr(dm, "few_threshold", hp.few_threshold))
        if self.class_counts is not None and list(self.class_counts) != counts:
            rank_zero_warn(
                f"the model's class_counts {self.class_counts} differ from the datamodule's {counts}; "
                "using the datamodule's for the shot groups"
            )
        if (many, few) != (hp.many_threshold, hp.few_threshold) and (hp.many_threshold, hp.few_threshold) != (
            100,
            20,
        ):
            rank_zero_warn(
                f"the model's shot thresholds ({hp.many_threshold}, {hp.few_threshold}) differ from the "
                f"datamodule's ({many}, {few}); using the datamodule's"
            )
        self.class_counts = counts
        hp.class_counts, hp.many_threshold, hp.few_threshold = counts, many, few
        explicit = getattr(dm, "explicit_shot_groups", None)
        if explicit is not None:  # class-index ranges (e.g. Yang's) win over thresholds, as in the CLI link
            hp.shot_groups = [int(g) for g in explicit]
        if hp.get("shot_groups") is not None:
            groups = torch.as_tensor(list(hp.shot_groups), dtype=torch.long)
        else:
            groups = shot_groups_from_counts(torch.as_tensor(counts), many, few)
        for module in self.modules():
            if isinstance(module, ShotAccuracy):
                module.class_group = groups.to(self.device)

    # ---- optimisation -------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        trainable = {id(p) for p in self.trainable_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) in trainable]

    def setup(self, stage: str) -> None:
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            self.adopt_datamodule(dm)
        # AGD's orthogonal init (Markou's train.py: optimiser.init_weights() before any checkpoint is
        # loaded). Lightning calls setup before restoring a fit's ckpt_path, so resumed weights win.
        if stage == "fit" and self.hparams.get("optimizer") == "agd" and not self._agd_initialized:
            named = self.named_trainable_parameters()
            check_agd_parameters(named)
            agd_orthogonal_init_(p for _, p in named)
            self._agd_initialized = True
        # torch.compile wraps a reference to the backbone, so parameters, state-dict keys and
        # checkpoints are those of the plain module; the compiled callable is used for the forward.
        if self.hparams.get("compile_backbone") and self._compiled_backbone is None:
            object.__setattr__(self, "_compiled_backbone", torch.compile(self.backbone))  # not a submodule

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "agd":
            return AGD(self.named_trainable_parameters(), gain=hp.gain)
        params = self.trainable_parameters()
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay
            )
        else:
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant" and hp.warmup_epochs <= hp.get("lr_epoch_offset", 0):
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
            epoch_offset=hp.get("lr_epoch_offset", 0),
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
        self._agd_initialized = True  # trained weights: a later fit must not re-initialise them

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


#: columns of the per-class table logged at test
PER_CLASS_COLUMNS = ("class", "train_count", "accuracy", "shot_group")


def per_class_rows(
    per_class_acc: Tensor, class_counts: Sequence[int] | None, class_group: Tensor | None
) -> list[list]:
    """Rows ``[class, train_count, accuracy, shot_group]`` (``None`` for an unknown count/group, and for
    the accuracy of a class absent from the evaluation set)."""
    acc = per_class_acc.detach().double().cpu().tolist()
    groups = class_group.cpu().tolist() if class_group is not None else [None] * len(acc)
    counts = list(class_counts) if class_counts is not None else [None] * len(acc)
    return [
        [
            k,
            None if n is None else int(n),
            None if a != a else float(a),
            None if g is None else SHOT_GROUP_NAMES[g],
        ]
        for k, (n, a, g) in enumerate(zip(counts, acc, groups))
    ]


def _step_lr_factor(step: int, *, steps_per_epoch: float, epoch_offset: int = 0, **kwargs) -> float:
    return lr_factor(step / steps_per_epoch + epoch_offset, **kwargs)


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
    cls = module_class(class_path, f"{what} {path!r}")
    return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True)


def module_class(class_path: str, where: str = "class_path") -> type[LongTailModule]:
    """The :class:`LongTailModule` subclass named by ``class_path`` (``"pkg.module.Class"``).

    Raises:
        ValueError: the name cannot be imported or is not a ``LongTailModule`` subclass (``where`` says
            which file or option named it).
    """
    module_name, _, cls_name = str(class_path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"{where} names the class {class_path!r}, which cannot be imported") from err
    if not (isinstance(cls, type) and issubclass(cls, LongTailModule)):
        raise ValueError(f"{where} names {class_path!r}, which is not an lt_lightning LongTailModule")
    return cls
