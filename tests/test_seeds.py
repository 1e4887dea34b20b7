"""``lt-lightning seeds``: per-seed folders, stage 1 per seed, and the summary statistics."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from lt_lightning.cli import build_cli, main
from lt_lightning.models import load_module_from_checkpoint
from lt_lightning.seeds import SUMMARY_COLUMNS, run_seeds, summarize, summary_markdown

CONFIGS = Path(__file__).parents[1] / "configs"


def test_summary_mean_and_sample_std():
    values = {0: 0.5, 1: 0.7, 2: 0.9}
    per_seed = {s: {"test/acc": v, "test/few_acc": float("nan")} for s, v in values.items()}
    summary = summarize(per_seed)
    assert summary["mean"]["test/acc"] == pytest.approx(statistics.mean(values.values()))
    assert summary["std"]["test/acc"] == pytest.approx(statistics.stdev(values.values()))
    assert math.isnan(summary["mean"]["test/few_acc"]) and math.isnan(summary["mean"]["nc/train/nc1"])
    md = summary_markdown(summary)
    assert "| mean ± std | 70.00 ± 20.00 |" in md
    assert md.count("\n") == 2 + 3 + 1
    one = summarize({4: {"test/acc": 0.25}})
    assert math.isnan(one["std"]["test/acc"])  # one seed: no spread, never a fake 0


class _FakeRunner:
    def __init__(self):
        self.calls = []

    def __call__(self, config, args, subcommand):
        seed = int(args[args.index("--seed_everything") + 1])
        self.calls.append((Path(config).name, subcommand, Path.cwd().name, list(args)))
        stage1 = Path(config).name == "joint.yaml"
        metrics = {"test/acc": 0.5 + 0.1 * seed}
        if stage1:
            metrics["nc/train/nc1"] = 1.0 + seed
        return metrics


def test_two_stage_post_hoc_config_runs_stage1_per_seed(tmp_path):
    runner = _FakeRunner()
    args = ["-c", str(CONFIGS / "digits_lt/tau_norm.yaml"), "--seeds", "3", "5", "--out", str(tmp_path)]
    overrides = [
        "--trainer.max_epochs",
        "2",
        "--model.init_args.tau_grid",
        "[0, 1]",
        "--overwrite_run",
        "true",
    ]
    summary = run_seeds([*args, *overrides], runner)
    assert [c[:3] for c in runner.calls] == [
        ("joint.yaml", "fit", "seed3"),
        ("tau_norm.yaml", "test", "seed3"),
        ("joint.yaml", "fit", "seed5"),
        ("tau_norm.yaml", "test", "seed5"),
    ]
    stage1_args, stage2_args = runner.calls[0][3], runner.calls[1][3]
    assert "--trainer.max_epochs" in stage1_args and "--model.init_args.tau_grid" not in stage1_args
    assert stage1_args[stage1_args.index("--overwrite_run") + 1] == "true"  # a re-run replaces stage 1 too
    assert "--model.init_args.tau_grid" in stage2_args
    assert stage2_args[stage2_args.index("--model.init_args.seed") + 1] == "3"
    assert [r["metrics"]["nc/train/nc1"] for r in summary["runs"]] == [4.0, 6.0]  # stage 1's features
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["seeds"] == [3, 5] and saved["runs"][1]["metrics"]["test/acc"] == pytest.approx(1.0)
    assert saved["runs"][0]["metrics"]["test/few_acc"] is None  # NaN is written as null
    assert (tmp_path / "summary.md").read_text().count("| 3 |") == 1


def test_seeds_rejects_repeated_seeds(tmp_path):
    with pytest.raises(ValueError, match="distinct"):
        run_seeds(["-c", str(CONFIGS / "digits_lt/joint.yaml"), "--seeds", "1", "1", "--out", str(tmp_path)])


@pytest.mark.slow
def test_seeds_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "seeds",
            "-c",
            str(CONFIGS / "digits_lt/joint.yaml"),
            "--seeds",
            "0",
            "1",
            "--out",
            "out",
            "--trainer.max_epochs",
            "10",
        ]
    )
    # 10 epochs (not the config's 30): the NC callback (every 10 epochs) still measures the final NC1
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    cli = build_cli(["--config", str(CONFIGS / "digits_lt/joint.yaml")], run=False)
    dm = cli.datamodule
    dm.setup("test")
    weights = []
    for run in summary["runs"]:
        ckpt = tmp_path / f"out/seed{run['seed']}/runs/digits_lt/joint/seed{run['seed']}/last.ckpt"
        model = load_module_from_checkpoint(str(ckpt)).eval()
        weights.append(model.head.weight.detach())
        correct = n = 0
        with torch.no_grad():
            for x, y in dm.test_dataloader():
                correct += (model(x).argmax(1) == y).sum().item()
                n += len(y)
        assert run["metrics"]["test/acc"] == pytest.approx(correct / n, abs=1e-6)
        assert run["metrics"]["nc/train/nc1"] is not None
    assert not torch.equal(weights[0], weights[1])  # the seeds really differ
    assert {k for k, _ in SUMMARY_COLUMNS} <= set(summary["mean"])
