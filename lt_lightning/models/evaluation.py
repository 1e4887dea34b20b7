"""The evaluation steps every method shares: loss, top-1, balanced and many/medium/few accuracy, and
calibration: ``{val,test}/ece`` (torchmetrics' ``MulticlassCalibrationError``, 15 bins, L1) with
``ece/many|medium|few`` and ``precision/many|medium|few`` (:class:`~lt_lightning.metrics.ShotCalibration`)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassCalibrationError

from lt_lightning.metrics import ShotAccuracy, ShotCalibration
from lt_lightning.metrics.functional.calibration import DEFAULT_ECE_BINS

__all__ = ["EvaluationSteps"]


class EvaluationSteps:
    """Validation, test and predict steps of a LightningModule with ``val_metrics`` / ``test_metrics``
    (:class:`~lt_lightning.metrics.ShotAccuracy`), mixed into :class:`~lt_lightning.models.LongTailModule`.
    The logits are the module's ``forward`` (``forward_head(extract_features(x))``)."""

    val_metrics: ShotAccuracy
    test_metrics: ShotAccuracy

    def calibration_metrics(
        self, prefix: str, like: Tensor
    ) -> tuple[MulticlassCalibrationError, ShotCalibration]:
        """The split's calibration metrics, made on first use (``K`` from ``like`` ``[B, K]``, on its device):
        built here, not in ``__init__``, so every method gets them; their states are not saved."""
        name = f"{prefix}_calibration"
        if name not in self._modules:  # type: ignore[attr-defined]
            k = like.shape[1]
            pair = nn.ModuleList(
                [
                    MulticlassCalibrationError(k, n_bins=DEFAULT_ECE_BINS, norm="l1", validate_args=False),
                    ShotCalibration(k, num_bins=DEFAULT_ECE_BINS),
                ]
            ).to(like.device)
            self.add_module(name, pair)  # type: ignore[attr-defined]
        overall, groups = self._modules[name]  # type: ignore[attr-defined]
        return overall, groups

    def _eval_step(self, batch: tuple[Tensor, Tensor], metrics: ShotAccuracy, prefix: str) -> Tensor:
        x, y = batch
        logits = self(x)
        self.score_batch(logits, y, metrics, prefix)
        return logits

    def score_batch(self, logits: Tensor, y: Tensor, metrics: ShotAccuracy, prefix: str) -> None:
        """Accuracy, calibration and ``{prefix}/loss`` of one evaluation batch's ``logits`` ``[B, K]``: what
        every method's validation and test steps record (a method with its own logits calls this)."""
        metrics.update(logits, y)
        overall, groups = self.calibration_metrics(prefix, logits)
        # probabilities, not logits: torchmetrics takes inputs inside [0, 1] for probabilities as they are
        overall.update(logits.detach().float().softmax(dim=1), y)
        groups.update(logits.detach(), y)
        loss = F.cross_entropy(logits, y)
        self.log(f"{prefix}/loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def log_shot_metrics(self, metrics: ShotAccuracy, prefix: str) -> dict[str, Tensor]:
        """Log ``{prefix}/acc``, balanced and many/medium/few accuracy of ``metrics``, then reset it."""
        values = metrics.compute()  # reduced across ranks by torchmetrics: identical everywhere
        pair = self._modules.get(f"{prefix}_calibration")  # type: ignore[attr-defined]
        if pair is not None and pair[1].update_called:
            overall, groups = pair
            groups.class_group = metrics.class_group  # the groups the module evaluates with
            values = {**values, **groups.compute(), "ece": overall.compute().double()}
            overall.reset()
            groups.reset()
        self.log_reduced({f"{prefix}/{k}": v for k, v in values.items()})
        metrics.reset()
        return values

    def log_reduced(self, values: dict[str, Tensor | float]) -> None:
        """Log values already identical on every rank (a metric's ``compute``): no second reduction, and
        Lightning's advice to sync exactly these names silenced (it would call them per-rank)."""
        pattern = "|".join(re.escape(n) for n in values)
        warnings.filterwarnings("ignore", message=rf".*self\.log\('({pattern})'.*sync_dist=True")
        self.log_dict(values, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self.log_shot_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self.log_shot_metrics(self.test_metrics, "test")

    def predict_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        """``{"logits": [N, K], "preds": [N]}`` (+ ``"targets"`` for ``(x, y)`` batches): what ``test`` scores."""
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        logits = self(x)
        out = {"logits": logits, "preds": logits.argmax(dim=1)}
        if y is not None:
            out["targets"] = y
        return out
