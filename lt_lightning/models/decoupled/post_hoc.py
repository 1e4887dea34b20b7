"""τ-norm and NCM: the two stage-2 methods that train nothing (Kang et al., ICLR 2020).

Both fit their classifier from data when evaluation starts: NCM its centroids from the un-augmented
training features, τ-norm its τ on the validation split; both read the data through the one
evaluation pass (:mod:`lt_lightning.loops`), and every sum is reduced across ranks, so every rank
holds the same classifier. They are run with ``lt-lightning validate`` or ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from lt_lightning.loops import evaluation_mode, evaluation_pass
from lt_lightning.models.decoupled.stage2 import Stage2Module
from lt_lightning.models.sweeps import AccuracySweep
from lt_lightning.nn.functional import ncm_transform, tau_normalize
from lt_lightning.nn.heads import NCMHead, TauNormHead

__all__ = ["TAU_GRID", "NCMModule", "PostHocModule", "TauNormModule"]

#: Kang's τ grid: 0, 0.1, …, 2.0
TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))


class PostHocModule(Stage2Module):
    """A stage-2 classifier fitted from data at the start of evaluation (``post_hoc_ready`` records it)."""

    trains: ClassVar[bool] = False

    def prepare(self) -> None:
        """Fit the classifier (called once at the start of evaluation unless ``post_hoc_ready``)."""

    def _ensure_ready(self) -> None:
        if not bool(self.post_hoc_ready):  # once per evaluation run: a host read is fine here
            self.prepare()

    def _reduce_sum(self, t: Tensor) -> Tensor:
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            return trainer.strategy.reduce(t, reduce_op="sum")
        return t

    def on_test_start(self) -> None:
        self._ensure_ready()

    def on_predict_start(self) -> None:
        self._ensure_ready()


class NCMModule(PostHocModule):
    """Nearest class mean on un-augmented training features (Kang's default: centred, L2-normalised).

    Args:
        ncm_center: subtract the mean training feature first (Kang's default).
        ncm_normalize: L2-normalise the (centred) features and class means (Kang's default).
        ncm_metric: the score: negative ``"euclidean"`` distance (Kang's default) or ``"cosine"``.
        **kwargs: :class:`~lt_lightning.models.decoupled.stage2.Stage2Module` arguments.
    """

    evaluation_options: ClassVar[tuple[str, ...]] = ("ncm_metric",)
    fitted_options: ClassVar[tuple[str, ...]] = ("ncm_center", "ncm_normalize")

    def __init__(
        self,
        ncm_center: bool = True,
        ncm_normalize: bool = True,
        ncm_metric: Literal["euclidean", "cosine"] = "euclidean",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        d, k = self.feature_dim, self.num_classes
        gm = torch.zeros(d) if ncm_center else None
        self.head = NCMHead(torch.zeros(k, d), gm, normalize=ncm_normalize, metric=ncm_metric)

    def prepare(self) -> None:
        self.fit_ncm(self.trainer.datamodule.train_eval_dataloader())

    @torch.no_grad()
    def fit_ncm(self, loader: Any) -> None:
        """Class centroids from un-augmented training features, exact under DDP (sums reduced)."""
        k, d = self.num_classes, self.feature_dim
        f64 = {"dtype": torch.float64, "device": self.device}
        mean = None
        with evaluation_mode(self):
            if self.hparams.ncm_center:
                total, count = torch.zeros(d, **f64), torch.zeros((), **f64)
                for f, _ in evaluation_pass(
                    self._trainer, self, loader, self.extract_features, desc="NCM: mean"
                ):
                    total += f.double().sum(0)
                    count += f.shape[0]
                mean = (self._reduce_sum(total) / self._reduce_sum(count)).float()
            sums, counts = torch.zeros(k, d, **f64), torch.zeros(k, **f64)
            for f, y in evaluation_pass(
                self._trainer, self, loader, self.extract_features, desc="NCM: centroids"
            ):
                f = ncm_transform(f.float(), global_mean=mean, normalize=self.hparams.ncm_normalize)
                sums.index_add_(0, y, f.double())
                counts += torch.bincount(y, minlength=k).double()
        sums, counts = self._reduce_sum(sums), self._reduce_sum(counts)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"NCM: classes {empty} have no training samples")
        self.head.centroids.copy_((sums / counts[:, None]).to(self.head.centroids.dtype))
        if mean is not None:
            self.head.global_mean.copy_(mean)
        self.post_hoc_ready.fill_(True)

    def on_validation_start(self) -> None:
        self._ensure_ready()


class TauNormModule(PostHocModule):
    """τ-normalised classifier ``w_i / ‖w_i‖^τ`` without bias; τ chosen on validation over ``tau_grid``.

    Args:
        tau: a fixed τ (``None``: choose it on the validation split by top-1, refusing a datamodule
            whose validation split is its test split).
        tau_grid: τ values swept (Kang: 0, 0.1, …, 2.0).
        **kwargs: :class:`~lt_lightning.models.decoupled.stage2.Stage2Module` arguments.
    """

    evaluation_options: ClassVar[tuple[str, ...]] = ("tau", "tau_grid")

    def __init__(self, tau: float | None = None, tau_grid: Sequence[float] = TAU_GRID, **kwargs: Any) -> None:
        if tau is not None and tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        if any(t < 0 for t in tau_grid) or not len(tau_grid):
            raise ValueError(f"tau_grid must be non-empty with values >= 0, got {list(tau_grid)}")
        super().__init__(**kwargs)
        self.head = TauNormHead(self.stage1_classifier[0], 1.0 if tau is None else tau)
        groups = self.hparams.get("shot_groups")
        self.tau_sweep = (
            None if tau is not None else AccuracySweep(tau_grid, self.num_classes, shot_groups=groups)
        )
        if tau is not None:
            self.post_hoc_ready.fill_(True)

    def prepare(self) -> None:
        if self.trainer.state.fn == "validate":
            return  # validation itself sweeps τ
        dm = self.trainer.datamodule
        if getattr(dm, "val_is_test", False):
            raise ValueError(
                f"tau_norm would choose tau on the test split: {type(dm).__name__} has no separate "
                "validation split. Set data.init_args.val_per_class > 0 (held-out training images) or a "
                "val_file, or fix model.init_args.tau (Kang's tau_norm.py prints every tau on test instead)"
            )
        self.select_tau(dm.val_dataloader())

    @torch.no_grad()
    def select_tau(self, loader: Any) -> float:
        """Choose τ on ``loader`` (validation data) by top-1 and set it on the head."""
        with evaluation_mode(self):
            for f, y in evaluation_pass(
                self._trainer, self, loader, self.extract_features, desc="tau-norm: sweep"
            ):
                self._sweep_update(f, y)
        self._sweep_finish(log=False)
        return float(self.head.tau)

    def _sweep_update(self, features: Tensor, y: Tensor) -> None:
        base = self.head.base_weight
        weights = torch.stack([tau_normalize(base, t) for t in self.tau_sweep.values])  # [T, K, d]
        self.tau_sweep.update(torch.einsum("nd,tkd->tnk", features.to(weights.dtype), weights), y)

    def _sweep_finish(self, log: bool) -> dict[str, Tensor]:
        results = self.tau_sweep.compute()
        best = self.tau_sweep.best(results)
        if log:
            swept = {f"val/tau_norm/acc@{v:g}": res["acc"] for v, res in zip(self.tau_sweep.values, results)}
            self.log_reduced({**swept, "val/tau_norm/best_tau": self.tau_sweep.values[best]})
        self.head.set_tau(self.tau_sweep.values[best])
        self.post_hoc_ready.fill_(True)
        self.tau_sweep.reset()
        return results[best]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        # A fixed ``tau`` given now (config or command line) wins over the τ stored in the checkpoint's head:
        # evaluation options are honoured at test time (the stored base weight is the stage-1 one).
        tau = self.hparams.get("tau")
        state = checkpoint.get("state_dict", {})
        if tau is not None and "head.base_weight" in state:
            base = state["head.base_weight"]
            state["head.tau"] = torch.tensor(float(tau), dtype=state["head.tau"].dtype)
            state["head.weight"] = tau_normalize(base, float(tau)).to(base.dtype)
            state["post_hoc_ready"] = torch.tensor(True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        if self.tau_sweep is None:
            return super().validation_step(batch, batch_idx)
        x, y = batch
        self._sweep_update(self.extract_features(x), y)

    def on_validation_epoch_end(self) -> None:
        if self.tau_sweep is None:
            return super().on_validation_epoch_end()
        chosen = self._sweep_finish(log=True)
        self.log_reduced({f"val/{k}": v for k, v in chosen.items()})
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.log("test/tau_norm/tau", float(self.head.tau))  # the τ used (chosen on validation or fixed)
        super().on_test_epoch_end()
