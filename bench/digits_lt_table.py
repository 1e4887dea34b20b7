"""The digits-LT results table: every method, top-1 and many/medium/few accuracy on the balanced
test set, mean ± std over seeds, each run through the ``lt-lightning`` CLI with the shipped configs.

    python bench/digits_lt_table.py [--seeds 0 1 2] [--methods ldam_drw ...]

For seed S every run gets ``--seed_everything S --data.init_args.seed S`` (so the long-tailed split
changes with the seed too) and runs in bench/results/digits_lt/seed{S}/ (stage-2 configs find their
stage-1 checkpoint there). Writes bench/results/digits_lt_table.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

from lt_lightning.cli import build_cli

CONFIGS = Path(__file__).parents[1] / "configs" / "digits_lt"
RESULTS = Path(__file__).with_name("results")
FIT = ["joint", "fixed_etf", "fixed_etf_ce", "tde", "implicit_etf", "crt", "lws"]
#: the long-tail losses on JointModule (issue 12); their rows also report minority collapse
LT_LOSSES = ["logit_adjust", "logit_adjust_posthoc", "balanced_softmax", "ldam_drw"]
FIT += LT_LOSSES
#: weight balancing (Alshammari et al.): stage 1 with the larger weight decay, then MaxNorm stage 2 on it
WEIGHT_BALANCING = ["weight_balancing", "weight_balancing_maxnorm"]
FIT += WEIGHT_BALANCING
TEST_ONLY = ["tau_norm", "ncm"]
KEYS = ["acc", "many_acc", "medium_acc", "few_acc"]
#: train-set minority-collapse measurements at the last epoch (see lt_lightning.metrics.minority_collapse)
MC_KEYS = ["mc_wcos/few", "mc_wnorm_ratio"]


def subcommand(method: str) -> str:
    """``fit`` for a method that trains, ``test`` for τ-norm and NCM (they fit their classifier at test)."""
    return "fit" if method in FIT else "test"


def cli_args(method: str, seed: int) -> list[str]:
    """The arguments after ``lt-lightning fit|test`` of one run of the table."""
    return [
        "--config",
        str(CONFIGS / f"{method}.yaml"),
        "--seed_everything",
        str(seed),
        "--data.init_args.seed",
        str(seed),
        "--trainer.enable_model_summary",
        "false",
    ]


def run_seed(seed: int, methods: list[str]) -> dict[str, dict[str, float]]:
    workdir = RESULTS / "digits_lt" / f"seed{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    os.chdir(workdir)
    out = {}
    try:
        for method in methods:
            args = cli_args(method, seed)
            if subcommand(method) == "fit":
                cli = build_cli(["fit", *args])
                nc1 = cli.trainer.callback_metrics.get("nc/train/nc1")  # test() resets callback_metrics
                mc = {k: cli.trainer.callback_metrics.get(f"nc/train/{k}") for k in MC_KEYS}
                metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
            else:
                cli = build_cli(["test", *args])
                metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
                nc1 = None
                mc = {}
            out[method] = {k: float(metrics[f"test/{k}"]) for k in KEYS}
            if nc1 is not None:
                out[method]["nc1"] = float(nc1)
            out[method].update({k: float(v) for k, v in mc.items() if v is not None})
            print(seed, method, out[method], flush=True)
    finally:
        os.chdir(here)
    return out


def table_rows(per_seed: dict[int, dict[str, dict[str, float]]], seeds: list[int]) -> list[dict]:
    """One row per method with results for at least one of ``seeds``: (mean, std) of every key over the
    seeds that have it, and those seeds under ``"seeds"``. A method never run (e.g. ``--methods X`` with
    no saved table) gets no row."""
    rows = []
    for method in FIT + TEST_ONLY:
        have = [s for s in seeds if method in per_seed.get(s, {})]
        if not have:
            continue
        row: dict = {"method": method, "seeds": have}
        for key in [*KEYS, "nc1", *MC_KEYS]:
            vals = [per_seed[s][method][key] for s in have if key in per_seed[s][method]]
            if vals:
                row[key] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=FIT + TEST_ONLY,
        choices=FIT + TEST_ONLY,
        help="re-run only these (stage 2 reuses the joint checkpoints already there); others are kept",
    )
    args = parser.parse_args(argv)
    saved = RESULTS / "digits_lt_table.json"
    per_seed = {}
    if saved.is_file() and set(args.methods) != set(FIT + TEST_ONLY):
        per_seed = {int(k): v for k, v in json.loads(saved.read_text())["per_seed"].items()}
    for s in args.seeds:
        per_seed.setdefault(s, {}).update(run_seed(s, args.methods))
    rows = table_rows(per_seed, args.seeds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "digits_lt_table.json").write_text(
        json.dumps({"seeds": args.seeds, "per_seed": per_seed, "rows": rows}, indent=2)
    )
    print(
        "\n| method | top-1 | many | medium | few | NC1 (train) | few-shot cos(w) | few/many ‖w‖ |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    for row in rows:
        cells = []
        for key in [*KEYS, "nc1", *MC_KEYS]:
            if key not in row:
                cells.append("–")
            elif key in ("nc1", *MC_KEYS):
                cells.append(f"{row[key][0]:.3f} ± {row[key][1]:.3f}")
            else:
                cells.append(f"{100 * row[key][0]:.1f} ± {100 * row[key][1]:.1f}")
        partial = "" if len(row["seeds"]) == len(args.seeds) else f" (seeds {row['seeds']})"
        print(f"| {row['method']}{partial} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
