"""Stand-ins for the head protocol and the datamodule protocol, and a 2-process CPU DDP fit.

Run as ``python ddp_nc_script.py OUT_DIR`` (the test sets MASTER_PORT): fits a tiny model with
``NeuralCollapseCallback`` under ``Trainer(strategy="ddp", devices=2)`` in float64 and, on rank 0, saves
the final weights and the logged ``nc/...`` values to ``OUT_DIR/result.pt``. The test imports this file
for the stand-ins and recomputes the values in one process.
"""

from __future__ import annotations

import sys

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from lt_lightning.callbacks import NeuralCollapseCallback
from lt_lightning.data.profiles import shot_groups

# 41 samples (odd), long-tailed; with thresholds 8 / 5: classes 0-1 many, 2-3 medium, 4-5 few.
COUNTS = [12, 10, 7, 6, 3, 3]
D_IN = 6


def make_data(seed: int = 0, n_per_class=COUNTS) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(len(n_per_class), D_IN, generator=g)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    y = y[torch.randperm(len(y), generator=g)]
    x = centres[y] + torch.randn(len(y), D_IN, generator=g)
    return x, y


class TinyDataModule(LightningDataModule):
    """The datamodule protocol of lt_lightning: un-augmented, in-order, rank-sharded evaluation loaders."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.x, self.y = make_data(seed)
        self.xv, self.yv = make_data(seed + 1, [4, 4, 3, 3, 3, 0])  # class 5 absent from "val"
        self.class_counts = list(COUNTS)
        self.num_classes = len(COUNTS)
        self.shot_groups = shot_groups(COUNTS, many_threshold=8, few_threshold=5)

    def _rank(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _shard(self, x, y, batch_size):
        rank, world = self._rank()  # disjoint and unpadded: rank r takes r, r + world, ...
        return DataLoader(Subset(TensorDataset(x, y), range(rank, len(y), world)), batch_size=batch_size)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=8, shuffle=True, drop_last=True)

    def train_eval_dataloader(self):
        return self._shard(self.x, self.y, 5)

    def val_dataloader(self):
        return self._shard(self.xv, self.yv, 4)

    def test_dataloader(self):
        return self._shard(self.xv, self.yv, 3)


class TinyModule(LightningModule):
    """Backbone with BatchNorm and dropout (state the callback must not disturb) and a linear head."""

    def __init__(self, num_classes: int = len(COUNTS), lr: float = 0.2) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(D_IN, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.2))
        self.frozen = nn.BatchNorm1d(D_IN)  # deliberately kept in eval mode during training
        self.head = nn.Linear(5, num_classes)
        self.lr = lr

    def on_train_epoch_start(self) -> None:
        self.frozen.eval()

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.frozen(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def classifier_weight_bias(self):
        return self.head.weight, self.head.bias

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.forward_head(self.extract_features(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class SaveResult(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("nc/")}
            torch.save({"state_dict": pl_module.state_dict(), "metrics": metrics}, self.path)


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    trainer = Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        precision="64-true",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            NeuralCollapseCallback(on=("train", "val"), log_figures=False),
            SaveResult(f"{out_dir}/result.pt"),
        ],
    )
    trainer.fit(TinyModule(), datamodule=TinyDataModule())
    if torch.distributed.is_initialized():  # gloo's threads alive at exit can abort the process
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
