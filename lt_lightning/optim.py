"""Automatic gradient descent (AGD; Bernstein, Mingard, Huang, Azizan, Yue, arXiv:2304.05187, 2023), as
Markou et al. (NeurIPS 2024) train their implicit-ETF networks with it: no learning rate, no schedule.

For a network of L weight tensors W_l (linear ``[out, in]`` or conv ``[out, in, kh, kw]``; no biases):

- spectral scale ``s_l = sqrt(fan_out / fan_in)``, divided by ``sqrt(kh * kw)`` for a convolution;
- ``G = (1/L) Σ_l s_l Σ_{i,j} ‖∇W_l[:, :, i, j]‖_F`` (one Frobenius norm per kernel position; a linear
  layer has the single position ``(i, j) = ()``);
- step size ``η = log((1 + sqrt(1 + 4G)) / 2)``;
- update ``W_l[:, :, i, j] ← W_l[:, :, i, j] − gain · (η / L) · s_l · ∇W_l[:, :, i, j] / ‖∇W_l[:, :, i, j]‖_F``
  (a kernel position whose gradient is 0 does not move);
- initialisation (:func:`agd_orthogonal_init_`): every kernel position a uniformly random semi-orthogonal
  matrix times ``s_l``, so all its singular values equal ``s_l``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["AGD", "agd_orthogonal_init_", "agd_scale", "check_agd_parameters"]


def agd_scale(shape: torch.Size | tuple[int, ...]) -> float:
    """Spectral scale ``sqrt(fan_out / fan_in)`` (``/ sqrt(kh * kw)`` for a 4-d conv weight)."""
    scale = math.sqrt(shape[0] / shape[1])
    if len(shape) == 4:
        scale /= math.sqrt(shape[2] * shape[3])
    return scale


def check_agd_parameters(named: Iterable[tuple[str, Tensor]]) -> None:
    """Raise ``ValueError`` naming the first parameter AGD cannot train (only 2-d and 4-d weights).

    AGD's step size comes from the spectral norms of weight matrices; a bias or a BatchNorm affine
    (1-d) has none: build the network without them (e.g. ``bn_affine: false``, ``bias=False``).
    """
    for name, p in named:
        if p.dim() not in (2, 4):
            hint = " (a bias or a BatchNorm scale/shift)" if p.dim() == 1 else ""
            raise ValueError(
                f"AGD trains 2-d (linear) and 4-d (conv) weights only; parameter {name!r} has shape "
                f"{tuple(p.shape)}{hint}: build the model without it (e.g. backbone_kwargs.bn_affine: false, "
                "bias=False) or freeze it"
            )


@torch.no_grad()
def agd_orthogonal_init_(params: Iterable[Tensor]) -> None:
    """AGD's initialisation, in place: each ``[out, in]`` slice (every kernel position of a conv)
    a random semi-orthogonal matrix (``nn.init.orthogonal_``), then scaled by :func:`agd_scale`."""
    for p in params:
        if p.dim() == 2:
            nn.init.orthogonal_(p)
        elif p.dim() == 4:
            for i in range(p.shape[2]):
                for j in range(p.shape[3]):
                    nn.init.orthogonal_(p[:, :, i, j])
        else:
            raise ValueError(f"AGD initialises 2-d and 4-d weights only, got shape {tuple(p.shape)}")
        p.mul_(agd_scale(p.shape))


class AGD(torch.optim.Optimizer):
    """Automatic gradient descent (formulas in the module docstring); ``depth`` L = number of tensors.

    Args:
        params: weight tensors, or ``(name, tensor)`` pairs (``module.named_parameters()``), so an
            unsupported parameter is named in the error. Parameter groups may set their own ``gain``.
        gain: multiplies every update (Markou et al.'s ``nc/models/model_structure.py``: 10).

    ``step`` returns the closure's loss (if any); the step size η of the last step is kept as a device
    tensor in ``last_log_step`` (no host synchronisation). A parameter without a gradient adds 0 to G
    and does not move, but still counts in L.

    Raises:
        ValueError: a parameter that is not 2-d or 4-d (bias, BatchNorm affine), or ``gain <= 0``.
    """

    def __init__(self, params, gain: float = 1.0) -> None:
        if not gain > 0:
            raise ValueError(f"gain must be > 0, got {gain}")
        super().__init__(params, defaults={"gain": gain})
        for group in self.param_groups:
            names = group.get("param_names") or [f"#{k}" for k in range(len(group["params"]))]
            check_agd_parameters(zip(names, group["params"]))
        self.depth = sum(len(g["params"]) for g in self.param_groups)
        self.last_log_step: Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        entries = []  # (param, scale, per-position gradient norms [1, 1, kh, kw] or [1, 1], group gain)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                norms = torch.linalg.vector_norm(p.grad, dim=(0, 1), keepdim=True)
                entries.append((p, agd_scale(p.shape), norms, group["gain"]))
        if not entries:
            return loss
        # G accumulates in at least float32 (half-precision parameters), else in the parameters' dtype
        acc = torch.promote_types(entries[0][2].dtype, torch.float32)
        g_total = torch.stack([s * n.sum(dtype=acc) for _, s, n, _ in entries]).sum() / self.depth
        log_step = torch.log((1 + torch.sqrt(1 + 4 * g_total)) / 2)
        for p, scale, norms, gain in entries:
            # 0 where the slice's gradient is 0 (its update is 0 either way)
            factor = torch.where(norms > 0, scale / norms, torch.zeros_like(norms))
            p.sub_((gain / self.depth) * log_step.to(p.dtype) * factor * p.grad)
        self.last_log_step = log_step
        return loss
