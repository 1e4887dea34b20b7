"""Neural-collapse speed on the unconstrained-features model: learned classifier vs fixed ETF vs
implicit ETF (Markou et al. NeurIPS 2024), K = 10 and K = 100, balanced and long-tailed.

    python bench/ufm_nc.py [--steps 400]

Prints the steps each method needs to bring NC1 below 1, 0.3 and 0.1 (and NC3 at a few steps),
writes the full curves to bench/results/ufm_nc.json and a plot to bench/results/ufm_nc.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lt_lightning.ufm import UFM_METHODS, run_ufm, steps_to_reach

RESULTS = Path(__file__).with_name("results")
LEVELS = (1.0, 0.3, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = [
        {"num_classes": 10, "per_class": 10, "dim": 20, "imbalance_ratio": 1.0},
        {"num_classes": 10, "per_class": 50, "dim": 20, "imbalance_ratio": 10.0},
        {"num_classes": 100, "per_class": 5, "dim": 200, "imbalance_ratio": 1.0},
    ]
    out = []
    header = f"{'K':>4} {'r':>4} {'method':<13} " + " ".join(f"{'NC1<' + str(lv):>9}" for lv in LEVELS)
    header += f" {'NC3@50':>8} {'NC3@end':>8} {'s':>6}"
    print(header)
    for setting in settings:
        for method in UFM_METHODS:
            start = time.perf_counter()
            res = run_ufm(method, steps=args.steps, **setting)
            secs = time.perf_counter() - start
            reach = [steps_to_reach(res.nc1, lv) for lv in LEVELS]
            row = {
                **setting,
                "method": method,
                "steps_to_nc1": dict(zip(map(str, LEVELS), reach)),
                "nc1": res.nc1,
                "nc3": res.nc3,
                "loss": res.loss,
                "seconds": secs,
            }
            out.append(row)
            cells = " ".join(f"{('-' if s is None else s):>9}" for s in reach)
            print(
                f"{setting['num_classes']:>4} {setting['imbalance_ratio']:>4g} {method:<13} {cells} "
                f"{res.nc3[min(49, len(res.nc3) - 1)]:>8.3f} {res.nc3[-1]:>8.3f} {secs:>6.1f}",
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ufm_nc.json").write_text(json.dumps(out))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 3.6))
    for ax, setting in zip(axes, settings):
        for row in out:
            if all(row[k] == v for k, v in setting.items()):
                ax.semilogy(row["nc1"], label=row["method"])
        ax.set_title(f"K={setting['num_classes']}, r={setting['imbalance_ratio']:g}")
        ax.set_xlabel("step")
        ax.set_ylabel("NC1")
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "ufm_nc.png", dpi=100)
    print(f"wrote {RESULTS / 'ufm_nc.json'} and ufm_nc.png")


if __name__ == "__main__":
    main()
