"""Run the real ``lt-lightning`` CLI under 2-process CPU DDP: fit (optional), validate and test in one job.

    python tests/cli/ddp_cli_script.py STAGES OUT_DIR CLI_ARGS...

``STAGES`` is e.g. ``fit,validate,test``. Every NeuralCollapseCallback measures every epoch with figures
on. Each rank writes ``OUT_DIR/metrics_rank{r}.json`` with the callback metrics after each stage, so the
test can check both ranks finished and agree. Lightning's DDP launcher re-runs this script for rank 1.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from lt_lightning.callbacks import NeuralCollapseCallback
from lt_lightning.cli import build_cli


def main() -> None:
    stages, out, cli_args = sys.argv[1].split(","), sys.argv[2], sys.argv[3:]
    cli = build_cli(cli_args, run=False)
    for cb in cli.trainer.callbacks:
        if isinstance(cb, NeuralCollapseCallback):
            cb.every_n_epochs, cb.log_figures = 1, True
    record: dict[str, dict[str, float]] = {}
    for stage in stages:
        getattr(cli.trainer, stage)(cli.model, datamodule=cli.datamodule)
        record[stage] = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    rank = cli.trainer.global_rank
    with open(os.path.join(out, f"metrics_rank{rank}.json"), "w") as f:
        json.dump(record, f)
    if torch.distributed.is_initialized():  # gloo's threads alive at exit can abort the process
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
