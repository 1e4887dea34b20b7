"""``lt-lightning suite``: every config × seed in its own run folder, stage 1 trained once per seed.

    lt-lightning suite --configs configs/digits_lt/joint.yaml configs/digits_lt/crt.yaml --seeds 0 1 2 \\
        --out runs/suite [--jobs N] [--executor local|submitit-local|slurm] [--slurm.partition gpu ...] \\
        [LightningCLI overrides, e.g. --trainer.max_epochs 5]

- Run folders: ``OUT/<dataset>/<method>/seed<s>/`` (config, CSV log, checkpoints, ``run.json``).
- A two-stage config (a :class:`~lt_lightning.models.Stage2Module` method) reads the stage-1 run of the
  same seed: its stage-1 config (``<stage-1 method>.yaml`` beside it, named by its ``stage1_checkpoint``
  folder) runs once per seed whether it is in ``--configs`` or only implied by a stage-2 config.
- Relative paths (``data_dir``, …) mean what they mean in the directory the command was started in, for
  every stage and every executor: no run changes the working directory.
- The overrides apply to every config of the suite; an implied stage-1 run gets the ``--trainer.*``,
  ``--data.*`` and ``--overwrite_run`` ones.
- A re-run skips the runs whose ``run.json`` says ``done`` with the same command, and re-runs the failed
  or unfinished ones (and the stage-2 runs of a stage 1 that ran again).
- ``OUT/summary.json`` / ``summary.md`` / ``summary.png``: see :mod:`lt_lightning.cli.summary`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lt_lightning.cli.executors import EXECUTORS, Runner, read_record, run_waves
from lt_lightning.cli.lightning_cli import config_class, parse_config
from lt_lightning.cli.summary import write_suite_summary
from lt_lightning.models import Stage2Module
from lt_lightning.progress import quiet_third_party

__all__ = ["Run", "plan_suite", "run_suite", "stage1_config"]

_SLURM_OPTIONS = (
    "partition",
    "gpus_per_node",
    "timeout_min",
    "cpus_per_task",
    "mem_gb",
    "nodes",
    "account",
    "qos",
)


@dataclass
class Run:
    """One config × seed of a suite (the data an executor needs to run it)."""

    key: str
    config: str
    seed: int
    subcommand: str
    run_dir: str
    start_dir: str
    argv: list[str] = field(default_factory=list)
    stage1_key: str | None = None
    stage1_run_dir: str | None = None
    implied: bool = False
    #: a previous, unfinished run is in the folder: start afresh (``--overwrite_run true``)
    overwrite: bool = False


def stage1_config(config: Path, cfg: dict, explicit: str | None = None) -> Path | None:
    """The stage-1 config of ``config`` (resolved as ``cfg``), ``None`` for a one-stage method."""
    model = cfg.get("model") or {}
    if not issubclass(config_class(model), Stage2Module):
        return None
    if explicit:
        return Path(explicit).resolve()
    ckpt = (model.get("init_args") or {}).get("stage1_checkpoint")
    if not ckpt or os.path.isabs(ckpt):
        raise ValueError(
            f"{config}: cannot find the stage-1 config of stage1_checkpoint={ckpt!r} (a relative "
            "runs/<dataset>/<method>/seed{seed}/last.ckpt is expected); pass --stage1_config"
        )
    folder = Path(ckpt).parent
    if folder.name.startswith("seed"):  # runs/<dataset>/<method>/seed{seed}/last.ckpt
        folder = folder.parent
    candidate = config.parent / f"{folder.name}.yaml"
    if not candidate.is_file():
        raise ValueError(f"{config}: stage-1 config {candidate} not found; pass --stage1_config")
    return candidate


def shared_overrides(overrides: Sequence[str]) -> list[str]:
    """The ``--trainer.*``, ``--data.*`` and ``--overwrite_run`` options (with their values) among
    ``overrides``: they also apply to an implied stage-1 run."""
    picked, i = [], 0
    while i < len(overrides):
        arg = overrides[i]
        if arg.startswith(("--trainer.", "--data.", "--overwrite_run")):
            picked.append(arg)
            if "=" not in arg and i + 1 < len(overrides) and not overrides[i + 1].startswith("--"):
                picked.append(overrides[i + 1])
                i += 1
        i += 1
    return picked


def _method_dir(out: Path, config: Path, seed: int) -> Path:
    return out / config.parent.name / config.stem / f"seed{seed}"


def plan_suite(
    configs: Sequence[str],
    seeds: Sequence[int],
    out: str | os.PathLike,
    overrides: Sequence[str] = (),
    stage1: str | None = None,
    vary_data_seed: bool = False,
    group: str | None = None,
) -> list[list[Run]]:
    """The suite's runs in two waves: stage-1 and one-stage runs, then the stage-2 runs reading them."""
    if not configs or not seeds:
        raise ValueError("a suite needs at least one config (--configs) and one seed (--seeds)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct, got {list(seeds)}")
    start, out_dir = os.getcwd(), Path(out).resolve()
    paths = []
    for c in configs:
        path = Path(c).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"config not found: {c}")
        if path.name.startswith("_"):  # a folder's shared blocks (configs/*/_base.yaml): no method of its own
            continue
        if path not in paths:
            paths.append(path)
    group = group or out_dir.name
    first: dict[Path, list[str]] = {}  # stage-1 / one-stage configs and their overrides
    second: list[tuple[Path, Path, str]] = []  # (stage-2 config, its stage-1 config, subcommand)
    for path in paths:
        cfg = parse_config(["fit", "-c", str(path), *overrides])
        s1 = stage1_config(path, cfg, stage1)
        sub = "fit" if config_class(cfg["model"]).trains else "test"
        if s1 is None:
            first[path] = list(overrides)
        else:
            second.append((path, s1, sub))
    for _, s1, _ in second:
        first.setdefault(s1, shared_overrides(overrides))
    subs = {
        path: "fit"
        if config_class(parse_config(["fit", "-c", str(path), *extra])["model"]).trains
        else "test"
        for path, extra in first.items()
    }
    implied = {p for p in first if p not in paths}
    wave1, wave2 = [], []
    for seed in seeds:
        seeding = ["--seed_everything", str(seed), "--model.init_args.seed", str(seed)]
        seeding += ["--data.init_args.seed", str(seed)] if vary_data_seed else []
        runs: dict[Path, Run] = {}
        for path, extra in first.items():
            runs[path] = _run(
                path, seed, subs[path], out_dir, start, group, [*seeding, *extra], implied=path in implied
            )
            wave1.append(runs[path])
        for path, s1, sub in second:
            dep = runs[s1]
            ckpt = ["--model.init_args.stage1_checkpoint", os.path.join(dep.run_dir, "last.ckpt")]
            run = _run(path, seed, sub, out_dir, start, group, [*seeding, *ckpt, *overrides])
            run.stage1_key, run.stage1_run_dir = dep.key, dep.run_dir
            wave2.append(run)
    return [wave1, wave2]


