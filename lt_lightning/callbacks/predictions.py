"""Write the predictions of ``trainer.predict`` / ``lt-lightning predict`` to disk and print a summary."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

__all__ = ["PredictionWriter", "concat_predictions"]


def concat_predictions(outputs: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenate the per-batch dicts of ``predict_step`` into one dict of CPU tensors (``[N, ...]``)."""
    if not outputs:
        return {}
    return {key: torch.cat([o[key].detach().cpu() for o in outputs]) for key in outputs[0]}


class PredictionWriter(BasePredictionWriter):
    """Saves ``predictions.pt`` (``logits [N, K]``, ``preds [N]``, ``targets [N]`` when labelled, and the
    dataset indices ``index [N]``) and ``predictions.csv`` (index, target, prediction), and prints the count
    and, with targets, the top-1 accuracy.

    Under DDP every rank writes ``predictions.rank<r>.pt`` / ``.csv`` with its own share (``index`` says
    which samples; a distributed sampler may repeat a few to pad the last batch).

    Args:
        output_dir: folder for the files; ``None``: the trainer's ``log_dir`` (else ``default_root_dir``).
        csv: also write the CSV file.
    """

    def __init__(self, output_dir: str | None = None, csv: bool = True) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.csv = csv
        self.last_path: str | None = None

    def _folder(self, trainer) -> str:
        folder = self.output_dir or trainer.log_dir or trainer.default_root_dir
        os.makedirs(folder, exist_ok=True)
        return folder

    def write_on_epoch_end(
        self, trainer, pl_module, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        # One dataloader: a list of batch outputs; several: a list per dataloader (the first is written).
        if predictions and isinstance(predictions[0], list):
            predictions, batch_indices = predictions[0], batch_indices[0] if batch_indices else []
        out = concat_predictions(predictions)
        if not out:
            return
        indices = [i for batch in (batch_indices or []) for i in batch]
        if len(indices) == len(out["preds"]):
            out["index"] = torch.as_tensor(indices, dtype=torch.long)
        else:  # indices are not tracked (e.g. a custom sampler): order of the loader
            out["index"] = torch.arange(len(out["preds"]))
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        stem = os.path.join(self._folder(trainer), f"predictions{suffix}")
        torch.save(out, stem + ".pt")
        if self.csv:
            targets = out.get("targets")
            with open(stem + ".csv", "w") as fh:
                fh.write("index,target,prediction\n")
                t = targets.tolist() if targets is not None else [""] * len(out["preds"])
                for i, y, p in zip(out["index"].tolist(), t, out["preds"].tolist()):
                    fh.write(f"{i},{y},{p}\n")
        self.last_path = stem + ".pt"
        summary = f"predictions: {len(out['preds'])} samples written to {stem}.pt"
        if "targets" in out:
            acc = (out["preds"] == out["targets"]).double().mean().item()
            summary += f"; top-1 accuracy {acc:.4f}"
        if trainer.is_global_zero:
            print(summary)
