"""Run one method's ``fit`` under a real 2-process CPU DDP and save every rank's final state.

    python tests/models/ddp_fit_script.py METHOD OUT_DIR [STAGE1_CKPT]

Each rank writes ``OUT_DIR/rank{r}.pt`` with its ``state_dict``; the test compares them.
"""

from __future__ import annotations

import os
import sys

import lightning as L
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from lt_lightning.data.augment import Mixup
from lt_lightning.models import DecoupledModule, FixedETFModule, ImplicitETFModule, JointModule, TDEModule
from tests.models.helpers import model_kwargs, stage2_kwargs, synthetic_dm


def build(method: str, stage1: str | None):
    # 6 classes, odd-sized training set: the sampler pads, the evaluation loaders do not.
    dm = synthetic_dm(sampler="class" if method in ("crt", "lws") else "instance", batch_size=16)
    if method == "joint":
        return dm, JointModule(**model_kwargs(dm))
    if method == "fixed_etf":
        return dm, FixedETFModule(**model_kwargs(dm, mixup=Mixup(1.0)))
    if method == "tde":
        return dm, TDEModule(**model_kwargs(dm))
    if method in ("crt", "lws"):
        return dm, DecoupledModule(mode=method, **stage2_kwargs(dm, stage1))
    if method == "implicit_etf":
        return dm, ImplicitETFModule(**model_kwargs(dm))
    raise SystemExit(f"unknown method {method}")


def main() -> None:
    method, out = sys.argv[1], sys.argv[2]
    stage1 = sys.argv[3] if len(sys.argv) > 3 else None
    torch.manual_seed(0)  # same initial weights on both ranks (DDP also broadcasts them)
    dm, model = build(method, stage1)
    history: list[torch.Tensor] = []

    class RecordQ(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            history.append(pl_module.head.q.detach().double().clone())

    trainer = L.Trainer(
        callbacks=[RecordQ()] if method == "implicit_etf" else [],
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if history:
        state["_q_history"] = history
    torch.save(state, os.path.join(out, f"rank{trainer.global_rank}.pt"))
    if torch.distributed.is_initialized():  # gloo's threads alive at exit can abort the process
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
