"""Two gloo processes compute the DR loss on unequal shards of one batch; each saves its loss and the
gradient of that loss w.r.t. its shard's features. Run by ``tests/test_losses.py``."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from lt_lightning.losses import dot_regression_loss
from lt_lightning.nn.functional import simplex_etf

SPLIT = 7  # rank 0 gets the first SPLIT samples, rank 1 the rest


def make_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(12, 8, generator=g, dtype=torch.float64)
    etf = simplex_etf(5, 8, generator=g, dtype=torch.float64)
    # class 4 only on rank 1, class 0 mostly on rank 0: local counts differ from global ones
    y = torch.tensor([0, 0, 0, 1, 2, 2, 3, 1, 3, 4, 4, 0])
    return h, etf, y


def main(rank: int, init_file: str, out: str, reg_lambda: float) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    h, etf, y = make_batch()
    sl = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    hr = h[sl].clone().requires_grad_(True)
    loss = dot_regression_loss(hr, etf, y[sl], reg_lambda=reg_lambda)
    loss.backward()
    per_sample = dot_regression_loss(h[sl], etf, y[sl], reg_lambda=reg_lambda, reduction="none")
    torch.save({"loss": loss.detach(), "grad": hr.grad, "none": per_sample}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]))