def _run(
    config: Path,
    seed: int,
    sub: str,
    out: Path,
    start: str,
    group: str,
    args: list[str],
    implied: bool = False,
) -> Run:
    run_dir = _method_dir(out, config, seed)
    argv = [sub, "-c", str(config), "--run_dir", str(run_dir), "--run_group", group, *args]
    if sub == "fit":
        argv += ["--test_after_fit", "true"]
    key = f"{config.parent.name}/{config.stem}/seed{seed}"
    return Run(key, str(config), seed, sub, str(run_dir), start, argv, implied=implied)


def _finished(run: Run) -> bool:
    record = read_record(run.run_dir)
    return bool(record and record.get("status") == "done" and record.get("argv") == run.argv)


def _select(waves: list[list[Run]]) -> tuple[list[list[Run]], dict[str, dict[str, Any]]]:
    """The runs to execute (unfinished, failed, or reading a stage 1 that runs again) and the records of
    the finished ones (status ``skipped``)."""
    todo: list[list[Run]] = []
    skipped: dict[str, dict[str, Any]] = {}
    again: set[str] = set()
    for wave in waves:
        selected = []
        for run in wave:
            if _finished(run) and run.stage1_key not in again:
                skipped[run.key] = {**(read_record(run.run_dir) or {}), "status": "skipped"}
                continue
            again.add(run.key)
            run.overwrite = run.subcommand == "fit" and os.path.isdir(run.run_dir)
            selected.append(run)
        todo.append(selected)
    return todo, skipped


