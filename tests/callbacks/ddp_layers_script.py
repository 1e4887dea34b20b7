"""A 2-process CPU DDP fit with layer-wise NC1 (``NeuralCollapseCallback(layers=...)``) on the stand-ins of
ddp_nc_script.py. Run as ``python ddp_layers_script.py OUT_DIR`` (the test sets MASTER_PORT); rank 0
saves the final weights and the logged ``nc/...`` values to ``OUT_DIR/result.pt``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer

from lt_lightning.callbacks import NeuralCollapseCallback

_spec = importlib.util.spec_from_file_location("ddp_nc_script", Path(__file__).with_name("ddp_nc_script.py"))
stand_ins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stand_ins)

#: shallow to deep; "backbone" is the classifier's input (extract_features)
LAYERS = ["frozen", "backbone.0", "backbone.1", "backbone"]


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
            NeuralCollapseCallback(on=("train", "val"), log_figures=False, layers=LAYERS),
            stand_ins.SaveResult(f"{out_dir}/result.pt"),
        ],
    )
    trainer.fit(stand_ins.TinyModule(), datamodule=stand_ins.TinyDataModule())


if __name__ == "__main__":
    main(sys.argv[1])
