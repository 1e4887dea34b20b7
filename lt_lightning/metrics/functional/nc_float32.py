"""The one-shot float32 path of :func:`~lt_lightning.metrics.functional.neural_collapse`.

Float32 GEMMs on per-class shifted features ``[N, d]``, corrected exactly in float64: the statistics of
:mod:`~lt_lightning.metrics.functional.nc_state` at about the cost of one float32 ``featuresᵀ
features``, and NC4 counts identical to the float64 path (near-ties are re-ranked in float64 by
:func:`_checked_argmax`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lt_lightning.metrics.functional._inputs import _F64
from lt_lightning.metrics.functional.nc_state import _neural_collapse_init_state
from lt_lightning.spec import SHOT_GROUP_NAMES

__all__: list[str] = []

_EPS32 = torch.finfo(torch.float32).eps
_SHIFT_SAMPLES = 64


def _neural_collapse_stats_f32(
    h: Tensor,
    labels: Tensor,
    num_classes: int,
    class_group: Tensor | None,
    num_groups: int,
    chunk: int = 65536,
) -> tuple[dict[str, Tensor], Tensor, Tensor | None]:
    """The float64 statistics of :func:`_neural_collapse_init_state` from float32 features, at GEMM speed.

    Pass 1 sums each class with a one-hot float32 GEMM; the float32 roundings ``m_c`` of those rough
    means are the shifts of pass 2, which forms ``δ_i = h_i − m_{y_i}`` (exact or float32-accurate
    however large a common offset is, since ``m_c`` lies among the class's samples), ``δᵀδ`` and
    ``D_c = Σ_{i∈c} δ_i`` as float32 GEMMs over chunks of ``chunk`` rows, added up in float64. The exact
    identity ``Σ_{i∈c} (h_i − μ_c)(h_i − μ_c)ᵀ = Σ_{i∈c} δ_i δ_iᵀ − D_c D_cᵀ / n_c`` then re-centres on
    the class means in float64; as ``m_c`` is within a few float32 roundings of ``μ_c`` that term
    is tiny and no digits cancel. Cost: about 1.4 float32 ``hᵀh`` GEMMs and
    three passes over ``h``.

    Args:
        h: ``[N, d]`` float32 features (only the samples to use); labels: ``[N]`` long in ``[0, K)``.
        class_group: ``[K]`` shot-group ids on ``h``'s device, required when ``num_groups > 1``.
        chunk: rows per float32 product (bounds the ``[chunk, d]`` temporaries).

    Returns:
        The statistics ``{"counts" [K], "sums" [K, d], "scatter" [G, d, d], "sq_dev" [K]}`` (all
        float64), the shifts ``m_c`` ``[K, d]`` (float32) and, when all rows fit one chunk without groups,
        ``δ`` ``[N, d]`` for reuse (else None).
    """
    n, d = h.shape
    dev = h.device
    state = _neural_collapse_init_state(num_classes, d, num_groups, dev)
    if n == 0:
        return state, h.new_zeros(num_classes, d), None
    counts = torch.bincount(labels, minlength=num_classes).to(_F64)
    d_sum, sq, scatter = state["sums"], state["sq_dev"], state["scatter"]
    classes = torch.arange(num_classes, device=dev)
    n_safe = counts.clamp_min(1.0)

    # Shift m_c: the float32 rounding of the mean of (up to) the first 64 samples of each class, within
    # about σ/8 of μ_c. Any shift is exact in the identity; a near one leaves nothing to cancel.
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0).long() - counts.long()
    rank_in_class = torch.arange(n, device=dev) - starts[labels[order]]
    sub = order[rank_in_class < _SHIFT_SAMPLES]
    sub_n = counts.clamp(1.0, float(_SHIFT_SAMPLES))
    shift = (
        h.new_zeros(num_classes, d, dtype=_F64).index_add_(0, labels[sub], h[sub].to(_F64)) / sub_n[:, None]
    )
    shift = shift.to(torch.float32)
    if num_groups > 1 and class_group is None:
        raise ValueError(f"class_group is required for a scatter with {num_groups} groups")
    if num_groups == 1 or class_group is None:
        parts: list[tuple[int, Tensor | None]] = [(0, None)]
    else:
        gid = class_group[labels]
        parts = [(g, torch.nonzero(gid == g).flatten()) for g in range(num_groups)]
    for g, rows in parts:
        total = n if rows is None else rows.numel()
        for start in range(0, total, chunk):  # one iteration per `chunk` rows, not per sample
            if rows is None:
                hb, yb = h[start : start + chunk], labels[start : start + chunk]
            else:
                r = rows[start : start + chunk]
                hb, yb = h[r], labels[r]
            # [δ | onehot(y)]ᵀ δ: one GEMM gives δᵀδ [d, d] and the class sums D [K, d]
            buf = hb.new_empty(hb.shape[0], d + num_classes)
            delta = buf[:, :d]
            torch.index_select(shift, 0, yb, out=delta)
            torch.sub(hb, delta, out=delta)
            torch.eq(yb[:, None], classes[None, :], out=buf[:, d:])
            prod = (buf.T @ delta).to(_F64)
            scatter[g].add_(prod[:d])
            d_sum.add_(prod[d:])
            sq.index_add_(0, yb, torch.linalg.vector_norm(delta, dim=1).to(_F64).square())
    u = d_sum / n_safe.sqrt()[:, None]  # D_c / √n_c (zero rows for empty classes)
    if num_groups == 1 or class_group is None:
        scatter[0].sub_(u.T @ u)
    else:
        member = class_group[None, :] == torch.arange(num_groups, device=dev)[:, None]  # [G, K]
        masked = u[None] * member[:, :, None].to(_F64)
        scatter.sub_(masked.transpose(1, 2) @ masked)
    sq.sub_((u * u).sum(1))
    state["sums"] = shift.to(_F64) * counts[:, None] + d_sum
    state["counts"] = counts
    return state, shift, (delta if num_groups == 1 and n <= chunk else None)


def _shifted(h: Tensor, labels: Tensor, shift: Tensor) -> Tensor:
    """``h_i − shift[y_i]`` ``[N, d]`` with one temporary."""
    delta = shift.index_select(0, labels)
    return torch.sub(h, delta, out=delta)


def _checked_argmax(
    score: Tensor, bound: Tensor, rows_f64: Callable[[Tensor], Tensor], allowed: Tensor | None
) -> Tensor:
    """Row argmax of a float32 ``[N, K]`` score equal to the float64 one, with one host sync.

    ``bound`` ``[N]`` bounds the float32 error of every entry of a row; rows whose top-two gap is within
    twice that could rank differently in float64 and are recomputed by ``rows_f64(idx) -> [n, K]``.
    ``allowed`` (``[N, K]`` bool, or None for all) restricts the candidates.
    """
    neg_inf = float("-inf")
    s = score if allowed is None else score.masked_fill(~allowed, neg_inf)
    best, arg = s.max(1)
    second = s.scatter(1, arg[:, None], neg_inf).max(1).values
    close = torch.nonzero(best - second <= 2.0 * bound).flatten()
    if close.numel():
        s64 = rows_f64(close)
        if allowed is not None:
            s64 = s64.masked_fill(~allowed[close], neg_inf)
        arg[close] = s64.argmax(1)
    return arg


def _neural_collapse_nc4_f32(
    h: Tensor,
    labels: Tensor,
    preds: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    means: Tensor,
    usable: Tensor,
    class_group: Tensor | None,
    shift: Tensor,
    delta: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`_neural_collapse_nc4_update` from float32 features with one float32 GEMM, same counts.

    With ``c`` the centre of the class means and ``δ_i = h_i − s_{y_i}`` the shifted features of
    :func:`_neural_collapse_stats_f32` (passed as ``delta`` or recomputed), the nearest-class-mean
    scores ``2 (h_i − c)·m_k − ‖m_k‖²`` (``m_k = μ_k − c``) are ``2 δ_i·m_k + T[y_i, k]`` and the logits
    are ``δ_i·w_k + L[y_i, k]``, with the ``[K, K]`` tables ``T``, ``L`` in float64: one float32 product
    ``δ [2m; W]ᵀ`` of the small deviations, no pass over ``h`` with a large offset. Rows whose best two
    classes lie within the float32 error bound (``4 (d + 2) ε₃₂`` times the magnitudes) are re-ranked
    in float64 with the float64 path's formulas, so every argmax equals the float64 path's.
    """
    d = h.shape[1]
    k = means.shape[0]
    dev = h.device
    bound_scale = 4.0 * (d + 2) * _EPS32
    zero = torch.zeros_like(means)
    centre64 = torch.where(usable[:, None], means, zero).sum(0) / usable.sum().clamp_min(1)
    mc = torch.where(usable[:, None], means - centre64, zero)  # [K, d]
    s64 = shift.to(_F64)
    delta = _shifted(h, labels, shift) if delta is None else delta
    delta_norm = torch.linalg.vector_norm(delta, dim=1)
    shift_norm = (s64 - centre64).norm(dim=1).float()  # [K]: ‖h_i − c‖ ≤ ‖δ_i‖ + ‖s_{y_i} − c‖
    m_norm = mc.norm(dim=1).max().float()
    rhs = [2.0 * mc]
    tables = [2.0 * (s64 - centre64) @ mc.T - (mc * mc).sum(1)[None, :]]
    w64 = weight.to(dev, _F64)
    b64 = torch.zeros(k, dtype=_F64, device=dev) if bias is None else bias.to(dev, _F64)
    if preds is None:
        rhs.append(w64)
        tables.append(s64 @ w64.T + b64)
    table = torch.cat(tables, dim=1).float()  # [K, K or 2K]
    scores = torch.mm(delta, torch.cat(rhs).float().T).add_(table.index_select(0, labels))
    ncm_score, logits = scores[:, :k], (scores[:, k:] if preds is None else None)
    ncm_bound = bound_scale * (2.0 * (delta_norm + shift_norm[labels]) * m_norm + m_norm * m_norm)

    def ncm_f64(idx: Tensor) -> Tensor:
        hc64 = h[idx].to(_F64) - centre64
        mc64 = torch.where(usable[:, None], means - centre64, zero)
        return 2.0 * hc64 @ mc64.T - (mc64 * mc64).sum(1)[None, :]

    if logits is not None:
        w_norm = w64.norm(dim=1).max().float()
        logit_bound = bound_scale * (delta_norm * w_norm + tables[1].abs().amax(1).float()[labels])

        def logits_f64(idx: Tensor) -> Tensor:
            return h[idx].to(_F64) @ w64.T + b64

    elif preds is not None and preds.ndim == 2:
        logits64 = preds.detach().to(dev, _F64)

    def mismatches(allowed: Tensor | None) -> Tensor:
        ncm = _checked_argmax(ncm_score, ncm_bound, ncm_f64, allowed)
        if logits is not None:
            net = _checked_argmax(logits, logit_bound, logits_f64, allowed)
        elif preds is not None and preds.ndim == 2:
            net = (logits64 if allowed is None else logits64.masked_fill(~allowed, float("-inf"))).argmax(1)
        else:
            assert preds is not None  # no logits were computed: the predictions were given
            net = preds.to(dev)
        return (ncm != net).to(_F64)

    mism = torch.zeros(1 + len(SHOT_GROUP_NAMES), dtype=_F64, device=dev)
    total = torch.zeros(1 + len(SHOT_GROUP_NAMES), dtype=_F64, device=dev)
    ok = usable[labels].to(_F64)
    all_usable = bool(usable.all())
    mism[0] = (mismatches(None if all_usable else usable[None, :].expand(h.shape[0], -1)) * ok).sum()
    total[0] = ok.sum()
    if class_group is not None:
        cg = class_group.to(dev)
        same = (cg[None, :] == cg[labels][:, None]) & usable[None, :]
        slot = cg[labels] + 1
        mism.index_add_(0, slot, mismatches(same) * ok)
        total.index_add_(0, slot, ok)
    return mism, total