def _parser(prog: str = "lt-lightning suite") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run every CONFIG × SEED in its own folder under OUT (stage 1 of a two-stage config "
        "once per seed), skip finished runs, and write OUT/summary.json, summary.md and summary.png. "
        "Further arguments are LightningCLI overrides applied to every config (e.g. --trainer.max_epochs 5).",
    )
    p.add_argument(
        "--configs", nargs="+", required=True, help="method configs, e.g. configs/digits_lt/*.yaml"
    )
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds, e.g. 0 1 2")
    p.add_argument("--out", required=True, help="output folder (OUT/<dataset>/<method>/seed<s>/ per run)")
    _common_options(p)
    return p


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage1_config", default=None, help="stage-1 config of every two-stage config")
    p.add_argument(
        "--vary_data_seed",
        action="store_true",
        help="also set the datamodule's seed (the long-tailed split and sampler order) per seed",
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="local runs at once (one GPU each when there are several)"
    )
    p.add_argument(
        "--executor", choices=EXECUTORS, default="local", help="local (default), submitit-local or slurm"
    )
    for name in _SLURM_OPTIONS:
        kind = int if name in ("gpus_per_node", "timeout_min", "cpus_per_task", "mem_gb", "nodes") else str
        p.add_argument(f"--slurm.{name}", dest=f"slurm_{name}", type=kind, default=None, help=f"SLURM {name}")


def run_suite(
    argv: Sequence[str] | None = None,
    runner: Runner | None = None,
    *,
    opts: argparse.Namespace | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Parse ``argv`` (the arguments after ``suite``), run the suite, write and return its summary."""
    quiet_third_party()
    if opts is None:
        opts, overrides = _parser().parse_known_args(list(argv or ()))
    began = time.perf_counter()
    out = Path(opts.out).resolve()
    waves = plan_suite(
        opts.configs, opts.seeds, out, overrides, opts.stage1_config, opts.vary_data_seed, group=out.name
    )
    todo, skipped = _select(waves)
    total, pending = sum(map(len, waves)), sum(map(len, todo))
    print(f"[lt-lightning suite] {total} runs in {out}: {pending} to run, {len(skipped)} finished already")

    def announce(record: dict[str, Any]) -> None:
        print(f"[lt-lightning suite] {record['key']}: {record['status']} ({record['run_dir']})")

    slurm = {name: getattr(opts, f"slurm_{name}") for name in _SLURM_OPTIONS}
    records = {
        r["key"]: r
        for r in run_waves(
            [[asdict(run) for run in wave] for wave in todo],
            opts.executor,
            opts.jobs,
            runner,
            folder=str(out / ".submitit"),
            slurm=slurm,
            on_done=announce,
        )
    }
    records.update(skipped)
    rows = []
    for run in (r for wave in waves for r in wave):
        record = records.get(run.key, {})
        row = {
            "config": run.config,
            "seed": run.seed,
            "run_dir": run.run_dir,
            "status": record.get("status", "failed"),
            "metrics": dict(record.get("metrics") or {}),
        }
        if run.stage1_run_dir:
            row["stage1_run_dir"] = run.stage1_run_dir
            stage1 = records.get(run.stage1_key or "", {}).get("metrics") or {}
            # NC1 is a property of the features: a post-hoc stage 2 (same backbone) reports stage 1's
            if "nc/train/nc1" not in row["metrics"] and "nc/train/nc1" in stage1:
                row["metrics"]["nc/train/nc1"] = stage1["nc/train/nc1"]
        if run.implied:
            row["implied"] = True
        if record.get("error"):
            row["error"] = record["error"]
        rows.append(row)
    meta = {
        "configs": [str(c) for c in opts.configs],
        "seeds": list(opts.seeds),
        "overrides": list(overrides),
        "executor": opts.executor,
        "title": f"suite {out.name}: seeds {list(opts.seeds)}",
        "seconds": time.perf_counter() - began,
    }
    summary = write_suite_summary(out, rows, meta)
    print((out / "summary.md").read_text())
    failed = [r for r in rows if r["status"] == "failed"]
    print(
        f"[lt-lightning suite] summary: {out / 'summary.md'}, {out / 'summary.json'}, {out / 'summary.png'}"
    )
    if failed:
        print(f"[lt-lightning suite] {len(failed)} run(s) failed; run the same command again to retry them:")
        for r in failed:
            print(f"  {r['run_dir']}: {r.get('error', '')}")
    return summary
