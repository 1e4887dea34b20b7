"""TDE: causal-norm classifier with counterfactual test-time logits (Tang et al. NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lt_lightning.models.base import LongTailModule
from lt_lightning.models.parts import Backbone
from lt_lightning.models.sweeps import AccuracySweep
from lt_lightning.nn.heads import CausalNormHead

__all__ = ["TDEModule"]


class TDEModule(LongTailModule):
    """Multi-head causal-norm classifier; the moving-average feature ``head.embed`` is a buffer
    (all-reduced under DDP, saved in checkpoints); evaluation uses TDE logits with ``alpha``.

    Validation also sweeps ``alpha_grid`` without retraining and logs ``val/tde_alpha/acc@<α>`` (and the
    other shot accuracies), plus ``val/tde_alpha/best_alpha``.

    Args:
        num_heads: number of heads of the causal-norm (multi-head normed) classifier (Tang: 2).
        tau: logit scale of the causal-norm head (Tang: 16).
        gamma: weight-norm offset γ of the causal-norm head (Tang: 1/32).
        embed_momentum: μ of the moving average x̄ ← μ·x̄ + mean_batch(x): a number (CIFAR: 0.9) or ``"lr"``
            for Tang's ImageNet-style rule μ = 1 − 0.1·min(50·lr, 1), recomputed every epoch from the
            current learning rate. (Named apart from the optimiser's ``momentum``, which SGD keeps.)
        alpha: TDE strength at evaluation (CIFAR-10: 1.0, CIFAR-100: 1.5, ImageNet-LT: 3.0).
        alpha_grid: values swept at validation (empty: no sweep).
        alpha_from_validation: use the α of the last validation sweep (best top-1) at test and logged as
            ``test/tde_alpha/alpha``; refuses a datamodule whose validation split is its test split. Tang
            reports a fixed α per dataset instead (the default, ``False``).
        backbone: default ``"resnet32_tde"`` (Tang's two-branch ResNet-32, 128-d).
        **kwargs: :class:`~lt_lightning.models.base.LongTailModule` arguments.
    """

    evaluation_options: ClassVar[tuple[str, ...]] = ("alpha", "alpha_grid")

    def __init__(
        self,
        num_heads: int = 2,
        tau: float = 16.0,
        gamma: float = 1 / 32,
        embed_momentum: float | Literal["lr"] = 0.9,
        alpha: float = 1.0,
        alpha_grid: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
        alpha_from_validation: bool = False,
        backbone: Backbone = "resnet32_tde",
        **kwargs: Any,
    ) -> None:
        if isinstance(embed_momentum, str) and embed_momentum != "lr":
            raise ValueError(f"embed_momentum must be a number in [0, 1] or 'lr', got {embed_momentum!r}")
        if any(a < 0 for a in alpha_grid):
            raise ValueError(f"alpha_grid values must be >= 0, got {list(alpha_grid)}")
        if alpha_from_validation and not len(alpha_grid):
            raise ValueError("alpha_from_validation needs a non-empty alpha_grid to choose from")
        super().__init__(backbone=backbone, **kwargs)
        self.head = self.build_head(self.hparams, self.feature_dim, self.num_classes)
        groups = self.hparams.get("shot_groups")
        self.alpha_sweep = (
            AccuracySweep(alpha_grid, self.num_classes, shot_groups=groups) if len(alpha_grid) else None
        )
        # the α chosen by the last validation sweep (-1: none yet); a buffer, so checkpoints keep it
        self.register_buffer("selected_alpha", torch.tensor(-1.0))
        self._warned_test_sweep = False  # the sweep-on-test warning is given once

    @classmethod
    def build_head(cls, hparams: Mapping[str, Any], in_features: int, num_classes: int) -> nn.Module:
        """The causal-norm classifier (``embed_momentum: lr`` starts at 0.9 and follows the lr per epoch)."""
        momentum = hparams.get("embed_momentum", 0.9)
        return CausalNormHead(
            in_features,
            num_classes,
            num_heads=hparams.get("num_heads", 2),
            tau=hparams.get("tau", 16.0),
            gamma=hparams.get("gamma", 1 / 32),
            momentum=0.9 if momentum == "lr" else momentum,
            alpha=hparams.get("alpha", 1.0),
        )

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.hparams.embed_momentum == "lr":
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # a host float: no device sync
            self.head.momentum = 1.0 - 0.1 * min(50.0 * lr, 1.0)

    def on_train_features(self, features: Tensor, targets: Tensor) -> None:
        self.head.update_embed(features)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        features = self.extract_features(x)
        logits = self.forward_head(features)
        self.score_batch(logits, y, self.val_metrics, "val")  # accuracy, calibration, val/loss
        if self.alpha_sweep is not None:
            self.alpha_sweep.update(self.head.logits_for_alphas(features, self.alpha_sweep.values), y)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.alpha_sweep is None:
            return
        results = self.alpha_sweep.compute()
        for value, res in zip(self.alpha_sweep.values, results):
            self.log_reduced({f"val/tde_alpha/{k}@{value:g}": v for k, v in res.items() if k.endswith("acc")})
        best = self.alpha_sweep.best(results)
        self.log_reduced({"val/tde_alpha/best_alpha": self.alpha_sweep.values[best]})
        self.alpha_sweep.reset()
        if self.hparams.alpha_from_validation and not self.trainer.sanity_checking:
            self._check_val_is_not_test()
            self.selected_alpha.fill_(self.alpha_sweep.values[best])

    def _check_val_is_not_test(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if getattr(dm, "val_is_test", False):
            raise ValueError(
                f"alpha_from_validation would choose alpha on the test split: {type(dm).__name__} has no "
                "separate validation split; set data.init_args.val_per_class > 0 or a val_file"
            )

    def _warn_if_sweeping_on_test(self) -> None:
        """The α sweep on a datamodule whose validation split is its test split: its ``best_alpha`` is
        chosen on test. Warned once per module, loudly; the α used at test stays the configured one."""
        dm = getattr(self.trainer, "datamodule", None)
        if self.alpha_sweep is None or self._warned_test_sweep or not getattr(dm, "val_is_test", False):
            return
        self._warned_test_sweep = True
        rank_zero_warn(
            f"\n{'!' * 100}\n  TDE: {type(dm).__name__} validates on its TEST split, so the alpha sweep "
            "(val/tde_alpha/*, best_alpha) is measured on test images:\n  do not select alpha from it. Test "
            f"uses the configured alpha={self.hparams.alpha:g}. For a real choice set "
            "data.init_args.val_per_class > 0 (or a val_file) and model.init_args.alpha_from_validation "
            f"true, or model.init_args.alpha_grid [] to skip the sweep.\n{'!' * 100}"
        )

    def on_fit_start(self) -> None:
        self._warn_if_sweeping_on_test()
        if self.hparams.alpha_from_validation:
            self._check_val_is_not_test()

    def on_validation_start(self) -> None:
        self._warn_if_sweeping_on_test()

    def on_test_start(self) -> None:
        if self.hparams.alpha_from_validation:
            if float(self.selected_alpha) < 0:  # once per test run: a host read is fine here
                raise ValueError(
                    "alpha_from_validation: no alpha was selected yet (fit with validation first, or test a "
                    "checkpoint written after a validation epoch)"
                )
            self.head.alpha = float(self.selected_alpha)
        how = (
            "chosen on validation (alpha_from_validation)"
            if self.hparams.alpha_from_validation
            else "configured"
        )
        if self.trainer.is_global_zero:
            print(f"[lt-lightning] TDE test: alpha = {float(self.head.alpha):g} ({how})")

    def on_test_epoch_end(self) -> None:
        self.log("test/tde_alpha/alpha", float(self.head.alpha))
        super().on_test_epoch_end()
