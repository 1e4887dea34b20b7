"""Lightning callback that measures neural collapse and shot accuracy during training.

It reads any module through the head protocol — ``extract_features(x) -> [N, d]``,
``forward_head(features) -> [N, K]`` and ``classifier_weight_bias() -> ([K, d], [K] | None)`` — and any
datamodule with ``train_eval_dataloader()`` (and ``val_dataloader()`` / ``test_dataloader()``),
``num_classes``, ``class_counts`` and ``shot_groups`` (the run's groups, which the datamodule owns).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

import lt_lightning.callbacks.plots as plots
from lt_lightning.callbacks.layers import LayerCollapse, check_layer_names
from lt_lightning.loops import evaluation_mode, evaluation_pass
from lt_lightning.metrics.calibration import ShotCalibration
from lt_lightning.metrics.neural_collapse import NeuralCollapse
from lt_lightning.metrics.shot_accuracy import ShotAccuracy
from lt_lightning.spec import check_shot_groups

__all__ = ["NeuralCollapseCallback"]

_SPLITS = ("train", "val", "test")
_LOADERS = {"train": "train_eval_dataloader", "val": "val_dataloader", "test": "test_dataloader"}
_MODULE_HOOKS = ("extract_features", "forward_head", "classifier_weight_bias")


@contextlib.contextmanager
def _rank_zero_buffers(pl_module: torch.nn.Module) -> Iterator[None]:
    """Inside, every rank uses rank 0's buffers (e.g. BatchNorm statistics); on exit its own come back.

    After the last step of an epoch each DDP rank has updated its BatchNorm statistics from its own
    batch; DDP re-broadcasts rank 0's at the next forward. Measuring with rank 0's buffers measures one
    model (the one rank 0 checkpoints) on every rank; restoring keeps each rank's state untouched.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        yield
        return
    buffers = [b for b in pl_module.buffers() if b.numel() > 0]
    saved = [b.detach().clone() for b in buffers]
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for b in buffers:
        by_dtype.setdefault(b.dtype, []).append(b)
    try:
        for group in by_dtype.values():  # one broadcast per dtype, not per buffer
            flat = torch.cat([b.detach().reshape(-1) for b in group])
            dist.broadcast(flat, src=0)
            offset = 0
            for b in group:
                b.data.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()
        yield
    finally:
        for b, old in zip(buffers, saved):
            b.data.copy_(old)


