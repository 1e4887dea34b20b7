"""``lt-lightning seeds``: fit and test one config once per seed, then a summary table.

    lt-lightning seeds -c configs/digits_lt/joint.yaml --seeds 0 1 2 --out runs/seeds/joint [overrides]

The one-config case of ``lt-lightning suite`` (:mod:`lt_lightning.cli.suite`): every seed runs in its own
folder ``OUT/<dataset>/<method>/seed<s>/``; for a stage-2 config (a
:class:`~lt_lightning.models.Stage2Module` method) the stage-1 config (``<stage-1 method>.yaml`` beside it,
named by the checkpoint's method folder, or ``--stage1_config``) is fitted first, once per seed, in its
own folder, and the stage-2 run reads that seed's checkpoint. Relative paths in the configs (``data_dir``)
are read against the directory the command was started in. A re-run skips the finished seeds.

``OUT/summary.json`` and ``OUT/summary.md`` hold, per seed and as mean ± sample standard deviation
(n − 1), the test top-1, balanced accuracy, many/medium/few accuracy and the final NC1 (train features).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lt_lightning.cli.executors import Runner
from lt_lightning.cli.suite import _common_options, run_suite
from lt_lightning.cli.summary import SUMMARY_COLUMNS, mean_std
from lt_lightning.cli.tables import significant

__all__ = ["SUMMARY_COLUMNS", "run_seeds", "summarize", "summary_markdown"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lt-lightning seeds",
        description="Fit and test CONFIG once per seed; write OUT/summary.json and OUT/summary.md. "
        "Further arguments are LightningCLI overrides (e.g. --trainer.max_epochs 5); --trainer.*, --data.* "
        "and --overwrite_run overrides also apply to the stage-1 run of a two-stage config.",
    )
    p.add_argument("-c", "--config", required=True, help="a method config (e.g. configs/digits_lt/crt.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds, e.g. 0 1 2")
    p.add_argument("--out", required=True, help="output folder (OUT/<dataset>/<method>/seed<s>/ per run)")
    _common_options(p)
    return p


def summarize(per_seed: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Per-seed values of :data:`SUMMARY_COLUMNS` and their mean and sample std (NaN stays NaN)."""
    runs = [
        {"seed": seed, "metrics": {k: float(m.get(k, float("nan"))) for k, _ in SUMMARY_COLUMNS}}
        for seed, m in per_seed.items()
    ]
    mean, std = {}, {}
    for key, _ in SUMMARY_COLUMNS:
        mean[key], std[key] = mean_std([r["metrics"][key] for r in runs])
    return {"runs": runs, "mean": mean, "std": std}


def _fmt(v: float, pct: bool) -> str:
    if math.isnan(v):
        return "n/a"
    return significant(100 * v if pct else v)


def summary_markdown(summary: dict[str, Any], title: str = "") -> str:
    """The summary as a markdown table (accuracies in %, NC1 as is, 4 significant digits)."""
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


def run_seeds(argv: Sequence[str], runner: Runner | None = None) -> dict[str, Any]:
    """Parse ``argv`` (the arguments after ``seeds``), run every seed, write the summaries, return them.

    ``runner(argv) -> metrics`` replaces the in-process ``lt-lightning ARGV`` (tests)."""
    opts, overrides = _parser().parse_known_args(list(argv))
    if len(set(opts.seeds)) != len(opts.seeds):
        raise ValueError(f"--seeds must be distinct, got {opts.seeds}")
    config = Path(opts.config)
    if not config.is_file():
        raise FileNotFoundError(f"config not found: {opts.config}")
    opts.configs = [opts.config]
    suite = run_suite(runner=runner, opts=opts, overrides=overrides)
    main = str(config.resolve())
    rows = [r for r in suite["runs"] if r["config"] == main]
    per_seed = {
        r["seed"]: {k: (v if v is not None else float("nan")) for k, v in r["metrics"].items()} for r in rows
    }
    summary = summarize(per_seed)
    for run, row in zip(summary["runs"], rows):
        run.update({k: row[k] for k in ("run_dir", "status") if k in row})
        if "stage1_run_dir" in row:
            run["stage1_run_dir"] = row["stage1_run_dir"]
    summary.update({"config": str(opts.config), "overrides": list(overrides), "seeds": list(opts.seeds)})
    out = Path(opts.out).resolve()
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary, title=f"{opts.config} — seeds {opts.seeds}"))
    print(summary_markdown(summary))
    return summary
