"""Distances to the SELI geometry (Thrampoulidis et al., "Imbalance trouble", NeurIPS 2022).

Under imbalance, cross-entropy with vanishing regularisation converges to the geometry of the
simplex-encoded label matrix ``Ẑ`` ``[K, N]`` (``Ẑ[c, i] = 1 − 1/K`` if ``yᵢ = c``, else ``−1/K``), not
to the simplex ETF. With ``Y`` the one-hot labels, ``Ẑ = C Y`` for the centring ``C = I − 11ᵀ/K``, so
``ẐẐᵀ = C D C`` with ``D = diag(n_c)``: the targets need the class counts only. With
``S = (ẐẐᵀ)^½`` (PSD square root), ``d(A, T) = ‖A/‖A‖_F − T/‖T‖_F‖_F``, ``W`` ``[K, d]`` and ``M``
``[K, d]`` the class means (REFERENCE.md, "Beyond the five papers"):

- ``seli_w = d(CW (CW)ᵀ, S)``: ``WWᵀ ∝ UΛUᵀ`` for ``Ẑ = UΛVᵀ``;
- ``seli_h = d(CM (CM)ᵀ, S⁺)``: the sample Gram ``HᵀH ∝ VΛVᵀ = Ẑᵀ S⁺ Ẑ`` with collapsed features
  ``H = MᵀY`` gives ``C M Mᵀ C ∝ S⁺``;
- ``seli_wh = d(CW (CM)ᵀ, C)``: ``WH ∝ Ẑ``.

Balanced counts make ``S ∝ S⁺ ∝ C``, the ETF: then, for a centred ``W`` (``CW = W``), ``seli_w`` is
NC2, ``seli_h`` is NC2 of the means and ``seli_wh`` is NC3. Per shot group the distance is taken between
the group's diagonal blocks of the measured and the target Gram (both normalised on the block).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lt_lightning.metrics.functional._inputs import _F64
from lt_lightning.spec import SHOT_GROUP_NAMES

__all__ = ["SELI_KEYS", "seli_targets"]

#: keys of the SELI distances (each also ``f"{key}/{group}"`` with shot groups)
SELI_KEYS = ("seli_w", "seli_h", "seli_wh")


def seli_targets(counts: Tensor) -> dict[str, Tensor]:
    """The SELI targets of class counts ``[K]`` (all > 0): ``{"w": S, "h": S⁺, "wh": C}``, each ``[K, K]``
    float64, ``S = (C diag(n) C)^½``."""
    n = counts.to(_F64)
    k = n.shape[0]
    c = torch.eye(k, dtype=_F64, device=n.device) - 1.0 / k
    evals, evecs = torch.linalg.eigh(c @ torch.diag(n) @ c)
    # C D C is PSD of rank K − 1 (its null vector is 1): clip the rounding below zero, and invert only
    # the K − 1 eigenvalues that are not that null direction
    evals = evals.clamp_min(0.0)
    root = evals.sqrt()
    keep = evals > k * torch.finfo(_F64).eps * evals.max()
    inv_root = torch.where(keep, 1.0 / torch.where(keep, root, torch.ones_like(root)), torch.zeros_like(root))
    s = (evecs * root) @ evecs.T
    s_pinv = (evecs * inv_root) @ evecs.T
    return {"w": 0.5 * (s + s.T), "h": 0.5 * (s_pinv + s_pinv.T), "wh": c}


def _distance(a: Tensor, t: Tensor) -> Tensor:
    return torch.linalg.matrix_norm(a / torch.linalg.matrix_norm(a) - t / torch.linalg.matrix_norm(t))


def _seli_geometry(
    counts: Tensor, means: Tensor, weight: Tensor | None, class_group: Tensor | None
) -> dict[str, Tensor]:
    """``seli_w``, ``seli_h``, ``seli_wh`` (and per group) of the classes given: counts ``[K']`` (> 0), class
    means ``[K', d]``, weight ``[K', d]`` or None (``seli_w``/``seli_wh`` NaN), groups ``[K']`` or None."""
    k = counts.shape[0]
    targets = seli_targets(counts)
    c = targets["wh"]
    cm = c @ means.to(_F64)
    grams = {"h": cm @ cm.T}
    if weight is not None:
        cw = c @ weight.to(_F64)
        grams.update(w=cw @ cw.T, wh=cw @ cm.T)
    nan = torch.full((), float("nan"), dtype=_F64, device=counts.device)
    out = {
        f"seli_{key}": _distance(grams[key], targets[key]) if key in grams else nan
        for key in ("w", "h", "wh")
    }
    if class_group is not None:
        cg = class_group.to(counts.device)
        for g, name in enumerate(SHOT_GROUP_NAMES):
            idx = torch.nonzero(cg == g).flatten()
            for key in ("w", "h", "wh"):
                if key not in grams or idx.numel() < 2 or k < 2:
                    out[f"seli_{key}/{name}"] = nan
                    continue
                out[f"seli_{key}/{name}"] = _distance(grams[key][idx][:, idx], targets[key][idx][:, idx])
    return out
