"""Neural-collapse geometry figures (matplotlib, no pyplot state; each function returns a ``Figure``).

Figures are built with ``matplotlib.figure.Figure`` and rendered with the Agg canvas, so they work
without a display and never touch pyplot's global figure list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "accuracy_vs_class_size_figure",
    "classifier_mean_cosine_figure",
    "figure_to_array",
    "gram_vs_etf_figure",
    "gram_vs_seli_figure",
    "minority_collapse_figure",
    "nc1_vs_depth_figure",
    "norms_vs_class_size_figure",
    "reliability_figure",
]


def _np(x: Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
    return an @ bn.T


def gram_vs_etf_figure(centred_means: Tensor | np.ndarray, title: str = "") -> Figure:
    """Cosine Gram of the centred class means ``[K, d]`` next to the simplex ETF's (1 / −1/(K−1)).

    Args:
        centred_means: rows ``μ_c − μ_G`` (class-major ``[K, d]``).
        title: figure title prefix.
    """
    h = _np(centred_means)
    k = h.shape[0]
    etf = np.full((k, k), -1.0 / max(k - 1, 1))
    np.fill_diagonal(etf, 1.0)
    fig = Figure(figsize=(9, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, mat, name in ((axes[0], _cosine(h, h), "class means"), (axes[1], etf, "simplex ETF")):
        im = ax.imshow(mat, vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
        ax.set_title(f"cosine Gram: {name}")
        ax.set_xlabel("class")
        ax.set_ylabel("class")
    fig.colorbar(im, ax=axes, shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def classifier_mean_cosine_figure(
    weight: Tensor | np.ndarray, centred_means: Tensor | np.ndarray, title: str = ""
) -> Figure:
    """Heatmap of ``cos(w_c, μ_c' − μ_G)``: a diagonal of 1 is self-duality (NC3).

    Args:
        weight: classifier ``[K, d]``; centred_means: ``[K, d]``.
    """
    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(
        _cosine(_np(weight), _np(centred_means)), vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest"
    )
    ax.set_xlabel("class of mean μ_c' − μ_G")
    ax.set_ylabel("classifier row w_c")
    ax.set_title(f"{title} classifier vs class-mean cosine".strip())
    fig.colorbar(im, ax=ax)
    return fig


def norms_vs_class_size_figure(
    weight_norms: Tensor | np.ndarray,
    mean_norms: Tensor | np.ndarray,
    class_counts: Sequence[int] | Tensor | np.ndarray,
    title: str = "",
) -> Figure:
    """``‖w_c‖`` and ``‖μ_c − μ_G‖`` against the training count of each class (log x-axis)."""
    counts = _np(class_counts)
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, values, name in ((axes[0], weight_norms, "‖w_c‖"), (axes[1], mean_norms, "‖μ_c − μ_G‖")):
        ax.scatter(counts, _np(values), s=12)
        ax.set_xscale("log")
        ax.set_xlabel("training samples in class")
        ax.set_ylabel(name)
    if title:
        fig.suptitle(f"{title} norms vs class size")
    return fig


def accuracy_vs_class_size_figure(
    per_class_accuracy: Tensor | np.ndarray,
    class_counts: Sequence[int] | Tensor | np.ndarray,
    title: str = "",
) -> Figure:
    """Per-class accuracy against training count (classes absent from the evaluation set are skipped)."""
    acc = _np(per_class_accuracy)
    counts = _np(class_counts)
    ok = ~np.isnan(acc)
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(counts[ok], acc[ok], s=12)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training samples in class")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} per-class accuracy vs class size".strip())
    return fig


_GROUP_COLOURS = ("tab:blue", "tab:orange", "tab:red")
_GROUP_LABELS = ("many", "medium", "few")


def minority_collapse_figure(
    weight: Tensor | np.ndarray,
    centred_means: Tensor | np.ndarray,
    shot_groups: Sequence[int] | Tensor | np.ndarray,
    title: str = "",
) -> Figure:
    """Minority collapse at a glance (Fang et al. PNAS 2021): cosines of the classifier rows and of the
    centred class means, classes ordered many → medium → few with the group borders drawn, and the row
    norms relative to their mean, coloured by shot group.

    Collapsed few-shot classifiers show as a bright (cosine near 1) block in the bottom-right corner of
    the first panel and small norms in the last one.

    Args:
        weight: classifier ``[K, d]``; centred_means: ``μ_c − μ_G`` ``[K, d]``.
        shot_groups: ``[K]`` ids 0 (many), 1 (medium), 2 (few).
    """
    groups = _np(shot_groups).astype(int)
    order = np.argsort(groups, kind="stable")
    w, h, g = _np(weight)[order], _np(centred_means)[order], groups[order]
    borders = np.flatnonzero(np.diff(g)) + 0.5
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, rows, name in ((axes[0], w, "classifier rows w_c"), (axes[1], h, "centred means μ_c − μ_G")):
        im = ax.imshow(_cosine(rows, rows), vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
        for b in borders:
            ax.axhline(b, color="k", lw=0.8)
            ax.axvline(b, color="k", lw=0.8)
        ax.set_title(f"cosine: {name}")
        ax.set_xlabel("class (many → few)")
        ax.set_ylabel("class (many → few)")
    fig.colorbar(im, ax=axes[:2], shrink=0.8)
    ax = axes[2]
    idx = np.arange(len(g))
    for values, marker, name in ((w, "o", "‖w_c‖"), (h, "x", "‖μ_c − μ_G‖")):
        norms = np.linalg.norm(values, axis=1)
        rel = norms / max(norms.mean(), 1e-300)
        for gid in np.unique(g):
            sel = g == gid
            ax.scatter(
                idx[sel],
                rel[sel],
                marker=marker,
                s=16,
                color=_GROUP_COLOURS[gid % 3],
                label=f"{name} {_GROUP_LABELS[gid % 3]}",
            )
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_xlabel("class (many → few)")
    ax.set_ylabel("norm / mean norm")
    ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{title} minority collapse".strip())
    return fig


def gram_vs_seli_figure(
    weight: Tensor | np.ndarray, means: Tensor | np.ndarray, counts: Tensor | np.ndarray, title: str = ""
) -> Figure:
    """The centred Grams ``CW(CW)ᵀ`` and ``CM(CM)ᵀ`` beside their SELI targets ``S`` and ``S⁺`` and the
    ETF ``C`` (Thrampoulidis et al. 2022; each divided by its Frobenius norm).

    Args:
        weight: classifier ``[K, d]``; means: class means ``[K, d]``; counts: ``[K]`` class sizes (> 0).
    """
    from lt_lightning.metrics.functional.seli import seli_targets

    w, m, n = _np(weight), _np(means), _np(counts)
    k = w.shape[0]
    c = np.eye(k) - 1.0 / k
    targets = {key: t.numpy() for key, t in seli_targets(torch.from_numpy(n)).items()}
    unit = lambda a: a / max(np.linalg.norm(a), 1e-300)  # noqa: E731
    rows = [
        ("classifier CW(CW)ᵀ", unit(c @ w @ w.T @ c), "SELI S", unit(targets["w"])),
        ("class means CM(CM)ᵀ", unit(c @ m @ m.T @ c), "SELI S⁺", unit(targets["h"])),
    ]
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 3)
    etf = unit(c)
    for r, (name, measured, target_name, target) in enumerate(rows):
        scale = max(np.abs(measured).max(), np.abs(target).max(), np.abs(etf).max())
        for ax, mat, label in zip(
            axes[r], (measured, target, etf), (name, target_name, "ETF C"), strict=True
        ):
            im = ax.imshow(mat, vmin=-scale, vmax=scale, cmap="RdBu_r", interpolation="nearest")
            ax.set_title(label)
            ax.set_xlabel("class")
            ax.set_ylabel("class")
        fig.colorbar(im, ax=axes[r], shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def nc1_vs_depth_figure(names: Sequence[str], nc1: Sequence[float], title: str = "") -> Figure:
    """NC1 of each measured layer, in the order given (shallow to deep), on a log scale."""
    fig = Figure(figsize=(max(4.0, 1.2 * len(names)), 3.5), layout="constrained")
    ax = fig.subplots()
    values = _np(list(nc1))
    ax.plot(range(len(names)), values, "o-")
    if np.all(values[np.isfinite(values)] > 0) and np.isfinite(values).any():
        ax.set_yscale("log")
    ax.set_xticks(range(len(names)), list(names), rotation=30, ha="right")
    ax.set_ylabel("NC1 (tr(Σ_W Σ_B⁺)/K)")
    ax.set_title(f"{title}: NC1 against depth" if title else "NC1 against depth")
    return fig


def reliability_figure(reliability: dict[str, Tensor], title: str = "") -> Figure:
    """Reliability diagrams (accuracy against mean confidence per bin) overall and per shot group, from
    :meth:`lt_lightning.metrics.ShotCalibration.reliability`."""
    count, acc, conf = (_np(reliability[k]) for k in ("count", "accuracy", "confidence"))
    names = ["all", "many", "medium", "few"][: count.shape[0]]
    fig = Figure(figsize=(3.2 * len(names), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True))
    bins = count.shape[1] - 1
    centres = (np.arange(bins + 1) + 0.5) / bins
    for ax, name, n, a, p in zip(axes, names, count, acc, conf, strict=True):
        full = n > 0
        ax.bar(centres[full], a[full], width=1.0 / bins, edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot(p[full], a[full], "r.", label="(confidence, accuracy)")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ece = np.abs(n[full] * (a[full] - p[full])).sum() / max(n.sum(), 1)
        ax.set_title(f"{name}: ECE {ece:.3f}")
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure with Agg and return ``[H, W, 3]`` uint8 RGB (what image loggers accept)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
