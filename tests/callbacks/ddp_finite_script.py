"""A 2-process CPU DDP fit under ``FiniteGuard(check_every_n_steps=2)`` where only rank 1's loss goes
NaN (its batch 3). Each rank saves the error it stopped with, its global step and its parameters to
``OUT_DIR/rank{r}.pt``; run by tests/callbacks/test_finite.py.

    python tests/callbacks/ddp_finite_script.py OUT_DIR
"""

from __future__ import annotations

import os
import sys

import lightning as L
import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from lt_lightning.callbacks import FiniteGuard, NonFiniteError
from lt_lightning.optim import LRSchedule
from tests.callbacks.test_finite import BadJoint
from tests.models.helpers import model_kwargs, synthetic_dm


class RankOneOnly(BadJoint):
    def _bad(self) -> bool:
        return self.global_rank == 1 and super()._bad()


def main() -> None:
    out = sys.argv[1]
    torch.manual_seed(0)  # same initial weights on both ranks (DDP also broadcasts them)
    dm = synthetic_dm(batch_size=16)
    model = RankOneOnly(**model_kwargs(dm, lr_schedule=LRSchedule("constant")))
    model.bad_batch = 3
    trainer = L.Trainer(
        callbacks=[FiniteGuard(check_every_n_steps=2)],
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    error = ""
    try:
        trainer.fit(model, datamodule=dm)
    except NonFiniteError as err:
        error = str(err)
    # parameters (BatchNorm statistics are each rank's own until DDP's next broadcast)
    params = {k: v.detach().cpu().clone() for k, v in model.named_parameters()}
    record = {"error": error, "global_step": trainer.global_step, "params": params}
    torch.save(record, os.path.join(out, f"rank{trainer.global_rank}.pt"))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # both files are written before rank 0 returns (a rank that ran on would hang here)
        dist.destroy_process_group()  # gloo's threads alive at exit can abort the process


if __name__ == "__main__":
    main()
