"""``lt-lightning seeds``: fit and test one config once per seed, then a summary table.

    lt-lightning seeds -c configs/digits_lt/joint.yaml --seeds 0 1 2 --out runs/seeds/joint [overrides]

Every seed runs in its own folder ``OUT/seed<s>/`` (the working directory of that run), so the configs'
relative outputs (``runs/<dataset>/<method>/seed<s>/last.ckpt``, logs) never meet another seed's, and a
stage-2 config's relative ``stage1_checkpoint`` (``runs/<dataset>/<stage-1 method>/seed{seed}/last.ckpt``)
finds the stage-1 run of the same seed: for a stage-2 config (a
:class:`~lt_lightning.models.Stage2Module` method) the stage-1 config (``<stage-1 method>.yaml`` next to it, named by the checkpoint's method folder, or
``--stage1_config``) is fitted first in the same folder.

``OUT/summary.json`` and ``OUT/summary.md`` hold, per seed and as mean ± sample standard deviation
(n − 1), the test top-1, balanced accuracy, many/medium/few accuracy and the final NC1 (train features).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lt_lightning.cli.lightning_cli import build_cli, config_class, parse_config
from lt_lightning.models import Stage2Module
from lt_lightning.progress import progress

__all__ = ["SUMMARY_COLUMNS", "run_seeds", "summarize", "summary_markdown"]

#: (metric key, column title) of the summary
SUMMARY_COLUMNS = (
    ("test/acc", "top-1"),
    ("test/balanced_acc", "balanced"),
    ("test/many_acc", "many"),
    ("test/medium_acc", "medium"),
    ("test/few_acc", "few"),
    ("nc/train/nc1", "NC1"),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lt-lightning seeds",
        description="Fit and test CONFIG once per seed; write OUT/summary.json and OUT/summary.md. "
        "Further arguments are LightningCLI overrides (e.g. --trainer.max_epochs 5); --trainer.* and "
        "--overwrite_run overrides also apply to the stage-1 run of a two-stage config.",
    )
    p.add_argument("-c", "--config", required=True, help="a method config (e.g. configs/digits_lt/crt.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds, e.g. 0 1 2")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per seed)")
    p.add_argument("--stage1_config", default=None, help="stage-1 config of a two-stage config")
    p.add_argument(
        "--vary_data_seed",
        action="store_true",
        help="also set the datamodule's seed (the long-tailed split and sampler order) per seed",
    )
    return p


def _resolved(config: Path, overrides: Sequence[str]) -> dict:
    """``config`` with its includes, defaults and ``overrides``, as the CLI reads it (never the YAML alone:
    a composed config holds only what differs from the blocks it includes)."""
    return parse_config(["fit", "-c", str(config), *overrides])


def _stage1_config(config: Path, cfg: dict, explicit: str | None) -> Path | None:
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


def _absolute_data_dir(cfg: dict, overrides: Sequence[str]) -> list[str]:
    """Keep a relative ``data_dir`` (given or the datamodule's default) pointing where it did: the runs
    change the working directory."""
    if any(o.startswith("--data.init_args.data_dir") or o.startswith("--data.data_dir") for o in overrides):
        return []
    data_dir = ((cfg.get("data") or {}).get("init_args") or {}).get("data_dir")
    if data_dir and not os.path.isabs(os.path.expanduser(str(data_dir))):
        return ["--data.init_args.data_dir", str(Path(data_dir).resolve())]
    return []


@contextmanager
def _working_directory(path: Path):
    cwd = os.getcwd()
    path.mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


def _finish_wandb() -> None:
    # WandbLogger reuses a run still open in this process: close it so the next seed gets its own.
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def _run_one(config: Path, args: Sequence[str], subcommand: str) -> dict[str, float]:
    argv = [subcommand, "-c", str(config), *args]
    if subcommand == "fit":
        argv += ["--test_after_fit", "true"]
    try:
        cli = build_cli(argv)
    finally:
        _finish_wandb()
    if subcommand == "fit":
        return dict(cli.final_metrics)
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def summarize(per_seed: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Per-seed values of :data:`SUMMARY_COLUMNS` and their mean and sample std (NaN stays NaN)."""
    runs = [
        {"seed": seed, "metrics": {k: float(m.get(k, float("nan"))) for k, _ in SUMMARY_COLUMNS}}
        for seed, m in per_seed.items()
    ]
    mean, std = {}, {}
    for key, _ in SUMMARY_COLUMNS:
        mean[key], std[key] = _mean_std([r["metrics"][key] for r in runs])
    return {"runs": runs, "mean": mean, "std": std}


def _fmt(v: float, pct: bool) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{100 * v:.2f}" if pct else f"{v:.4f}"


def summary_markdown(summary: dict[str, Any], title: str = "") -> str:
    """The summary as a markdown table (accuracies in %, NC1 as is)."""
    heads = [title for _, title in SUMMARY_COLUMNS]
    lines = []
    if title:
        lines += [f"## {title}", ""]
    lines += ["| seed | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for run in summary["runs"]:
        cells = [_fmt(run["metrics"][k], k.startswith("test/")) for k, _ in SUMMARY_COLUMNS]
        lines.append(f"| {run['seed']} | " + " | ".join(cells) + " |")
    cells = []
    for key, _ in SUMMARY_COLUMNS:
        pct = key.startswith("test/")
        m, s = summary["mean"][key], summary["std"][key]
        cells.append(_fmt(m, pct) if math.isnan(s) else f"{_fmt(m, pct)} ± {_fmt(s, pct)}")
    lines.append("| mean ± std | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def run_seeds(
    argv: Sequence[str], runner: Callable[[Path, Sequence[str], str], dict[str, float]] | None = None
) -> dict[str, Any]:
    """Parse ``argv`` (the arguments after ``seeds``), run every seed, write the summaries, return them."""
    opts, overrides = _parser().parse_known_args(list(argv))
    runner = runner or _run_one
    if len(set(opts.seeds)) != len(opts.seeds):
        raise ValueError(f"--seeds must be distinct, got {opts.seeds}")
    config = Path(opts.config).resolve()
    if not config.is_file():
        raise FileNotFoundError(f"config not found: {opts.config}")
    cfg = _resolved(config, overrides)  # an override may change the method (e.g. --model.init_args.mode)
    stage1 = _stage1_config(config, cfg, opts.stage1_config)
    subcommand = "fit" if config_class(cfg["model"]).trains else "test"
    out = Path(opts.out).resolve()
    trainer_overrides = _trainer_overrides(overrides)
    # resolved here, before the runs change the working directory to their seed's folder
    data_dir = _absolute_data_dir(cfg, overrides)
    s1_data_dir = _absolute_data_dir(_resolved(stage1, ()), ()) if stage1 is not None else []
    per_seed: dict[int, dict[str, float]] = {}
    for i, seed in enumerate(progress(opts.seeds, "seeds")):
        print(f"[lt-lightning seeds] seed {seed} ({i + 1}/{len(opts.seeds)}) in {out / f'seed{seed}'}")
        seeding = ["--seed_everything", str(seed), "--model.init_args.seed", str(seed)]
        if opts.vary_data_seed:
            seeding += ["--data.init_args.seed", str(seed)]
        with _working_directory(out / f"seed{seed}"):
            stage1_metrics: dict[str, float] = {}
            if stage1 is not None:
                stage1_metrics = runner(stage1, [*seeding, *s1_data_dir, *trainer_overrides], "fit")
            metrics = runner(config, [*seeding, *data_dir, *overrides], subcommand)
        # NC1 is a property of the features: a post-hoc stage 2 (same backbone) reports stage 1's
        if "nc/train/nc1" not in metrics and "nc/train/nc1" in stage1_metrics:
            metrics["nc/train/nc1"] = stage1_metrics["nc/train/nc1"]
        per_seed[seed] = metrics
    summary = summarize(per_seed)
    summary.update({"config": str(opts.config), "overrides": list(overrides), "seeds": list(opts.seeds)})
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary, title=f"{opts.config} — seeds {opts.seeds}"))
    print(summary_markdown(summary))
    return summary


def _trainer_overrides(overrides: Sequence[str]) -> list[str]:
    """The ``--trainer.*`` options and ``--overwrite_run`` (with their values) among ``overrides``: they
    apply to the stage-1 run too."""
    picked, i = [], 0
    while i < len(overrides):
        arg = overrides[i]
        if arg.startswith(("--trainer.", "--overwrite_run")):
            picked.append(arg)
            if "=" not in arg and i + 1 < len(overrides) and not overrides[i + 1].startswith("--"):
                picked.append(overrides[i + 1])
                i += 1
        i += 1
    return picked
