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
    }
    assert figures <= row.keys()
    assert all(math.isfinite(row[k]) for k in figures), row
    assert row["steps_per_epoch"] > 0
    assert row["checkpoint_writes_per_epoch"] == 1  # last.ckpt, written once (not also an epoch file)
    ratio = row["lightning_ms_per_step"] / row["plain_ms_per_step"]
    assert row["ratio_per_step"] == pytest.approx(ratio)
    # the shipped callbacks are all timed (the CLI's defaults and the config's own)
    assert {"ModelCheckpoint", "NeuralCollapseCallback", "FiniteGuard"} <= row["callback_ms_per_epoch"].keys()
    assert row["logger"] == "CSVLogger"  # W&B is off in the tests
    assert sorted(tmp_path.iterdir()) == [out]


def test_config_mode_refuses_equal_epoch_counts():
    with pytest.raises(ValueError, match="two different counts"):
        _bench().run_configs(["digits"], [3, 3], 1, [], None)
