"""lt_lightning.cli.suite: configs × seeds in their own run folders, stage 1 trained once per seed and read
by every stage-2 config of that seed, finished runs skipped, failed ones re-run; the summary files."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from lt_lightning.cli import main
from lt_lightning.cli.suite import plan_suite, run_suite
from lt_lightning.cli.summary import load_published, mean_std, suite_markdown
from lt_lightning.models import load_module_from_checkpoint
from tests.cli.helpers import CONFIGS, accuracy_by_hand, digits

FOUR = [digits(m) for m in ("joint", "crt", "tau_norm", "logit_adjust")]


class _Runner:
    """Stands in for ``lt-lightning ARGV``: records the calls, fails the configs named in ``fail``."""

    def __init__(self, fail: tuple[str, ...] = ()):
        self.calls: list[tuple[str, str, int]] = []
        self.fail = fail

    def __call__(self, argv):
        config = Path(argv[argv.index("-c") + 1]).stem
        seed = int(argv[argv.index("--seed_everything") + 1])
        self.calls.append((config, argv[0], seed))
        if config in self.fail:
            raise RuntimeError(f"{config} broke")
        return {"test/acc": 0.5 + 0.1 * seed, "test/few_acc": 0.25, "nc/train/nc1": 1.0 + seed}


def test_the_plan_shares_stage1_per_seed_and_implies_a_missing_one(tmp_path):
    waves = plan_suite(FOUR, [0, 1], tmp_path, ["--trainer.max_epochs", "2"])
    first, second = waves
    assert sorted((Path(r.config).stem, r.seed) for r in first) == [
        ("joint", 0), ("joint", 1), ("logit_adjust", 0), ("logit_adjust", 1)
    ]  # fmt: skip
    assert sorted((Path(r.config).stem, r.seed, r.subcommand) for r in second) == [
        ("crt", 0, "fit"), ("crt", 1, "fit"), ("tau_norm", 0, "test"), ("tau_norm", 1, "test")
    ]  # fmt: skip
    for run in second:
        joint = tmp_path / "digits_lt/joint" / f"seed{run.seed}"
        assert run.stage1_run_dir == str(joint)
        assert run.argv[run.argv.index("--model.init_args.stage1_checkpoint") + 1] == str(joint / "last.ckpt")
        assert run.argv[run.argv.index("--run_dir") + 1] == str(
            tmp_path / f"digits_lt/{Path(run.config).stem}/seed{run.seed}"
        )
        assert "--trainer.max_epochs" in run.argv
    # cRT alone: its stage 1 (joint.yaml beside it) is implied, with the trainer/data overrides only
    only = plan_suite(
        [digits("crt")], [3], tmp_path, ["--trainer.max_epochs", "2", "--model.init_args.bn_mode", "frozen"]
    )
    (stage1,), (crt,) = only
    assert stage1.implied and Path(stage1.config).name == "joint.yaml"
    assert "--trainer.max_epochs" in stage1.argv and "--model.init_args.bn_mode" not in stage1.argv
    assert "--model.init_args.bn_mode" in crt.argv


def test_bad_suites_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="distinct"):
        plan_suite(FOUR, [1, 1], tmp_path)
    # a shell glob's shared blocks (configs/digits_lt/*.yaml holds _base.yaml) are no method: left out
    (wave,) = [w for w in plan_suite([digits("_base"), digits("joint")], [0], tmp_path) if w]
    assert [Path(r.config).name for r in wave] == ["joint.yaml"]
    with pytest.raises(FileNotFoundError, match="config not found: nope.yaml"):
        plan_suite(["nope.yaml"], [0], tmp_path)
    with pytest.raises(ValueError, match="--executor 'ssh'"):
        from lt_lightning.cli.executors import run_waves

        run_waves([[]], "ssh")


def test_a_rerun_skips_finished_runs_and_reruns_failed_ones(tmp_path):
    argv = ["--configs", *FOUR, "--seeds", "0", "1", "--out", str(tmp_path)]
    runner = _Runner(fail=("crt",))
    summary = run_suite(argv, runner)
    assert len(runner.calls) == 8 and sum(c[0] == "joint" for c in runner.calls) == 2
    status = {(Path(r["config"]).stem, r["seed"]): r["status"] for r in summary["runs"]}
    assert status[("crt", 0)] == status[("crt", 1)] == "failed"
    assert [r["error"] for r in summary["runs"] if r["status"] == "failed"] == ["RuntimeError: crt broke"] * 2
    # again: only the failed runs run
    runner = _Runner()
    summary = run_suite(argv, runner)
    assert sorted(runner.calls) == [("crt", "fit", 0), ("crt", "fit", 1)]
    assert {r["status"] for r in summary["runs"] if "crt" not in r["config"]} == {"skipped"}
    # and a third time: nothing runs
    runner = _Runner()
    summary = run_suite(argv, runner)
    assert runner.calls == [] and {r["status"] for r in summary["runs"]} == {"skipped"}
    # a changed command is not the finished run: it runs again (and the stage 2 reading it)
    runner = _Runner()
    run_suite([*argv[:-2], "--seeds", "0", "--out", str(tmp_path), "--trainer.max_epochs", "3"], runner)
    assert sorted(c[0] for c in runner.calls) == ["crt", "joint", "logit_adjust", "tau_norm"]


def test_the_summary_table_is_mean_and_sample_std_with_published_numbers(tmp_path):
    values = [0.412345, 0.4301, 0.45]
    runs = [
        {
            "config": str(CONFIGS / "imagenet_lt/crt.yaml"),
            "seed": s,
            "status": "done",
            "metrics": {"test/acc": v},
        }
        for s, v in enumerate(values)
    ]
    runs.append(
        {"config": str(CONFIGS / "imagenet_lt/crt.yaml"), "seed": 3, "status": "failed", "metrics": {}}
    )
    md = suite_markdown(runs)
    mean, std = 100 * statistics.mean(values), 100 * statistics.stdev(values)
    row = next(line for line in md.splitlines() if line.startswith("| imagenet_lt/crt"))
    assert f"| {mean:.4g} ± {std:.4g} (paper: 49.60) |" in row
    assert "| 3 of 4 |" in row  # the failed seed is counted apart, never averaged
    assert "Kang et al." in md
    assert load_published(CONFIGS / "digits_lt/joint.yaml") == ({}, "")  # our own composition: no paper
    assert math.isnan(mean_std([0.3])[1]) and mean_std([0.3, 0.3]) == (0.3, 0.0)


def test_every_published_number_names_its_source():
    import yaml

    table = yaml.safe_load((CONFIGS / "PUBLISHED.yaml").read_text())
    for key, entry in table["configs"].items():
        assert (CONFIGS / f"{key}.yaml").is_file(), key
        assert entry["source"] in table["sources"] and entry["setting"], key
        assert all(0 < v < 100 for k, v in entry.items() if k.endswith("acc")), key


@pytest.mark.slow
def test_a_digits_suite_trains_stage1_once_per_seed_and_reruns_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["suite", "--configs", *FOUR, "--seeds", "0", "1", "--out", "out", "--trainer.max_epochs", "2"]
    argv += ["--trainer.enable_model_summary", "false"]
    main(argv)
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert len(summary["runs"]) == 8 and {r["status"] for r in summary["runs"]} == {"done"}
    # two joint fits in all: one checkpoint folder per seed, read by cRT and tau-norm of that seed
    joint_ckpts = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("last.ckpt") if "joint" in str(p))
    assert joint_ckpts == [
        Path("out/digits_lt/joint/seed0/last.ckpt"),
        Path("out/digits_lt/joint/seed1/last.ckpt"),
    ]
    for run in summary["runs"]:
        method = Path(run["config"]).stem
        if method in ("crt", "tau_norm"):
            assert run["stage1_run_dir"] == str(tmp_path / f"out/digits_lt/joint/seed{run['seed']}")
        assert (Path(run["run_dir"]) / "config.yaml").is_file() and (
            Path(run["run_dir"]) / "metrics.csv"
        ).is_file()
    joint0 = next(r for r in summary["runs"] if r["config"].endswith("joint.yaml") and r["seed"] == 0)
    model = load_module_from_checkpoint(str(tmp_path / "out/digits_lt/joint/seed0/last.ckpt"))
    from lt_lightning.cli import build_cli

    dm = build_cli(["--config", digits("joint")], run=False).datamodule
    assert joint0["metrics"]["test/acc"] == pytest.approx(accuracy_by_hand(model, dm), abs=1e-6)
    md = (tmp_path / "out/summary.md").read_text()
    assert sum(line.startswith("| digits_lt/") for line in md.splitlines()) == 4
    assert (tmp_path / "out/summary.png").stat().st_size > 1000
    # the same command again runs nothing: every run is skipped, the numbers are the same
    main(argv)
    again = json.loads((tmp_path / "out/summary.json").read_text())
    assert {r["status"] for r in again["runs"]} == {"skipped"}
    assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in summary["runs"]]


@pytest.mark.slow
def test_the_submitit_local_executor_runs_the_same_suite(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.chdir(tmp_path)
    limits = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    argv = ["suite", "--configs", digits("joint"), digits("tau_norm"), "--seeds", "0", "--out", "out"]
    main([*argv, "--executor", "submitit-local", *limits])
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert [(Path(r["config"]).stem, r["status"]) for r in summary["runs"]] == [
        ("joint", "done"),
        ("tau_norm", "done"),
    ]
    tau = summary["runs"][1]
    assert tau["stage1_run_dir"] == str(tmp_path / "out/digits_lt/joint/seed0")
    assert 0.0 < tau["metrics"]["test/acc"] <= 1.0
    assert list((tmp_path / "out/.submitit").rglob("*_log.out"))  # it really went through submitit
    main([*argv, "--executor", "submitit-local", *limits])
    again = json.loads((tmp_path / "out/summary.json").read_text())
    assert {r["status"] for r in again["runs"]} == {"skipped"}
    assert torch.load(tmp_path / "out/digits_lt/joint/seed0/last.ckpt", weights_only=True)["epoch"] == 0


def _readme_suite_commands() -> list[list[str]]:
    import re
    import shlex

    text = (CONFIGS.parent / "README.md").read_text()
    blocks = re.findall(r"```shell\n(.*?)```", text, flags=re.S)
    words = [shlex.split(b.replace("\\\n", " ")) for b in blocks]
    return [w[w.index("suite") + 1 :] for w in words if w[:2] == ["lt-lightning", "suite"]]


@pytest.mark.slow
def test_the_readme_suites_plan(tmp_path, monkeypatch):
    from lt_lightning.cli.suite import _parser

    commands = _readme_suite_commands()
    assert len(commands) == 2
    monkeypatch.chdir(CONFIGS.parent)  # the README's paths are relative to the repository
    for args in commands:
        opts, overrides = _parser().parse_known_args(args)
        first, second = plan_suite(
            opts.configs, opts.seeds, tmp_path / "out", overrides
        )  # every config parses
        named = [r for r in (*first, *second) if not r.implied]
        assert len(named) == len(opts.configs) * len(opts.seeds)
        # a stage-2 config whose stage 1 is not in --configs brings its stage-1 run with it, once a seed
        implied = {Path(r.config).stem for r in first if r.implied}
        assert len([r for r in first if r.implied]) == len(implied) * len(opts.seeds)
        assert {Path(r.config).stem for r in first} >= {"joint"} and second
    assert "--executor" in commands[1] and "--slurm.partition" in commands[1]


def test_slurm_jobs_of_stage2_depend_on_their_stage1_job(tmp_path):
    from lt_lightning.cli.executors import _submit_slurm_wave

    class FakeExecutor:  # submitit's AutoExecutor interface, no cluster
        def __init__(self):
            self.submitted = []
            self.params = {}

        def update_parameters(self, **kwargs):
            self.params.update(kwargs)

        def submit(self, fn, run):
            job = type("Job", (), {"job_id": f"j{len(self.submitted)}"})()
            self.submitted.append((run["key"], dict(self.params)))
            return job

    first, second = ([vars(r) for r in wave] for wave in plan_suite(FOUR[:2], [0, 1], tmp_path))
    fake, after = FakeExecutor(), {}
    _submit_slurm_wave(fake, first, after)
    _submit_slurm_wave(fake, second, after)
    deps = {key: p["slurm_additional_parameters"].get("dependency") for key, p in fake.submitted}
    assert deps["digits_lt/joint/seed0"] is None and deps["digits_lt/joint/seed1"] is None
    assert deps["digits_lt/crt/seed0"] == f"afterok:{after['digits_lt/joint/seed0'].job_id}"
    assert deps["digits_lt/crt/seed1"] == f"afterok:{after['digits_lt/joint/seed1'].job_id}"
