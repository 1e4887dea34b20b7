"""The cost of one ``LightningModule.log`` call, and the share of it spent in Lightning's
``_ResultMetric.to`` (which walks the whole metric object on every call, even when nothing moves).

    python bench/lightning_log.py [--values 20] [--epochs 30] [--threads 1]

A module logs ``--values`` 0-d tensors at each epoch end of a tiny fit (one batch an epoch); the median
time per call is reported for Lightning as installed and with ``_ResultMetric.to`` replaced, in this
process only, by a no-op (what a call would cost if moving a metric that is already on the value's
device were free). Prints a table and writes bench/results/lightning_log.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.trainer.connectors.logger_connector import result
from torch.utils.data import DataLoader, TensorDataset

RESULTS = Path(__file__).with_name("results")


class _Logs(L.LightningModule):
    def __init__(self, values: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 2)
        self.values = values
        self.seconds: list[float] = []

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def on_train_epoch_end(self) -> None:
        value = torch.tensor(1.0)
        start = time.perf_counter()
        for i in range(self.values):
            self.log(f"value_{i}", value)
        self.seconds.append(time.perf_counter() - start)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def ms_per_call(values: int, epochs: int) -> float:
    """Median over epochs of the epoch end's logging time, per ``self.log`` call (milliseconds)."""
    loader = DataLoader(TensorDataset(torch.randn(8, 8)), batch_size=8)
    module = _Logs(values)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    return 1e3 * statistics.median(module.seconds) / values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--values", type=int, default=20, help="self.log calls an epoch")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    installed = ms_per_call(args.values, args.epochs)
    original = result._ResultMetric.to
    result._ResultMetric.to = lambda self, *a, **k: self  # this process only, to size the share
    try:
        without_to = ms_per_call(args.values, args.epochs)
    finally:
        result._ResultMetric.to = original
    rows = {
        "ms_per_log_call": installed,
        "ms_per_log_call_without_result_metric_to": without_to,
        "share_in_result_metric_to": 1 - without_to / installed,
    }
    print(f"{'self.log, ms a call':<44} {installed:8.3f}")
    print(f"{'  with _ResultMetric.to a no-op':<44} {without_to:8.3f}")
    print(f"{'  share of a call in _ResultMetric.to':<44} {rows['share_in_result_metric_to']:8.0%}")
    meta = {
        "values": args.values,
        "epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lightning_log.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
