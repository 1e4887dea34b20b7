"""Benchmark: layer-wise NC1 (``NeuralCollapseCallback(layers=...)``) on a CIFAR ResNet-32, against the same
callback without layers, in one process.

Four layers (the stem and the three stages, conv maps average-pooled to ``[N, C]``, C = 16/16/32/64) are
hooked on the callback's own first pass; the baseline is the same measurement (two passes: statistics,
then ``nc4``) without hooks. Both time the callback's measurement of the training split on random
32×32 images with long-tailed labels, alternating, and report medians and the ratio.

    python bench/nc_layers.py [--samples 1024] [--repeats 5]

Prints a table and writes bench/results/nc_layers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.callbacks import NeuralCollapseCallback
from lt_lightning.data.profiles import long_tail_counts, shot_groups
from lt_lightning.models import JointModule

RESULTS = Path(__file__).with_name("results")
LAYERS = ["backbone.stem", "backbone.layer1", "backbone.layer2", "backbone.layer3"]


class RandomImages(LightningDataModule):
    """Random 3×32×32 images, K = 10 long-tailed classes (r = 10): the datamodule protocol of the callback."""

    def __init__(self, samples: int, batch_size: int = 256) -> None:
        super().__init__()
        self.num_classes = 10
        self.class_counts = long_tail_counts(10, samples // 3, 10)
        self.shot_groups = shot_groups(self.class_counts, many_threshold=100, few_threshold=40)
        g = torch.Generator().manual_seed(0)
        y = torch.repeat_interleave(torch.arange(10), torch.tensor(self.class_counts))
        self.data = TensorDataset(
            torch.randn(len(y), 3, 32, 32, generator=g) + 0.1 * y[:, None, None, None], y
        )
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)

    def train_eval_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)


def _time(cb: NeuralCollapseCallback, trainer: Trainer, model: JointModule, dm: RandomImages) -> float:
    num_classes = dm.num_classes
    groups = torch.as_tensor(dm.shot_groups)
    counts = torch.as_tensor(dm.class_counts)
    weight, bias = model.classifier_weight_bias()
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        cb._measure_split(
            trainer, model, "train", dm.train_eval_dataloader(), num_classes, groups, counts, weight, bias
        )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dm = RandomImages(args.samples)
    model = JointModule(
        num_classes=10, class_counts=dm.class_counts, backbone="resnet32", backbone_kwargs={"width": 16}
    )
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)  # attaches the datamodule; one step so BatchNorm has statistics
    plain = NeuralCollapseCallback(on="train", log_figures=False)
    layered = NeuralCollapseCallback(on="train", log_figures=False, layers=LAYERS)
    _time(plain, trainer, model, dm), _time(layered, trainer, model, dm)  # warm-up
    times: dict[str, list[float]] = {"without layers": [], "4 layers": []}
    for _ in range(args.repeats):  # alternate so drift in machine load hits both alike
        times["without layers"].append(_time(plain, trainer, model, dm))
        times["4 layers"].append(_time(layered, trainer, model, dm))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["4 layers"] / med["without layers"]
    print(
        f"\nNC callback, train split, N = {len(dm.data)}, CIFAR ResNet-32 (width 16), {torch.get_num_threads()} threads"
    )
    print("| measurement | median s | ratio |\n|---|---|---|")
    for key, value in med.items():
        print(f"| {key} | {value:.3f} | {value / med['without layers']:.2f}x |")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "samples": len(dm.data), "layers": LAYERS, "repeats": args.repeats, "times_s": times,
        "median_s": med, "ratio": ratio, "threads": torch.get_num_threads(), "machine": platform.processor(),
    }  # fmt: skip
    (RESULTS / "nc_layers.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
