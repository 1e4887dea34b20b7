"""bench/lightning_log.py writes its figures and leaves Lightning as it found it (its no-op
``_ResultMetric.to`` is for the second measurement only)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch
from lightning.pytorch.trainer.connectors.logger_connector import result

ROOT = Path(__file__).resolve().parents[1]


def test_lightning_log_bench_writes_its_figures_and_restores_lightning(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_lightning_log", ROOT / "bench" / "lightning_log.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning_log.py", "--values", "3", "--epochs", "3"])
    original, threads = result._ResultMetric.to, torch.get_num_threads()
    try:
        bench.main()
    finally:
        torch.set_num_threads(threads)  # main() sets its own thread count
    assert result._ResultMetric.to is original
    rows = json.loads((tmp_path / "lightning_log.json").read_text())["rows"]
    assert all(math.isfinite(v) for v in rows.values())
    assert rows["ms_per_log_call"] > 0 and rows["ms_per_log_call_without_result_metric_to"] > 0
    share = 1 - rows["ms_per_log_call_without_result_metric_to"] / rows["ms_per_log_call"]
    assert math.isclose(rows["share_in_result_metric_to"], share)
