"""Helper for ``tests/data/samplers/test_ddp.py`` and ``tests/data/test_device_pipeline.py``: a real
2-process CPU DDP run with ClassBalancedSampler.

Usage: ``python tests/data/ddp_sampler_script.py OUT_DIR [device]`` (``device``: the batches come from
a :class:`~lt_lightning.data.device_pipeline.DeviceLoader` over the same sampler). Lightning's ``strategy="ddp"`` re-launches
this script for rank 1. Every rank writes ``OUT_DIR/rank{r}.json`` with the sample indices it saw in
each epoch (read back from the batches, in order), the labels and seed of the sampler, the world size
the sampler resolved from ``torch.distributed`` and the class of the sampler Lightning actually used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lt_lightning.data.device_pipeline import AugmentSpec, DeviceLoader
from lt_lightning.data.samplers import ClassBalancedSampler

# Long-tailed, N = 45 (odd, so rank slices need one padded sample), 6 classes incl. one of size 3.
LABELS = [0] * 17 + [1] * 11 + [2] * 7 + [3] * 5 + [4] * 3 + [5] * 2
SEED = 123
BATCH_SIZE = 4


class IndexDataset(Dataset):
    """Item ``i`` is ``(tensor([i / N]), i)``: the index travels through the batch."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([index / self.size]), index


class RecordingModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: dict[int, list[int]] = {}
        self.sampler_world: tuple[int, int] | None = None

    def train_dataloader(self) -> DataLoader:
        # Built here, after Lightning initialised the process group: num_replicas / rank come from it.
        sampler = ClassBalancedSampler(LABELS, seed=SEED)
        self.sampler_world = (sampler.num_replicas, sampler.rank)
        if len(sys.argv) > 2 and sys.argv[2] == "device":
            n = len(LABELS)
            data = (torch.arange(n, dtype=torch.float32) / n)[:, None]
            return DeviceLoader(data, torch.arange(n), sampler, BATCH_SIZE, AugmentSpec(), self.device)
        return DataLoader(IndexDataset(len(LABELS)), batch_size=BATCH_SIZE, sampler=sampler)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        features, indices = batch
        self.seen.setdefault(self.current_epoch, []).extend(indices.tolist())
        return torch.nn.functional.mse_loss(self.layer(features), features)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_train_end(self) -> None:
        loader = self.trainer.train_dataloader
        record = {
            "rank": self.global_rank,
            "world_size": self.trainer.world_size,
            "sampler_world": list(self.sampler_world),
            "used_sampler": type(loader.sampler).__name__,
            "labels": LABELS,
            "seed": SEED,
            "epochs": {str(epoch): indices for epoch, indices in self.seen.items()},
        }
        out = Path(sys.argv[1]) / f"rank{self.global_rank}.json"
        out.write_text(json.dumps(record))


def main() -> None:
    torch.set_num_threads(1)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(RecordingModule())
    if torch.distributed.is_initialized():  # gloo's threads alive at exit can abort the process
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
