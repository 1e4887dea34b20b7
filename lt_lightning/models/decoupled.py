"""Two-stage decoupled training (Kang et al. ICLR 2020): cRT, LWS, τ-norm and NCM on a stage-1 model.

Stage 2 loads the stage-1 checkpoint of any lt_lightning method (the class is read from the
checkpoint), keeps its backbone and neck frozen, and replaces the classifier:

- ``crt``: a re-initialised linear classifier trained with CE (use the class-balanced sampler);
- ``lws``: per-class scales on the whole stage-1 logit, ``z_i = s_i (w_i·x + b_i)`` (linear heads only);
- ``tau_norm``: ``w_i / ‖w_i‖^τ`` without bias, no training; τ chosen on validation over ``tau_grid``;
- ``ncm``: nearest class mean on un-augmented training features (centred, L2-normalised by default).

``crt``/``lws`` are a second ``fit``; ``tau_norm``/``ncm`` a ``validate`` or ``test``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn

from lt_lightning.models.base import LongTailModule, load_module_from_checkpoint, module_class
from lt_lightning.models.sweeps import AccuracySweep
from lt_lightning.nn.functional import ncm_transform, tau_normalize
from lt_lightning.nn.heads import ETFHead, LinearHead, LWSHead, NCMHead, TauNormHead
from lt_lightning.progress import progress, trainer_shows_progress

__all__ = ["DecoupledModule"]

MODES = ("crt", "lws", "tau_norm", "ncm")
BN_MODES = ("reestimate", "frozen")
TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))
_REPRESENTATION_DEFAULTS = {
    "backbone": "resnet32",
    "backbone_kwargs": None,
    "fixdim": False,
    "trainable_backbone": None,
    "neck": "none",
    "feature_scale": 1.0,
}


@contextmanager
def _own_hyperparameters() -> Iterator[None]:
    """Build the stage-1 module with its own hyper-parameters: LightningCLI instantiates stage 2 inside a
    context that makes every ``save_hyperparameters`` call record stage 2's config instead."""
    token = _given_hyperparameters.set(None)
    try:
        yield
    finally:
        _given_hyperparameters.reset(token)


def _describe(module: LongTailModule) -> dict[str, Any] | None:
    """``{"class_path", "init_args"}`` of a module, from its hyper-parameters (``None`` if they cannot
    rebuild it: a backbone given as a module is not a hyper-parameter)."""
    init_args = {k: v for k, v in dict(module.hparams).items() if not k.startswith("_")}
    if "backbone" not in init_args:
        return None
    return {"class_path": f"{type(module).__module__}.{type(module).__qualname__}", "init_args": init_args}


def _rebuild_stage1(spec: dict[str, Any]) -> LongTailModule:
    """The stage-1 architecture from :func:`_describe`'s record, with fresh weights."""
    if not isinstance(spec, dict) or not isinstance(spec.get("init_args"), dict) or "class_path" not in spec:
        raise ValueError(f"stage1_module must be {{'class_path': ..., 'init_args': {{...}}}}, got {spec!r}")
    cls = module_class(spec["class_path"], "stage1_module")
    return cls(**spec["init_args"])


