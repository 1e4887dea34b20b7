"""lt_lightning.cli.seeds: ``lt-lightning seeds`` runs a config per seed in its own run folder (stage 1 first,
in its own folder, for a two-stage config; ``fit`` or ``test`` as the method class says), reads relative
paths against the directory it was started in, and writes the summary statistics."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from lt_lightning.cli import build_cli, main
from lt_lightning.cli.seeds import SUMMARY_COLUMNS, run_seeds, summarize, summary_markdown
from lt_lightning.models import load_module_from_checkpoint
from tests.cli.helpers import CONFIGS, accuracy_by_hand


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

    def __call__(self, argv):
        subcommand, config, args = argv[0], argv[argv.index("-c") + 1], list(argv[3:])
        seed = int(args[args.index("--seed_everything") + 1])
        run_dir = Path(args[args.index("--run_dir") + 1])
        self.calls.append((Path(config).name, subcommand, run_dir.name, args))
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
    assert [c[:3] for c in runner.calls] == [  # every stage 1 first, then the stage-2 runs
        ("joint.yaml", "fit", "seed3"),
        ("joint.yaml", "fit", "seed5"),
        ("tau_norm.yaml", "test", "seed3"),
        ("tau_norm.yaml", "test", "seed5"),
    ]
    stage1_args, stage2_args = runner.calls[0][3], runner.calls[2][3]
    assert "--trainer.max_epochs" in stage1_args and "--model.init_args.tau_grid" not in stage1_args
    assert stage1_args[stage1_args.index("--overwrite_run") + 1] == "true"  # a re-run replaces stage 1 too
    assert "--model.init_args.tau_grid" in stage2_args
    assert stage2_args[stage2_args.index("--model.init_args.seed") + 1] == "3"
    # stage 2 reads the checkpoint of its own seed's stage-1 run folder
    joint3 = tmp_path / "digits_lt/joint/seed3"
    assert stage2_args[stage2_args.index("--model.init_args.stage1_checkpoint") + 1] == str(
        joint3 / "last.ckpt"
    )
    assert stage1_args[stage1_args.index("--run_dir") + 1] == str(joint3)
    assert [r["metrics"]["nc/train/nc1"] for r in summary["runs"]] == [4.0, 6.0]  # stage 1's features
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["seeds"] == [3, 5] and saved["runs"][1]["metrics"]["test/acc"] == pytest.approx(1.0)
    assert saved["runs"][0]["stage1_run_dir"] == str(joint3)
    assert saved["runs"][0]["metrics"]["test/few_acc"] is None  # NaN is written as null
    assert (tmp_path / "summary.md").read_text().count("| 3 |") == 1


@pytest.mark.parametrize(
    ("method", "subcommand"),
    [("crt", "fit"), ("lws", "fit"), ("tau_norm", "test"), ("ncm", "test"), ("tde", "fit")],
)
def test_the_method_class_says_whether_it_is_fitted_or_tested(tmp_path, method, subcommand):
    runner = _FakeRunner()
    run_seeds(
        ["-c", str(CONFIGS / f"digits_lt/{method}.yaml"), "--seeds", "0", "--out", str(tmp_path)], runner
    )
    calls = [c[:2] for c in runner.calls]
    stage1 = [("joint.yaml", "fit")] if method in ("crt", "lws", "tau_norm", "ncm") else []
    assert calls == [*stage1, (f"{method}.yaml", subcommand)]


def test_an_explicit_stage1_config(tmp_path):
    runner = _FakeRunner()
    args = ["-c", str(CONFIGS / "digits_lt/ncm.yaml"), "--seeds", "0", "--out", str(tmp_path)]
    run_seeds([*args, "--stage1_config", str(CONFIGS / "digits_lt/fixed_etf.yaml")], runner)
    assert [c[:2] for c in runner.calls] == [("fixed_etf.yaml", "fit"), ("ncm.yaml", "test")]


def test_a_composed_config_is_read_through_the_cli(tmp_path):
    # before: seeds read the YAML file itself, so a config that includes its blocks (`config: _base.yaml`)
    # had no model to ask (ValueError: Empty module name) and a base's data_dir stayed relative to each
    # seed's folder
    checkpoint = {"dirpath": "runs/cifar10_lt/joint/seed{seed}", "save_last": True}
    base = {
        "seed_everything": 0,
        "trainer": {
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": checkpoint}
            ]
        },
        "model": {"class_path": "lt_lightning.models.JointModule", "init_args": {"backbone": "resnet32"}},
        "data": {"class_path": "lt_lightning.data.CIFAR10LTDataModule", "init_args": {"data_dir": "cifar"}},
    }
    (tmp_path / "_base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "joint.yaml").write_text("config: _base.yaml\ntrainer.max_epochs: 2\n")
    stage2 = {"class_path": "lt_lightning.models.DecoupledModule", "init_args": {"mode": "ncm"}}
    stage2["init_args"]["stage1_checkpoint"] = "runs/cifar10_lt/joint/seed{seed}/last.ckpt"
    (tmp_path / "ncm.yaml").write_text(yaml.safe_dump({"config": "_base.yaml", "model": stage2}))
    runner = _FakeRunner()
    out = tmp_path / "out"
    run_seeds(["-c", str(tmp_path / "ncm.yaml"), "--seeds", "0", "--out", str(out)], runner)
    assert [c[:2] for c in runner.calls] == [("joint.yaml", "fit"), ("ncm.yaml", "test")]
    for _, _, _, args in runner.calls:  # no run changes the working directory: data_dir stays as it is
        assert "--data.init_args.data_dir" not in args
    runner = _FakeRunner()  # a config whose model is all in the included block
    run_seeds(
        ["-c", str(tmp_path / "joint.yaml"), "--seeds", "0", "--out", str(out), "--overwrite_run", "true"],
        runner,
    )
    assert [c[:2] for c in runner.calls] == [("joint.yaml", "fit")]


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
    dm = build_cli(["--config", str(CONFIGS / "digits_lt/joint.yaml")], run=False).datamodule
    weights = []
    for run in summary["runs"]:
        ckpt = tmp_path / f"out/digits_lt/joint/seed{run['seed']}/last.ckpt"
        assert run["run_dir"] == str(ckpt.parent) and run["status"] == "done"
        model = load_module_from_checkpoint(str(ckpt))
        weights.append(model.head.weight.detach())
        assert run["metrics"]["test/acc"] == pytest.approx(accuracy_by_hand(model, dm), abs=1e-6)
        assert run["metrics"]["nc/train/nc1"] is not None
    assert not torch.equal(weights[0], weights[1])  # the seeds really differ
    assert {k for k, _ in SUMMARY_COLUMNS} <= set(summary["mean"])
    assert (tmp_path / "out/summary.md").read_text().count("| mean ± std |") == 1
