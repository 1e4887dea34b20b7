"""NeuralCollapseCallback inside Trainer.fit: logged values, untouched training state, DDP exactness."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.fabric.plugins.environments.lightning import find_free_network_port
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger

from lt_lightning.callbacks import NeuralCollapseCallback, plots
from lt_lightning.metrics import ShotAccuracy
from lt_lightning.metrics.functional import NC_KEYS, neural_collapse

_SCRIPT = Path(__file__).with_name("ddp_nc_script.py")
_spec = importlib.util.spec_from_file_location("ddp_nc_script", _SCRIPT)
stand_ins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stand_ins)


def expected_values(state_dict, split: str) -> dict[str, float]:
    """What the callback must log, recomputed in one process with the functional metric."""
    model = stand_ins.TinyModule().double()
    model.load_state_dict(state_dict)
    model.eval()
    dm = stand_ins.TinyDataModule()
    x, y = (dm.x, dm.y) if split == "train" else (dm.xv, dm.yv)
    with torch.no_grad():
        feats = model.extract_features(x.double())
        logits = model.forward_head(feats)
    present = torch.unique(y).tolist()
    out = neural_collapse(
        feats,
        y,
        model.head.weight,
        model.head.bias,
        classes=present if len(present) < len(stand_ins.COUNTS) else None,
        predictions=logits,
        shot_groups=dm.shot_groups,
    )
    acc = ShotAccuracy(len(stand_ins.COUNTS), shot_groups=dm.shot_groups)
    acc.update(logits, y)
    out.update({k: float(v) for k, v in acc.compute().items() if not k.endswith("_classes")})
    return out


class StateProbe(Callback):
    """Records module modes and RNG state at train-epoch end (placed before and after the NC callback)."""

    def __init__(self) -> None:
        self.modes: list[dict[str, bool]] = []
        self.rng: list[torch.Tensor] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.modes.append({name: m.training for name, m in pl_module.named_modules()})
        self.rng.append(torch.get_rng_state())


def _fit(tmp_path, with_nc: bool, **nc_kwargs):
    torch.manual_seed(0)
    before, after = StateProbe(), StateProbe()
    callbacks = [before]
    nc = NeuralCollapseCallback(**nc_kwargs) if with_nc else None
    if with_nc:
        callbacks.append(nc)
    callbacks.append(after)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        precision="64-true",
        max_epochs=2,
        logger=CSVLogger(str(tmp_path)),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    model = stand_ins.TinyModule()
    trainer.fit(model, datamodule=stand_ins.TinyDataModule())
    return trainer, model, before, after


@pytest.mark.slow
def test_fit_logs_exact_values_and_leaves_training_untouched(tmp_path):
    trainer, model, before, after = _fit(
        tmp_path / "with", True, on=("train", "val", "test"), log_figures=True
    )
    _, reference_model, _, ref_after = _fit(tmp_path / "without", False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("nc/")}
    # keys: every NC key overall and per group, and the accuracies, for each split
    for split in ("train", "val", "test"):
        for key in NC_KEYS:
            assert f"nc/{split}/{key}" in metrics and f"nc/{split}/{key}/few" in metrics
        for key in ("acc", "balanced_acc", "many_acc", "medium_acc", "few_acc"):
            assert f"nc/{split}/{key}" in metrics
    # values: equal to a one-process recomputation on the final weights (float64 model)
    for split in ("train", "val"):
        for key, val in expected_values(model.state_dict(), split).items():
            got = metrics[f"nc/{split}/{key}"]
            assert got == pytest.approx(val, rel=1e-10, abs=1e-12, nan_ok=True), (split, key)
    assert not math.isnan(metrics["nc/train/nc4"]) and not math.isnan(metrics["nc/train/nc1/few"])
    # training untouched: bit-identical weights and BN buffers to a run without the callback,
    # same global RNG stream, and every submodule's mode as before (frozen BN stays in eval)
    ref_state = reference_model.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, ref_state[name]), name
    assert all(torch.equal(a, b) for a, b in zip(before.rng, after.rng))
    assert all(torch.equal(a, b) for a, b in zip(after.rng, ref_after.rng))
    assert before.modes == after.modes
    assert before.modes[0]["frozen"] is False and before.modes[0]["backbone.0"] is True
    # figures saved as PNG under the logger's directory when the logger is not W&B
    pngs = sorted(p.name for p in Path(trainer.log_dir, "nc_figures").glob("*.png"))
    assert len(pngs) == 2 * 3 * 7 and "epoch0001_train_gram_vs_etf.png" in pngs
    assert "epoch0001_train_gram_vs_seli.png" in pngs
    assert "epoch0001_train_minority_collapse.png" in pngs
    assert "epoch0001_test_reliability.png" in pngs


def test_every_n_epochs_max_batches_cache_and_sanity_check(tmp_path):
    calls = []

    class Counting(NeuralCollapseCallback):
        def measure(self, trainer, pl_module, figures=None):
            calls.append((trainer.current_epoch, trainer.sanity_checking))
            return super().measure(trainer, pl_module, figures)

    torch.manual_seed(0)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=2,
        callbacks=[
            Counting(every_n_epochs=2, on="train", log_figures=False, max_batches=3, cache_features=True)
        ],
    )
    trainer.fit(stand_ins.TinyModule(), datamodule=stand_ins.TinyDataModule())
    assert calls == [(1, False), (3, False)]
    assert "nc/train/nc1" in trainer.callback_metrics and "nc/val/nc1" not in trainer.callback_metrics


def test_cache_and_second_pass_agree():
    results = []
    for cache in (False, True):
        torch.manual_seed(1)
        trainer = Trainer(
            accelerator="cpu",
            precision="64-true",
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[NeuralCollapseCallback(on="train", log_figures=False, cache_features=cache)],
        )
        trainer.fit(stand_ins.TinyModule(), datamodule=stand_ins.TinyDataModule())
        results.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("nc/")})
    assert results[0].keys() == results[1].keys() and "nc/train/nc4" in results[0]
    for key in results[0]:
        assert results[0][key] == pytest.approx(results[1][key], nan_ok=True, rel=1e-12), key


def test_wandb_logger_receives_images(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), mode="disabled")
    seen = []
    monkeypatch.setattr(logger, "log_image", lambda key, images, step=None, **kw: seen.append((key, images)))
    torch.manual_seed(0)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[NeuralCollapseCallback(on="train")],
    )
    trainer.fit(stand_ins.TinyModule(), datamodule=stand_ins.TinyDataModule())
    keys = [k for k, _ in seen]
    assert keys == [
        "nc/train/gram_vs_etf",
        "nc/train/classifier_mean_cosine",
        "nc/train/norms_vs_class_size",
        "nc/train/minority_collapse",
        "nc/train/accuracy_vs_class_size",
        "nc/train/gram_vs_seli",
        "nc/train/reliability",
    ]
    image = seen[0][1][0]
    assert (
        isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    )


def test_plots_return_figures_with_expected_content():
    etf = torch.eye(4) - 0.25
    fig = plots.gram_vs_etf_figure(etf, "t")
    left, right = (ax.get_images()[0].get_array() for ax in fig.axes[:2])
    assert np.allclose(left, right)  # the ETF's cosine Gram is the ideal one
    fig = plots.accuracy_vs_class_size_figure(torch.tensor([1.0, float("nan"), 0.5]), [100, 10, 1])
    assert len(fig.axes[0].collections[0].get_offsets()) == 2  # the absent class is skipped
    assert plots.figure_to_array(fig).shape[2] == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"on": ("train", "holdout")}, "on must"),
        ({"max_batches": 0}, "max_batches"),
        ({"global_mean": "x"}, "global_mean"),
        ({"log_figures": "every"}, "log_figures must be True, False or 'last'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuralCollapseCallback(**kwargs)


def test_missing_protocol_is_reported(tmp_path):
    from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel

    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[NeuralCollapseCallback()])
    with pytest.raises(TypeError, match="extract_features"):
        trainer.fit(BoringModel(), datamodule=BoringDataModule())
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[NeuralCollapseCallback()])
    with pytest.raises(TypeError, match="train_eval_dataloader"):
        trainer.fit(stand_ins.TinyModule(), datamodule=BoringDataModule())


@pytest.mark.ddp
@pytest.mark.slow
def test_real_two_process_ddp_fit_logs_single_process_values(tmp_path):
    env = dict(
        os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(find_free_network_port()), OMP_NUM_THREADS="1"
    )
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, str(_SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = torch.load(tmp_path / "result.pt")
    metrics = result["metrics"]
    for split in ("train", "val"):
        expected = expected_values(result["state_dict"], split)
        for key, val in expected.items():
            got = metrics[f"nc/{split}/{key}"]
            assert got == pytest.approx(val, rel=1e-10, abs=1e-12, nan_ok=True), (split, key, got, val)
    assert not math.isnan(metrics["nc/train/nc1/few"])


@pytest.mark.parametrize(
    "log_figures, drawn_at",
    [("last", [False, False, False, True]), (True, [True] * 4), (False, [False] * 4)],
)
def test_figures_are_drawn_at_the_final_measurement_by_default(tmp_path, log_figures, drawn_at):
    from tests.models.helpers import cpu_trainer

    """The scalars at every measurement; the (costly) figures at the last one unless asked for every one."""
    drawn = []

    class Spy(NeuralCollapseCallback):
        def _measure_split(self, *args, **kwargs):
            values, figures = super()._measure_split(*args, **kwargs)
            drawn.append(bool(figures))
            return values, figures

    trainer = cpu_trainer(tmp_path, max_epochs=4, callbacks=[Spy(on="train", log_figures=log_figures)])
    trainer.fit(stand_ins.TinyModule(), datamodule=stand_ins.TinyDataModule())
    assert drawn == drawn_at
    assert "nc/train/nc1" in trainer.callback_metrics
