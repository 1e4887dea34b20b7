"""Benchmark: one epoch of augmented CIFAR-10-LT batches, device pipeline vs the DataLoader path.

CIFAR-10-LT sized synthetic uint8 images (r = 100: 12,406 images of 32×32×3, in memory; nothing is
downloaded), the instance sampler, batch 128, the CIFAR recipe (4-pixel padded crop, flip,
normalisation). Baselines in the same process:

- ``dataloader``: ``ArrayImageDataset`` + torchvision transforms in a ``DataLoader`` with
  ``--workers`` worker processes (persistent, warmed up by one epoch first);
- ``device``: :class:`~lt_lightning.data.device_pipeline.DeviceLoader` on ``--device`` (CPU here).

Each epoch iterates every batch and touches it (``x.sum()``), so lazy work is counted. The two run
alternately; the best of ``--repeats`` each is reported, with the ratio dataloader / device.

Usage: ``python bench/data_pipeline.py [--quick] [--workers 2] [--device cpu]``; writes
``bench/results/data_pipeline.json``. ``--threads`` (default 1) sets the main process's torch
threads (the device path runs there; each DataLoader worker uses one thread, torch's default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lt_lightning.data.datasets import ArrayImageDataset
from lt_lightning.data.device_pipeline import DeviceLoader, spec_from_transform
from lt_lightning.data.profiles import long_tail_counts
from lt_lightning.data.samplers import build_sampler
from lt_lightning.data.transforms import cifar_transforms

RESULTS = Path(__file__).resolve().parent / "results"


def cifar_lt_arrays(imbalance_ratio: float = 100.0, max_count: int = 5000, seed: int = 0):
    """Random uint8 images ``[N, 32, 32, 3]`` and labels with CIFAR-10-LT's class counts."""
    counts = long_tail_counts(10, max_count, imbalance_ratio)
    labels = np.repeat(np.arange(10), counts)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
    return images, torch.as_tensor(labels)


def _epoch(loader) -> float:
    t0 = time.perf_counter()
    total = 0.0
    for x, _ in loader:
        total += float(x[0, 0, 0, 0])  # touch every batch (a host read per batch, both paths alike)
    return time.perf_counter() - t0


def run(
    quick: bool = False, workers: int = 2, device: str = "cpu", repeats: int = 3, batch: int = 128
) -> dict:
    images, labels = cifar_lt_arrays(max_count=1000 if quick else 5000)
    train_tf, _ = cifar_transforms(True)
    sampler = build_sampler("instance", labels, seed=0, num_replicas=1, rank=0, num_classes=10)
    dataset = ArrayImageDataset(images, labels, train_tf)
    tv = DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=workers, persistent_workers=workers > 0
    )
    dev = DeviceLoader(images, labels, sampler, batch, spec_from_transform(train_tf), device)
    _epoch(tv), _epoch(dev)  # warm-up: worker start, allocator
    best = {"dataloader": float("inf"), "device": float("inf")}
    for _ in range(repeats):
        best["dataloader"] = min(best["dataloader"], _epoch(tv))
        best["device"] = min(best["device"], _epoch(dev))
    return {
        "N": len(labels),
        "batch": batch,
        "workers": workers,
        "device": device,
        "dataloader_epoch_s": best["dataloader"],
        "device_epoch_s": best["device"],
        "speedup_device_vs_dataloader": best["dataloader"] / best["device"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CIFAR-10-LT with n_max = 1000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    row = run(args.quick, args.workers, args.device, args.repeats)
    print(
        f"N={row['N']} batch={row['batch']} workers={row['workers']} device={row['device']}: "
        f"dataloader {row['dataloader_epoch_s']:.3f} s/epoch, device {row['device_epoch_s']:.3f} s/epoch, "
        f"speedup {row['speedup_device_vs_dataloader']:.1f}x"
    )
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    (RESULTS / "data_pipeline.json").write_text(json.dumps({"meta": meta, "rows": [row]}, indent=2))


if __name__ == "__main__":
    main()