def _local_log_dir(trainer: Trainer) -> str | None:
    """``trainer.log_dir`` without its broadcast, for code that runs on global rank zero only.

    ``Trainer.log_dir`` broadcasts the directory from rank 0, a collective: called on one rank of a
    DDP job it waits forever for the others (the CSV-logger figures hung 2-process runs this way).
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if not trainer.loggers:
        return trainer.default_root_dir
    first = trainer.loggers[0]
    return first.log_dir if isinstance(first, (TensorBoardLogger, CSVLogger)) else first.save_dir


class NeuralCollapseCallback(Callback):
    """Measure NC1–NC4 (overall and many/medium/few) and shot accuracy every ``every_n_epochs`` epochs.

    At the end of a training epoch (after that epoch's validation, on every rank — it runs
    collectives), with the model in eval mode and without gradients, it streams each requested split
    through ``extract_features`` and ``forward_head`` into a :class:`~lt_lightning.metrics.NeuralCollapse`
    and a :class:`~lt_lightning.metrics.ShotAccuracy`. ``nc4`` needs the final class means, so each split
    is read twice (exact second pass), unless ``cache_features`` keeps the features of the first pass
    (``O(N·d)`` memory per rank, one forward pass saved).

    Logged with ``pl_module.log`` (values are already reduced over ranks, hence ``sync_dist=False``):
    ``nc/{split}/{key}`` for every neural-collapse key (``nc1``, ``nc2``, ``nc2_h``, ``nc3``, ``nc4``,
    ``bias_collapse``, ``equinorm_w``, ``equinorm_h``, ``cdnv``) and its ``/many``, ``/medium``, ``/few``
    variants, the minority-collapse keys ``mc_*`` (``MINORITY_COLLAPSE_KEYS``), plus ``nc/{split}/acc``,
    ``balanced_acc``, ``many_acc``, ``medium_acc``, ``few_acc``; the SELI distances ``seli_w``, ``seli_h``,
    ``seli_wh`` (Thrampoulidis et al. 2022; per group too) come with the neural-collapse keys. With
    ``layers``: ``nc/{split}/nc1/layer/{name}`` and the traces ``tr_sw`` / ``tr_sb`` of Σ_W and Σ_B
    (:mod:`lt_lightning.callbacks.layers`), from forward hooks on the same first pass.
    Figures (global rank zero only): class-mean Gram vs the simplex ETF, classifier-vs-mean cosines,
    norms vs class size, minority collapse (cosines and norms by shot group), per-class accuracy vs
    class size, the Gram against the SELI target and a reliability diagram (overall and per shot group,
    15 bins, from the same pass's logits) — sent to a ``WandbLogger`` with
    ``log_image``, otherwise saved as PNG under ``{trainer.log_dir}/nc_figures`` (skipped without a
    logger).

    Training state is untouched: module modes are restored per submodule, BatchNorm statistics are not
    updated (eval mode), the global torch (CPU and CUDA), numpy and Python RNG states are restored, and
    nothing runs during the sanity check. Under DDP the ranks' BatchNorm statistics differ after an
    epoch's last step (DDP re-broadcasts rank 0's at the next forward), so the measurement temporarily
    uses rank 0's buffers on every rank — one model, the one rank 0 checkpoints — and then puts each
    rank's own back.

    DDP contract: the datamodule's loaders must give each rank a disjoint, unpadded share (every
    sample counted once). Classes without samples in a split are left out of that split's metrics.

    Args:
        every_n_epochs: measure after epochs ``n - 1, 2n - 1, ...`` (0-based), i.e. every n-th epoch, and
            after the last epoch (``max_epochs``); ``nc/epoch`` logs the epoch of the numbers.
        on: splits to measure, from ``"train"`` (``train_eval_dataloader``: un-augmented, in order),
            ``"val"`` and ``"test"``.
        log_figures: when to make and log the geometry figures: ``"last"`` (default) at the final
            measurement only (the one after the last epoch, or when training is told to stop), ``True``
            at every measurement, ``False`` never. Rendering them costs about 2 s a measurement on a
            CPU (matplotlib's layout), more than a digits-LT epoch or a CIFAR epoch on a GPU; the
            scalars are logged at every measurement either way.
        max_batches: read at most this many batches per split and rank (None: all) — a cheaper, partial
            measurement.
        cache_features: keep first-pass features for ``nc4`` instead of a second forward pass.
        layers: module names (``pl_module.get_submodule`` paths, e.g. ``"backbone.layer2"``) whose
            outputs' NC1 is measured on the same pass (conv maps average-pooled to ``[N, C]``).
        flatten_layers: flatten conv maps instead of pooling them (the ``[C, C]`` scatter grows as C²).
        rtol, global_mean: passed to :class:`~lt_lightning.metrics.NeuralCollapse`.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        on: Iterable[str] = ("train", "val"),
        log_figures: bool | Literal["last"] = "last",
        max_batches: int | None = None,
        cache_features: bool = False,
        rtol: float | None = None,
        global_mean: Literal["sample", "class"] = "sample",
        layers: Sequence[str] | None = None,
        flatten_layers: bool = False,
    ) -> None:
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        on = (on,) if isinstance(on, str) else tuple(on)
        bad = [s for s in on if s not in _SPLITS]
        if bad or not on:
            raise ValueError(f"on must name splits from {_SPLITS}, got {on!r}")
        if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
            raise ValueError(f"max_batches must be a positive integer or None, got {max_batches!r}")
        if log_figures not in (True, False, "last"):
            raise ValueError(f"log_figures must be True, False or 'last', got {log_figures!r}")
        if global_mean not in ("sample", "class"):
            raise ValueError(f"global_mean must be 'sample' or 'class', got {global_mean!r}")
        self.every_n_epochs = every_n_epochs
        self.on = on
        self.log_figures = log_figures
        self.max_batches = max_batches
        self.cache_features = cache_features
        self.rtol = rtol
        self.global_mean = global_mean
        self.layers = check_layer_names(layers)
        self.flatten_layers = flatten_layers

    # ------------------------------------------------------------------------------------- hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        missing = [name for name in _MODULE_HOOKS if not callable(getattr(pl_module, name, None))]
        if missing:
            raise TypeError(
                f"NeuralCollapseCallback needs the module to define {', '.join(_MODULE_HOOKS)}; "
                f"{type(pl_module).__name__} lacks {', '.join(missing)}"
            )
        dm = trainer.datamodule
        needed = [_LOADERS[s] for s in self.on] + ["num_classes", "class_counts", "shot_groups"]
        lacking = [name for name in needed if dm is None or not hasattr(dm, name)]
        if lacking:
            raise TypeError(
                f"NeuralCollapseCallback needs a datamodule with {', '.join(needed)}; "
                f"{type(dm).__name__} lacks {', '.join(lacking)}"
            )
        # The logged values are identical on every rank already; silence Lightning's advice to sync them.
        warnings.filterwarnings("ignore", message=r".*self\.log\('nc/.*sync_dist=True.*")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        last = last or trainer.should_stop  # early stopping: this epoch's model is the final one
        if trainer.sanity_checking or (epoch % self.every_n_epochs != 0 and not last):
            return  # the last epoch is always measured: the final NC numbers are the final model's
        self.measure(
            trainer, pl_module, figures=self.log_figures is True or (last and self.log_figures == "last")
        )

    # ------------------------------------------------------------------------------------ measure
    def measure(
        self, trainer: Trainer, pl_module: LightningModule, figures: bool | None = None
    ) -> dict[str, float]:
        """Measure every split in ``on``, log scalars (and figures), and return ``{name: value}``.

        ``figures``: make the figures this time (None: whenever ``log_figures`` is not False).

        Collective under DDP: call it on every rank.
        """
        dm = trainer.datamodule
        num_classes = int(dm.num_classes)
        class_counts = torch.as_tensor(list(dm.class_counts))
        groups = check_shot_groups(dm.shot_groups, num_classes)  # the datamodule owns the run's groups
        logged: dict[str, float] = {}
        draw = self.log_figures is not False if figures is None else figures
        made: dict[str, Any] = {}
        with evaluation_mode(pl_module), _rank_zero_buffers(pl_module):
            weight, bias = pl_module.classifier_weight_bias()
            for split in self.on:
                loader = getattr(dm, _LOADERS[split])()
                values, split_figures = self._measure_split(
                    trainer, pl_module, split, loader, num_classes, groups, class_counts, weight, bias, draw
                )
                logged.update({f"nc/{split}/{key}": val for key, val in values.items()})
                made.update(split_figures)
        for name, value in logged.items():
            # float64 tensors: a Python float would be stored as float32 by Lightning
            value64 = torch.tensor(value, dtype=torch.float64, device=pl_module.device)
            pl_module.log(name, value64, on_step=False, on_epoch=True, sync_dist=False)
        if logged:  # the epoch (0-based) these NC numbers were measured at, for the end-of-fit table
            pl_module.log("nc/epoch", float(trainer.current_epoch), on_step=False, on_epoch=True)
        if made and trainer.is_global_zero:
            self._log_figures(trainer, made)
        return logged

    def _pass(self, trainer: Trainer, pl_module: LightningModule, loader: Iterable[Any]) -> Iterator[Any]:
        """``((features, logits), y)`` per batch of ``loader`` (the one evaluation pass: device, precision)."""

        def step(x: Tensor) -> tuple[Tensor, Tensor]:
            features = pl_module.extract_features(x)
            return features, pl_module.forward_head(features)

        return evaluation_pass(
            trainer, pl_module, loader, step, desc="neural collapse", max_batches=self.max_batches
        )

    def _measure_split(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        split: str,
        loader: Iterable[Any],
        num_classes: int,
        groups: Tensor,
        class_counts: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        draw: bool = True,
    ) -> tuple[dict[str, float], dict[str, Any]]:
        device = pl_module.device
        nc = NeuralCollapse(
            num_classes,
            int(weight.shape[1]),
            shot_groups=groups,
            empty_classes="drop",
            rtol=self.rtol,
            global_mean=self.global_mean,
        ).to(device)
        acc = ShotAccuracy(num_classes, shot_groups=groups).to(device)
        calibration = ShotCalibration(num_classes, shot_groups=groups).to(device) if draw else None
        cache: list[tuple[Tensor, Tensor, Tensor]] = []
        tracked = self._layer_collapse(pl_module, num_classes)
        with tracked.hooked() if tracked is not None else contextlib.nullcontext():
            for (features, logits), y in self._pass(trainer, pl_module, loader):
                nc.update(features, y)
                acc.update(logits, y)
                if calibration is not None:
                    calibration.update(logits, y)
                if tracked is not None:
                    tracked.update(y)
                if self.cache_features:
                    cache.append((features, y, logits))
        means, seen = nc.freeze_class_means(return_counts=True)
        second: Iterable[tuple[Tensor, Tensor, Tensor]] = cache
        if not self.cache_features:
            second = ((f, y, logits) for (f, logits), y in self._pass(trainer, pl_module, loader))
        for features, y, logits in second:
            nc.update_nc4(features, y, logits)
        nc.set_classifier(weight, bias)
        computed = {**nc.compute(), **acc.compute()}  # 0-d float64 tensors
        if tracked is not None:
            computed.update(tracked.compute())
        keys = list(computed)
        values = dict(zip(keys, torch.stack([computed[k].reshape(()).double() for k in keys]).tolist()))
        for key in ("many_classes", "medium_classes", "few_classes"):
            values.pop(key, None)  # constant per run; not worth a curve
        per_class_acc = acc.per_class_accuracy()
        reliability = calibration.reliability() if calibration is not None else None  # collective: every rank
        figures: dict[str, Any] = {}
        if draw and trainer.is_global_zero:
            present = (seen > 0).cpu()
            w = weight.detach().to(torch.float64).cpu()[present]
            m, n = means.cpu()[present], seen.cpu()[present]
            mu_g = m.mean(0) if self.global_mean == "class" else (n @ m) / n.sum()
            centred = m - mu_g
            title = f"{split} epoch {trainer.current_epoch}"
            figures[f"nc/{split}/gram_vs_etf"] = plots.gram_vs_etf_figure(centred, title)
            figures[f"nc/{split}/classifier_mean_cosine"] = plots.classifier_mean_cosine_figure(
                w, centred, title
            )
            figures[f"nc/{split}/norms_vs_class_size"] = plots.norms_vs_class_size_figure(
                w.norm(dim=1), centred.norm(dim=1), class_counts[present], title
            )
            figures[f"nc/{split}/minority_collapse"] = plots.minority_collapse_figure(
                w, centred, groups.cpu()[present], title
            )
            figures[f"nc/{split}/accuracy_vs_class_size"] = plots.accuracy_vs_class_size_figure(
                per_class_acc.cpu(), class_counts, title
            )
            figures[f"nc/{split}/gram_vs_seli"] = plots.gram_vs_seli_figure(w, m, n, title)
            if reliability is not None:
                figures[f"nc/{split}/reliability"] = plots.reliability_figure(reliability, title)
            if self.layers:
                depth = [values[f"nc1/layer/{name}"] for name in self.layers]
                figures[f"nc/{split}/nc1_vs_depth"] = plots.nc1_vs_depth_figure(
                    list(self.layers), depth, title
                )
        return values, figures

    def _layer_collapse(self, pl_module: LightningModule, num_classes: int) -> LayerCollapse | None:
        if not self.layers:
            return None
        return LayerCollapse(
            pl_module,
            self.layers,
            num_classes,
            self.flatten_layers,
            rtol=self.rtol,
            global_mean=self.global_mean,
        )

    def _log_figures(self, trainer: Trainer, figures: dict[str, Any]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        for logger in wandb_loggers:
            for key, fig in figures.items():
                logger.log_image(key=key, images=[plots.figure_to_array(fig)], step=trainer.global_step)
        log_dir = _local_log_dir(trainer)
        if not wandb_loggers and trainer.loggers and log_dir is not None:
            out = os.path.join(log_dir, "nc_figures")
            os.makedirs(out, exist_ok=True)
            for key, fig in figures.items():
                name = key.removeprefix("nc/").replace("/", "_")
                fig.savefig(os.path.join(out, f"epoch{trainer.current_epoch:04d}_{name}.png"), dpi=80)
