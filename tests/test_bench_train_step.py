"""bench/train_step.py's config mode runs a shipped config end to end and writes the figures it promises
(no timing thresholds: the figures are only checked to exist and be consistent)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", ROOT / "bench" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_mode_writes_every_figure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of the fits may land outside their temporary folders
    bench = _bench()
    out = tmp_path / "train_config.json"
    overrides = ["--data.init_args.pipeline", "device", "--trainer.enable_progress_bar", "false"]
    rows = bench.run_configs([str(ROOT / "configs/digits_lt/joint.yaml")], [2, 1], 1, overrides, str(out))
    data = json.loads(out.read_text())
    assert data["meta"]["epochs"] == [1, 2] and data["meta"]["overrides"] == overrides
    (row,) = data["rows"]
    assert row == json.loads(json.dumps(rows[0]))
    figures = {
        "plain_ms_per_step",
        "lightning_ms_per_step",
        "ratio_per_step",
        "step_ms",
        "step_ratio",
        "epoch_fixed_ms",
        "validation_ms_per_epoch",
        "checkpoint_write_ms_per_epoch",
        "checkpoint_writes_per_epoch",
        "steps_per_epoch",
        "plain_with_duties_ms_per_step",
        "ratio_to_plain_with_duties",
        "lightning_floor_ms_per_step",
        "floor_ratio_per_step",
        "ratio_to_floor",
    }
    assert figures <= row.keys()
    assert all(math.isfinite(row[k]) for k in figures), row
    assert row["steps_per_epoch"] > 0
    assert row["checkpoint_writes_per_epoch"] == 1  # last.ckpt, written once (not also an epoch file)
    ratio = row["lightning_ms_per_step"] / row["plain_ms_per_step"]
    assert row["ratio_per_step"] == pytest.approx(ratio)
    floor = row["lightning_floor_ms_per_step"]
    assert row["ratio_to_floor"] == pytest.approx(row["lightning_ms_per_step"] / floor)
    assert row["floor_ratio_per_step"] == pytest.approx(floor / row["plain_ms_per_step"])
    # the shipped callbacks are all timed (the CLI's defaults and the config's own)
    assert {"ModelCheckpoint", "NeuralCollapseCallback", "FiniteGuard"} <= row["callback_ms_per_epoch"].keys()
    assert row["logger"] == "CSVLogger"  # W&B is off in the tests
    assert sorted(tmp_path.iterdir()) == [out]


def test_config_mode_refuses_equal_epoch_counts():
    with pytest.raises(ValueError, match="two different counts"):
        _bench().run_configs(["digits"], [3, 3], 1, [], None)


def test_the_floor_module_trains_and_validates_the_configs_model(tmp_path, monkeypatch):
    """The floor row times real work: the config's model learns under the bare Trainer, and its logged
    validation accuracy is the top-1 of that model over the validation split (recomputed here)."""
    import lightning as L
    import torch

    monkeypatch.chdir(tmp_path)
    bench = _bench()
    cli = bench._cli(
        str(ROOT / "configs/digits_lt/joint.yaml"), 3, ["--trainer.enable_progress_bar", "false"]
    )
    module = bench._FloorModule(cli.model)
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    before = [p.detach().clone() for p in cli.model.parameters()]
    trainer.fit(module, datamodule=cli.datamodule)
    assert any(not torch.equal(a, p) for a, p in zip(before, cli.model.parameters()))
    cli.model.eval()
    with torch.no_grad():
        pairs = [(cli.model(x).argmax(1), y) for x, y in cli.datamodule.val_dataloader()]
    correct = sum(int((p == y).sum()) for p, y in pairs)
    total = sum(len(y) for _, y in pairs)
    assert float(trainer.callback_metrics["val/acc"]) == pytest.approx(correct / total, abs=1e-12)