class DecoupledModule(LongTailModule):
    """Stage 2 of decoupled training on a frozen stage-1 representation.

    Args:
        stage1_checkpoint: path of a checkpoint written by any lt_lightning module (configs write
            ``runs/<dataset>/<method>/seed{seed}/last.ckpt``: the CLI fills in ``seed_everything``).
        stage1_module: leave unset. The module records the stage-1 module here, as
            ``{"class_path": ..., "init_args": ...}``, in its own hyper-parameters, so that a stage-2
            checkpoint rebuilds the stage-1 architecture without the stage-1 file (the weights are in the
            stage-2 state dict). When given, ``stage1_checkpoint`` is not read.
        mode: ``"crt"``, ``"lws"``, ``"tau_norm"`` or ``"ncm"``.
        bn_mode: ``"reestimate"`` (the reference keeps the backbone in train mode, so BatchNorm
            statistics follow the stage-2 sampler) or ``"frozen"`` (backbone and neck in eval mode).
        tau: fixed τ for ``tau_norm`` (``None``: choose on validation over ``tau_grid`` by top-1).
        tau_grid: τ values swept (Kang: 0, 0.1, …, 2.0).
        ncm_center: NCM subtracts the mean training feature first (Kang's default).
        ncm_normalize: NCM L2-normalises the (centred) features and class means (Kang's default).
        ncm_metric: NCM's score: negative ``"euclidean"`` distance (Kang's default) or ``"cosine"``.
        num_classes: K of the data (must equal the checkpoint's).
        **kwargs: :class:`~lt_lightning.models.base.LongTailModule` arguments (optimiser, schedule, …).

    Raises:
        FileNotFoundError: no checkpoint at ``stage1_checkpoint``.
        ValueError: the checkpoint's K differs from the data's, or an unknown mode.
    """

    def __init__(
        self,
        stage1_checkpoint: str,
        stage1_module: dict[str, Any] | None = None,
        mode: Literal[MODES] = "crt",
        bn_mode: Literal[BN_MODES] = "reestimate",
        tau: float | None = None,
        tau_grid: Sequence[float] = TAU_GRID,
        ncm_center: bool = True,
        ncm_normalize: bool = True,
        ncm_metric: Literal["euclidean", "cosine"] = "euclidean",
        num_classes: int = 10,
        **kwargs,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown decoupled mode {mode!r}; valid: {', '.join(MODES)}")
        if bn_mode not in BN_MODES:
            raise ValueError(f"unknown bn_mode {bn_mode!r}; valid: {', '.join(BN_MODES)}")
        if tau is not None and tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        if any(t < 0 for t in tau_grid) or not len(tau_grid):
            raise ValueError(f"tau_grid must be non-empty with values >= 0, got {list(tau_grid)}")
        # The CLI passes every base argument, defaults included: only a changed value is an error.
        clash = sorted(k for k, v in _REPRESENTATION_DEFAULTS.items() if k in kwargs and kwargs.pop(k) != v)
        if clash:
            raise ValueError(f"stage 2 keeps the stage-1 representation; do not set {clash}")
        with _own_hyperparameters():
            if stage1_module is not None:
                stage1 = _rebuild_stage1(stage1_module)
            else:
                stage1 = load_module_from_checkpoint(stage1_checkpoint)
        if stage1.num_classes != num_classes:
            raise ValueError(
                f"the stage-1 checkpoint {stage1_checkpoint!r} has {stage1.num_classes} classes but the "
                f"data has num_classes={num_classes}"
            )
        if mode == "lws" and not isinstance(stage1.head, (LinearHead, ETFHead)):
            raise ValueError(
                f"lws rescales a linear classifier's logits; the stage-1 head is {type(stage1.head).__name__}"
            )
        # A plain dict is allowed before nn.Module.__init__ and hands the stage-1 parts to build_head.
        self._stage1 = {"module": stage1}
        super().__init__(num_classes=num_classes, backbone=stage1.backbone, **kwargs)
        del self._stage1
        self.hparams["stage1_module"] = stage1_module if stage1_module is not None else _describe(stage1)
        self.neck = stage1.neck
        for module in (self.backbone, self.neck):
            module.requires_grad_(False)
        self.mode = mode
        shot = self.shot_kwargs()
        self.tau_sweep = (
            AccuracySweep(tau_grid, num_classes, **shot) if mode == "tau_norm" and tau is None else None
        )
        self.register_buffer("post_hoc_ready", torch.tensor(mode in ("crt", "lws") or tau is not None))
        self.train(self.training)

    # ---- heads --------------------------------------------------------------------------------------
    def build_head(self, in_features: int, num_classes: int) -> nn.Module:
        stage1_head = self._stage1["module"].head
        mode = self.hparams.mode
        if mode == "crt":
            return LinearHead(in_features, num_classes)  # freshly initialised
        if mode == "lws":
            return LWSHead(stage1_head.weight, stage1_head.bias)
        if mode == "tau_norm":
            tau = self.hparams.tau
            return TauNormHead(stage1_head.weight, 1.0 if tau is None else tau)
        gm = torch.zeros(in_features) if self.hparams.ncm_center else None
        return NCMHead(
            torch.zeros(num_classes, in_features),
            gm,
            normalize=self.hparams.ncm_normalize,
            metric=self.hparams.ncm_metric,
        )

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.hparams.bn_mode == "frozen":
            self.backbone.eval()
            self.neck.eval()
        return self

    def extract_features(self, x: Tensor) -> Tensor:
        # The representation is frozen: no graph through it (saves the backbone's activations).
        with torch.no_grad():
            return super().extract_features(x)

    def configure_optimizers(self):
        if not self.trainable_parameters():
            raise ValueError(
                f"mode={self.hparams.mode!r} has nothing to train; run `lt-lightning validate` or `test`"
            )
        return super().configure_optimizers()

    # ---- post-hoc fitting (τ selection, NCM centroids) ----------------------------------------------
    def _reduce_sum(self, t: Tensor) -> Tensor:
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            return trainer.strategy.reduce(t, reduce_op="sum")
        return t

    @torch.no_grad()
    def fit_ncm(self, loader) -> None:
        """Class centroids from un-augmented training features, exact under DDP (sums reduced)."""
        was_training = self.training
        self.eval()
        k, d = self.num_classes, self.feature_dim
        mean = None
        if self.hparams.ncm_center:
            total = torch.zeros(d, dtype=torch.float64, device=self.device)
            count = torch.zeros((), dtype=torch.float64, device=self.device)
            for x, _ in progress(loader, "NCM: global mean", enabled=trainer_shows_progress(self._trainer)):
                f = self.extract_features(x.to(self.device))
                total += f.double().sum(0)
                count += f.shape[0]
            mean = (self._reduce_sum(total) / self._reduce_sum(count)).float()
        sums = torch.zeros(k, d, dtype=torch.float64, device=self.device)
        counts = torch.zeros(k, dtype=torch.float64, device=self.device)
        for x, y in progress(loader, "NCM: class means", enabled=trainer_shows_progress(self._trainer)):
            y = y.to(self.device)
            f = ncm_transform(
                self.extract_features(x.to(self.device)),
                global_mean=mean,
                normalize=self.hparams.ncm_normalize,
            )
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
        self.train(was_training)

    def _tau_sweep_update(self, features: Tensor, y: Tensor) -> None:
        base = self.head.base_weight
        weights = torch.stack([tau_normalize(base, t) for t in self.tau_sweep.values])  # [T, K, d]
        self.tau_sweep.update(torch.einsum("nd,tkd->tnk", features, weights), y)

    def _tau_sweep_finish(self, log: bool) -> dict[str, Tensor]:
        results = self.tau_sweep.compute()
        best = self.tau_sweep.best(results)
        if log:
            swept = {f"val/tau_norm/acc@{v:g}": res["acc"] for v, res in zip(self.tau_sweep.values, results)}
            self.log_reduced({**swept, "val/tau_norm/best_tau": self.tau_sweep.values[best]})
        self.head.set_tau(self.tau_sweep.values[best])
        self.post_hoc_ready.fill_(True)
        self.tau_sweep.reset()
        return results[best]

    @torch.no_grad()
    def select_tau(self, loader) -> float:
        """Choose τ on ``loader`` (validation data) by top-1 and set it on the head."""
        was_training = self.training
        self.eval()
        for x, y in progress(loader, "tau-norm: tau sweep", enabled=trainer_shows_progress(self._trainer)):
            self._tau_sweep_update(self.extract_features(x.to(self.device)), y.to(self.device))
        self._tau_sweep_finish(log=False)
        self.train(was_training)
        return float(self.head.tau)

    def _prepare_post_hoc(self) -> None:
        if bool(self.post_hoc_ready):
            return
        dm = self.trainer.datamodule
        if self.hparams.mode == "ncm":
            self.fit_ncm(dm.train_eval_dataloader())
        elif self.hparams.mode == "tau_norm" and self.trainer.state.fn != "validate":
            if getattr(dm, "val_is_test", False):
                raise ValueError(
                    f"tau_norm would choose tau on the test split: {type(dm).__name__} has no separate "
                    "validation split. Set data.init_args.val_per_class > 0 (held-out training images) or a "
                    "val_file, or fix model.init_args.tau (Kang's tau_norm.py prints every tau on test instead)"
                )
            self.select_tau(dm.val_dataloader())

    def on_validation_start(self) -> None:
        if self.hparams.mode == "ncm":
            self._prepare_post_hoc()

    def on_test_start(self) -> None:
        self._prepare_post_hoc()

    def on_predict_start(self) -> None:
        self._prepare_post_hoc()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        # A fixed ``tau`` given now (config or command line) wins over the τ stored in the checkpoint's head:
        # evaluation options are honoured at test time (the stored base weight is the stage-1 one).
        tau = self.hparams.tau
        state = checkpoint.get("state_dict", {})
        if self.hparams.mode == "tau_norm" and tau is not None and "head.base_weight" in state:
            base = state["head.base_weight"]
            state["head.tau"] = torch.tensor(float(tau), dtype=state["head.tau"].dtype)
            state["head.weight"] = tau_normalize(base, float(tau)).to(base.dtype)
            state["post_hoc_ready"] = torch.tensor(True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        if self.tau_sweep is None:
            return super().validation_step(batch, batch_idx)
        x, y = batch
        self._tau_sweep_update(self.extract_features(x), y)

    def on_test_epoch_end(self) -> None:
        if self.hparams.mode == "tau_norm":
            self.log(
                "test/tau_norm/tau", float(self.head.tau)
            )  # the tau used (chosen on validation or fixed)
        super().on_test_epoch_end()

    def on_validation_epoch_end(self) -> None:
        if self.tau_sweep is None:
            return super().on_validation_epoch_end()
        chosen = self._tau_sweep_finish(log=True)
        self.log_reduced({f"val/{k}": v for k, v in chosen.items()})
        self.val_metrics.reset()
