"""Training throughput of each method under Lightning vs a plain PyTorch loop (same model, data,
optimiser), in one process. Prints a table and writes bench/results/train_step.json.

    python bench/train_step.py            # ResNet-32 (64-d) on CIFAR-sized random batches of 128
    python bench/train_step.py --quick    # MLP on digits-sized inputs, for a smoke run

Overhead = plain samples/s ÷ Lightning samples/s − 1 (target ≤ 5 %). Warm-up steps are excluded from
both timings; the two runs alternate and the median of ``--repeats`` is reported.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.models import FixedETFModule, JointModule, TDEModule
from lt_lightning.optim import LRSchedule

RESULTS = Path(__file__).with_name("results")


class _Timer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()


def _loader(n: int, shape: tuple[int, ...], k: int, batch: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False, drop_last=True)


def time_lightning(model, loader, steps: int, warmup: int) -> float:
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=loader)
    return timer.end - timer.start


def time_plain(model, loader, steps: int, warmup: int) -> float:
    """The same module's pieces in a hand-written loop: forward, loss, backward, and the module's own
    optimizer (with a constant schedule the module configures no LR scheduler either)."""
    opt = model.optimizer([p for p in model.parameters() if p.requires_grad])
    model.train()
    it = iter(loader)
    start = None
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        features = model.extract_features(x)
        model.on_train_features(features, y)
        loss = model.compute_loss(model.forward_head(features), features, y, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=None, help="a subset of the methods (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.quick:
        k, shape, batch, steps = 10, (1, 8, 8), 64, args.steps or 200
        common = {"backbone": "mlp", "backbone_kwargs": {"in_features": 64, "hidden": [256, 256]}}
        tde_common = common
    else:
        k, shape, batch, steps = 10, (3, 32, 32), 128, args.steps or 20
        common = {"backbone": "resnet32", "backbone_kwargs": {"width": 16}}
        tde_common = {"backbone": "resnet32_tde"}
    warmup = 3
    sgd = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    base = {"num_classes": k, "optimizer": sgd, "lr_schedule": LRSchedule(name="constant")}
    methods = {
        "joint": lambda: JointModule(**base, **common),
        "fixed_etf (DR)": lambda: FixedETFModule(**base, **common),
        "fixed_etf (CE)": lambda: FixedETFModule(**base, **common, loss="ce"),
        "tde": lambda: TDEModule(**base, **tde_common),
    }
    try:
        from lt_lightning.models import ImplicitETFModule

        methods["implicit_etf"] = lambda: ImplicitETFModule(**base, **common)
    except ImportError:
        pass
    if args.methods:
        methods = {name: make for name, make in methods.items() if name in args.methods}
    loader = _loader(batch * (steps + warmup), shape, k, batch)
    rows = []
    for name, make in methods.items():
        model = make()
        lt, pt = [], []
        for _ in range(args.repeats):
            pt.append(time_plain(copy.deepcopy(model), loader, steps, warmup))
            lt.append(time_lightning(copy.deepcopy(model), loader, steps, warmup))
        plain_sps = steps * batch / statistics.median(pt)
        light_sps = steps * batch / statistics.median(lt)
        rows.append(
            {
                "method": name,
                "plain_samples_per_s": plain_sps,
                "lightning_samples_per_s": light_sps,
                "overhead_pct": 100 * (plain_sps / light_sps - 1),
            }
        )
    print(f"\n{'method':<16} {'plain samples/s':>16} {'Lightning samples/s':>20} {'overhead':>9}")
    for r in rows:
        print(
            f"{r['method']:<16} {r['plain_samples_per_s']:>16.1f} {r['lightning_samples_per_s']:>20.1f} "
            f"{r['overhead_pct']:>8.1f}%"
        )
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "quick": args.quick,
        "batch": batch,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }
    (RESULTS / "train_step.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
