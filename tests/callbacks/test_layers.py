"""Layer-wise NC1 (callbacks/layers.py and NeuralCollapseCallback(layers=...)) against a hook-and-numpy
reference: our own forward hooks collect each layer's output over the data, numpy computes
NC1 = tr(Σ_W Σ_B⁺)/K and the traces from the definitions; a small CNN (pooled and flattened maps), the
MLP stand-in through the callback (the classifier's input layer equals nc/<split>/nc1), and a real
2-process DDP fit against one process."""

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
from lightning.pytorch import Trainer
from matplotlib.figure import Figure
from torch import nn

from lt_lightning.callbacks import NeuralCollapseCallback, plots
from lt_lightning.callbacks.layers import LayerCollapse

_SCRIPT = Path(__file__).with_name("ddp_layers_script.py")
_spec = importlib.util.spec_from_file_location("ddp_layers_script", _SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)
stand_ins = script.stand_ins


def numpy_collapse(h: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """NC1 and the traces of Σ_W, Σ_B from their definitions (Papyan et al. 2020), classes present only."""
    classes = np.unique(y)
    k, n = len(classes), len(y)
    means = np.stack([h[y == c].mean(0) for c in classes])
    mu_g = h.mean(0)
    sw = sum((h[y == c] - means[i]).T @ (h[y == c] - means[i]) for i, c in enumerate(classes)) / n
    hbar = means - mu_g
    sb = hbar.T @ hbar / k
    return {
        "nc1": float(np.trace(sw @ np.linalg.pinv(sb)) / k),
        "tr_sw": float(np.trace(sw)),
        "tr_sb": float(np.trace(sb)),
    }


def hooked_outputs(model: nn.Module, names: list[str], batches, reduce) -> dict[str, np.ndarray]:
    """Each named layer's output over ``batches``, collected by our own hooks, reduced by ``reduce``."""
    found = dict(model.named_modules())
    seen: dict[str, list[np.ndarray]] = {n: [] for n in names}
    handles = [
        found[n].register_forward_hook(
            lambda m, i, o, n=n: seen[n].append(reduce(o).detach().double().numpy())
        )
        for n in names
    ]
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    for h in handles:
        h.remove()
    return {n: np.concatenate(v) for n, v in seen.items()}


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.conv1(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("flatten", [False, True])
def test_layer_nc1_equals_the_hook_and_numpy_reference_on_a_small_cnn(flatten):
    torch.manual_seed(0)
    model = SmallCNN().double().eval()
    g = torch.Generator().manual_seed(1)
    y = torch.arange(5).repeat_interleave(torch.tensor([20, 12, 8, 5, 3]))
    x = torch.randn(len(y), 3, 4, 4, generator=g, dtype=torch.float64) + y.double()[:, None, None, None] * 0.3
    batches = [(x[i : i + 7], y[i : i + 7]) for i in range(0, len(y), 7)]
    names = ["conv1", "block.1", "block", "fc"]
    tracker = LayerCollapse(model, names, num_classes=5, flatten=flatten)
    with tracker.hooked(), torch.no_grad():
        for xb, yb in batches:
            model(xb)
            tracker.update(yb)
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed
    got = {k: float(v) for k, v in tracker.compute().items()}
    reduce = (lambda o: o.flatten(1)) if flatten else (lambda o: o.mean(dim=(2, 3)) if o.ndim == 4 else o)
    outs = hooked_outputs(model, names, batches, reduce)
    for name in names:
        ref = numpy_collapse(outs[name], y.numpy())
        for key, value in ref.items():
            assert got[f"{key}/layer/{name}"] == pytest.approx(value, rel=1e-9), (name, key)
    assert tracker.metrics["block"].feature_dim == (6 * 16 if flatten else 6)


def _fit(tmp_path, layers, **kwargs) -> tuple[Trainer, nn.Module]:
    torch.manual_seed(0)
    trainer = Trainer(
        accelerator="cpu", devices=1, precision="64-true", max_epochs=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[NeuralCollapseCallback(on=("train", "val"), log_figures=False, layers=layers, **kwargs)],
    )  # fmt: skip
    model = stand_ins.TinyModule()
    trainer.fit(model, datamodule=stand_ins.TinyDataModule())
    return trainer, model


def _expected(state_dict, split: str) -> dict[str, float]:
    model = stand_ins.TinyModule().double()
    model.load_state_dict(state_dict)
    model.eval()
    dm = stand_ins.TinyDataModule()
    x, y = (dm.x, dm.y) if split == "train" else (dm.xv, dm.yv)

    class Whole(nn.Module):  # the callback's step: extract_features, then the head
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, v):
            return model.forward_head(model.extract_features(v))

    outs = hooked_outputs(Whole(), [f"m.{n}" for n in script.LAYERS], [(x.double(), y)], lambda o: o)
    out = {}
    for name in script.LAYERS:
        for key, value in numpy_collapse(outs[f"m.{name}"], y.numpy()).items():
            out[f"nc/{split}/{key}/layer/{name}"] = value
    return out


@pytest.mark.parametrize("cache_features", [False, True])
def test_callback_logs_layer_nc1_and_the_feature_layer_equals_nc1(tmp_path, cache_features):
    trainer, model = _fit(tmp_path, script.LAYERS, cache_features=cache_features)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for split in ("train", "val"):
        for key, value in _expected(model.state_dict(), split).items():
            assert logged[key] == pytest.approx(value, rel=1e-9), key
        assert logged[f"nc/{split}/nc1/layer/backbone"] == pytest.approx(logged[f"nc/{split}/nc1"], rel=1e-10)
    # the layers really differ (BatchNorm in eval mode after a full-rank linear layer does not: NC1 is
    # invariant under invertible linear maps when Σ_B has full rank, d = 5 < K = 6 here)
    assert logged["nc/train/nc1/layer/frozen"] != pytest.approx(
        logged["nc/train/nc1/layer/backbone"], rel=1e-3
    )


def test_layers_do_not_change_the_other_metrics(tmp_path):
    with_layers, _ = _fit(tmp_path / "a", script.LAYERS)
    without, _ = _fit(tmp_path / "b", None)
    base = {k: float(v) for k, v in without.callback_metrics.items()}
    extra = {k: float(v) for k, v in with_layers.callback_metrics.items()}
    for key, value in base.items():
        assert extra[key] == pytest.approx(value, rel=1e-12, nan_ok=True), key
    assert set(extra) - set(base) == {
        f"nc/{s}/{k}/layer/{n}"
        for s in ("train", "val")
        for k in ("nc1", "tr_sw", "tr_sb")
        for n in script.LAYERS
    }


def test_bad_layer_names_are_named():
    with pytest.raises(ValueError, match="layers must be distinct module names"):
        NeuralCollapseCallback(layers=["backbone", "backbone"])
    with pytest.raises(ValueError, match=r"layers \['backbone.9'\] are not submodules of TinyModule"):
        LayerCollapse(stand_ins.TinyModule(), ["backbone.9"], 6)


def test_depth_seli_and_reliability_figures_draw():
    assert isinstance(plots.nc1_vs_depth_figure(["a", "b", "c"], [3.0, 1.0, 0.2], "t"), Figure)
    g = torch.Generator().manual_seed(0)
    w, m = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    assert isinstance(plots.gram_vs_seli_figure(w, m, torch.tensor([30, 10, 5, 2, 1]), "t"), Figure)
    from lt_lightning.metrics import ShotCalibration

    cal = ShotCalibration(5, shot_groups=[0, 0, 1, 2, 2])
    cal.update(torch.randn(50, 5, generator=g), torch.randint(0, 5, (50,), generator=g))
    assert isinstance(plots.reliability_figure(cal.reliability(), "t"), Figure)


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_ddp_layer_nc1_equals_one_process(tmp_path):
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
        for key, value in _expected(result["state_dict"], split).items():
            assert metrics[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
        assert not math.isnan(metrics[f"nc/{split}/nc1/layer/backbone.0"])
