"""Streaming, DDP-exact neural-collapse metrics as a torchmetrics ``Metric`` (Papyan et al.; Zhu et al.).

The maths lives in :mod:`lt_lightning.metrics.functional`: the statistics and their merge algebra in
:mod:`~lt_lightning.metrics.functional.nc_state`, the definitions in
:mod:`~lt_lightning.metrics.functional.geometry`. This class holds float64 statistics and calls them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lt_lightning.compat import ExactMergeMetric, plot_metric_values
from lt_lightning.metrics.functional._inputs import (
    _GLOBAL_MEANS,
    _check_classifier,
    _neural_collapse_check_inputs,
)
from lt_lightning.metrics.functional.geometry import _neural_collapse_compute
from lt_lightning.metrics.functional.nc_state import (
    _neural_collapse_merge,
    _neural_collapse_nc4_update,
    _neural_collapse_shift_correction,
    _neural_collapse_update,
)
from lt_lightning.spec import (
    DEFAULT_FEW_THRESHOLD,
    DEFAULT_MANY_THRESHOLD,
    SHOT_GROUP_NAMES,
    resolve_shot_groups,
)

__all__ = ["NeuralCollapse"]

_EMPTY_CLASSES = ("error", "drop")


class NeuralCollapse(ExactMergeMetric):
    """NC1–NC4, bias collapse, equinorms and CDNV from streamed features (Papyan et al.; Zhu et al.).

    One pass of :meth:`update` accumulates, in float64, per-class counts ``[K]`` and sums ``[K, d]``,
    the within-class scatter ``[G, d, d]`` (per shot group, ``G = 1`` without groups) and per-class
    squared deviations ``[K]`` — ``O(K·d + G·d²)`` memory and ``O(B·d + G·B·d²)`` work per batch with no
    host sync. That is enough for every metric except ``nc4``, which compares each sample's nearest
    class mean with the network's prediction and so needs the final means first. ``nc4`` uses an exact
    **second pass**: call :meth:`freeze_class_means` after the first pass, then :meth:`update_nc4` over
    the same data; until then ``nc4`` is NaN.

    DDP: every sample must be fed exactly once across ranks (use unpadded shards, or pass ``mask`` to
    leave out the distributed sampler's padding). The scatter of one rank is about that rank's class
    means, so ranks cannot simply be summed; ``compute`` merges them exactly with two all-reduces
    (counts and sums first, then each rank's scatter re-centred on the global class means), and
    :meth:`freeze_class_means` uses one all-reduce — a fixed number of collectives, whatever the number
    of batches. ``dist_reduce_fx`` is declared ``"sum"`` for every state, but torchmetrics' per-state
    reduction is replaced (:class:`lt_lightning.compat.ExactMergeMetric`) by :meth:`sync_states`
    (ranks) and :meth:`merge_states` (``merge_state``), which re-centre the scatter first.

    The classifier enters at compute time through :meth:`set_classifier` (the classifier-dependent
    metrics are NaN without it). ``compute()`` is not cached (``compute_with_cache=False``): the
    classifier and the ``nc4`` pass change the result outside ``update``, so every call recomputes
    (and, under DDP, merges again).

    Args:
        num_classes: ``K``.
        feature_dim: ``d``.
        class_counts: training counts ``[K]``; gives the many/medium/few breakdown via
            :func:`lt_lightning.spec.shot_groups` ``(class_counts, many_threshold, few_threshold)``.
        shot_groups: ``[K]`` group ids (0 many, 1 medium, 2 few) instead of ``class_counts`` (either
            one goes through :func:`lt_lightning.spec.resolve_shot_groups`).
        many_threshold, few_threshold: thresholds for ``class_counts``.
        empty_classes: ``"error"`` (default): ``compute`` raises naming classes without samples;
            ``"drop"``: metrics use the classes that have samples.
        rtol: pseudo-inverse cutoff for ``Σ_B`` (see :func:`~lt_lightning.metrics.functional.neural_collapse`).
        global_mean: ``"sample"`` (default) or ``"class"``.
        validate_args: also check label values (costs a host sync per batch).
        product_dtype: ``torch.float64`` (default; exact, e.g. DDP equals one process to 1e-10) or
            ``torch.float32`` for the per-batch ``B×d×d`` scatter product: float32-GEMM speed, ~1e-7
            relative error, still accumulated in float64.
        kwargs: passed to ``torchmetrics.Metric`` (``dist_sync_fn`` is not supported: the merge needs
            its own collectives; ``compute_with_cache`` is always False).

    Example:
        >>> metric = NeuralCollapse(num_classes=3, feature_dim=3)
        >>> means = torch.eye(3) - 1 / 3
        >>> labels = torch.arange(3).repeat(5)
        >>> metric.update(means[labels], labels)
        >>> _ = metric.freeze_class_means()
        >>> metric.update_nc4(means[labels], labels, labels)
        >>> metric.set_classifier(means)
        >>> res = metric.compute()
        >>> [round(float(res[k]), 6) for k in ("nc1", "nc3", "nc4")]
        [0.0, 0.0, 0.0]
        >>> fig, ax = metric.plot()  # torchmetrics' plot of NC1-NC4
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    counts: Tensor
    sums: Tensor
    scatter: Tensor
    sq_dev: Tensor
    nc4_mismatch: Tensor
    nc4_total: Tensor
    class_group: Tensor | None
    _frozen_means: Tensor | None

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        *,
        class_counts: Sequence[int] | Tensor | None = None,
        shot_groups: Sequence[int] | Tensor | None = None,
        many_threshold: int = DEFAULT_MANY_THRESHOLD,
        few_threshold: int = DEFAULT_FEW_THRESHOLD,
        empty_classes: str = "error",
        rtol: float | None = None,
        global_mean: str = "sample",
        validate_args: bool = False,
        product_dtype: torch.dtype = torch.float64,
        **kwargs: Any,
    ) -> None:
        if product_dtype not in (torch.float64, torch.float32):
            raise ValueError(f"product_dtype must be torch.float64 or torch.float32, got {product_dtype}")
        if kwargs.pop("compute_with_cache", False):
            raise ValueError(
                "NeuralCollapse does not cache compute(): set_classifier, freeze_class_means and "
                "update_nc4 change its result outside update(); leave compute_with_cache unset"
            )
        super().__init__(compute_with_cache=False, **kwargs)
        for name, value in (("num_classes", num_classes), ("feature_dim", feature_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_classes < 2:
            raise ValueError(f"neural-collapse metrics need num_classes >= 2, got {num_classes}")
        if empty_classes not in _EMPTY_CLASSES:
            raise ValueError(f"empty_classes must be one of {_EMPTY_CLASSES}, got {empty_classes!r}")
        if global_mean not in _GLOBAL_MEANS:
            raise ValueError(f"global_mean must be one of {_GLOBAL_MEANS}, got {global_mean!r}")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.empty_classes = empty_classes
        self.rtol = rtol
        self.global_mean = global_mean
        self.validate_args = validate_args
        self.product_dtype = product_dtype
        groups = resolve_shot_groups(num_classes, class_counts, shot_groups, many_threshold, few_threshold)
        self.num_groups = 1 if groups is None else len(SHOT_GROUP_NAMES)
        # Non-persistent buffers follow .to(device) but stay out of checkpoints.
        self.register_buffer("class_group", groups, persistent=False)
        self.register_buffer("_frozen_means", None, persistent=False)
        f64 = torch.float64
        self.add_state("counts", torch.zeros(num_classes, dtype=f64), dist_reduce_fx="sum")
        self.add_state("sums", torch.zeros(num_classes, feature_dim, dtype=f64), dist_reduce_fx="sum")
        self.add_state(
            "scatter", torch.zeros(self.num_groups, feature_dim, feature_dim, dtype=f64), dist_reduce_fx="sum"
        )
        self.add_state("sq_dev", torch.zeros(num_classes, dtype=f64), dist_reduce_fx="sum")
        self.add_state(
            "nc4_mismatch", torch.zeros(1 + len(SHOT_GROUP_NAMES), dtype=f64), dist_reduce_fx="sum"
        )
        self.add_state("nc4_total", torch.zeros(1 + len(SHOT_GROUP_NAMES), dtype=f64), dist_reduce_fx="sum")
        self._weight: Tensor | None = None
        self._bias: Tensor | None = None

    # ---------------------------------------------------------------------------------------- passes
    def update(self, features: Tensor, labels: Tensor, mask: Tensor | None = None) -> None:
        """First pass: accumulate the statistics of a batch.

        Args:
            features: ``[B, d]`` features; labels: ``[B]`` class indices.
            mask: optional ``[B]`` bool, False for samples to leave out (e.g. DDP padding).
        """
        _neural_collapse_check_inputs(
            features, labels, self.num_classes, self.feature_dim, self.validate_args
        )
        _neural_collapse_update(
            features,
            labels,
            self.counts,
            self.sums,
            self.scatter,
            self.sq_dev,
            class_group=self.class_group,
            sample_weight=mask,
            product_dtype=self.product_dtype,
        )

    def freeze_class_means(self, return_counts: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Fix the global class means for the ``nc4`` pass and return them ``[K, d]`` (NaN rows: empty).

        Collective under DDP (one all-reduce): call it on every rank, after the first pass. With
        ``return_counts`` also returns the global per-class sample counts ``[K]``.
        """
        counts, sums = self.counts, self.sums
        if self.sync_on_compute and self.distributed_available():
            flat = torch.cat([counts, sums.flatten()])
            torch.distributed.all_reduce(flat, group=self.process_group)
            counts, sums = flat[: self.num_classes], flat[self.num_classes :].view_as(sums)
        means = sums / counts[:, None]  # 0/0 -> NaN marks empty classes
        self._frozen_means = means
        self.nc4_mismatch.zero_()
        self.nc4_total.zero_()
        return (means.clone(), counts.clone()) if return_counts else means.clone()

    def update_nc4(self, features: Tensor, labels: Tensor, preds: Tensor, mask: Tensor | None = None) -> None:
        """Second pass: count nearest-class-mean vs network mismatches against the frozen means.

        Args:
            features: ``[B, d]``; labels: ``[B]`` (they pick the sample's shot group).
            preds: ``[B]`` predicted classes or ``[B, K]`` logits (logits let the per-group count
                restrict the network's prediction to the group's classes, like the functional).
            mask: optional ``[B]`` bool, False for samples to leave out.
        """
        if self._frozen_means is None:
            raise RuntimeError("call freeze_class_means() after the first pass and before update_nc4()")
        _neural_collapse_check_inputs(
            features, labels, self.num_classes, self.feature_dim, self.validate_args
        )
        if not isinstance(preds, Tensor) or preds.shape not in (
            labels.shape,
            (labels.shape[0], self.num_classes),
        ):
            raise ValueError(
                f"preds must be [B] class indices or [B, {self.num_classes}] logits, got "
                f"{getattr(preds, 'shape', type(preds))}"
            )
        usable = ~torch.isnan(self._frozen_means[:, 0])
        mism, total = _neural_collapse_nc4_update(
            features, labels, preds, self._frozen_means, usable, self.class_group, mask
        )
        self.nc4_mismatch += mism
        self.nc4_total += total

    def set_classifier(self, weight: Tensor, bias: Tensor | None = None) -> None:
        """The linear classifier ``weight [K, d]``, ``bias [K]`` that NC2, NC3 and bias collapse use.

        Under DDP it must be the same on every rank (it is, for a DDP-trained model).
        """
        _check_classifier(weight, bias, self.num_classes, self.feature_dim)
        self._weight = weight.detach().to(torch.float64).clone()
        self._bias = None if bias is None else bias.detach().to(torch.float64).clone()

    def compute(self) -> dict[str, Tensor]:
        """All metrics as 0-d float64 tensors on the metric's device (the keys of the one-shot function).

        ``nc1`` … ``cdnv`` and, with shot groups, ``"nc1/many"`` etc. and the minority-collapse keys
        (:data:`~lt_lightning.metrics.functional.MINORITY_COLLAPSE_KEYS`). Under DDP the ranks'
        statistics are merged first (two all-reduces, :meth:`sync_states`).

        Raises:
            ValueError: a class without samples (``empty_classes="error"``) or non-finite statistics.

        Warns:
            UndefinedMetricWarning: an overall metric is NaN for these statistics.
        """
        classes = None
        if self.empty_classes == "drop":
            classes = self.counts > 0
        return _neural_collapse_compute(
            self.counts,
            self.sums,
            self.scatter,
            self.sq_dev,
            weight=self._weight,
            bias=self._bias,
            classes=classes,
            class_group=self.class_group,
            nc4_mismatch=self.nc4_mismatch if self._frozen_means is not None else None,
            nc4_total=self.nc4_total if self._frozen_means is not None else None,
            rtol=self.rtol,
            global_mean=self.global_mean,
        )

    def plot(self, val: dict[str, Tensor] | Sequence[dict[str, Tensor]] | None = None, ax: Any = None) -> Any:
        """torchmetrics' plot of NC1–NC4 (one value, or a sequence of them, e.g. per epoch).

        The geometry figures (class-mean Gram against the ETF, norms against class size) are
        :mod:`lt_lightning.callbacks.plots`, drawn by :class:`~lt_lightning.callbacks.NeuralCollapseCallback`.

        Returns:
            ``(figure, axes)`` of matplotlib.
        """
        val = val if val is not None else self.compute()
        pick = lambda v: {k: v[k].float() for k in ("nc1", "nc2", "nc3", "nc4") if k in v}  # noqa: E731
        val = pick(val) if isinstance(val, dict) else [pick(v) for v in val]
        return plot_metric_values(self, val, ax)

    def reset(self) -> None:
        """Clear the statistics and the frozen means (the classifier is kept)."""
        super().reset()
        self._frozen_means = None

    # ---------------------------------------------------------------------------------- exact merges
    def sync_states(self, process_group: Any | None) -> None:
        """Exact cross-rank merge with two all-reduces (Chan et al.'s parallel algorithm, many parts).

        First the counts ``[K]``, sums ``[K, d]`` and nc4 counters; then each rank's scatter
        ``[G, d, d]`` and sq_dev ``[K]``, re-centred on the global class means
        (:func:`~lt_lightning.metrics.functional.nc_state._neural_collapse_shift_correction`), are summed.
        Collective: torchmetrics calls it on every rank from ``compute()``.
        """
        k, d = self.sums.shape
        g1 = self.nc4_mismatch.numel()
        flat = torch.cat([self.counts, self.sums.flatten(), self.nc4_mismatch, self.nc4_total])
        torch.distributed.all_reduce(flat, group=process_group)
        counts = flat[:k]
        sums = flat[k : k + k * d].view(k, d)
        global_means = sums / counts.clamp_min(1.0)[:, None]
        corr_s, corr_q = _neural_collapse_shift_correction(
            self.counts, self.sums, global_means, self.class_group, self.num_groups
        )
        flat2 = torch.cat([(self.scatter + corr_s).flatten(), self.sq_dev + corr_q])
        torch.distributed.all_reduce(flat2, group=process_group)
        self.counts, self.sums = counts, sums
        self.nc4_mismatch = flat[k + k * d : k + k * d + g1]
        self.nc4_total = flat[k + k * d + g1 :]
        self.scatter = flat2[: self.scatter.numel()].view_as(self.scatter)
        self.sq_dev = flat2[self.scatter.numel() :]

    def merge_states(self, incoming_state: dict[str, Tensor]) -> None:
        """Exact merge of another copy's statistics (``merge_state``; Chan et al.'s pairwise merge)."""
        parts = [
            {key: incoming_state[key] for key in ("counts", "sums", "scatter", "sq_dev")},
            {key: getattr(self, key) for key in ("counts", "sums", "scatter", "sq_dev")},
        ]
        merged = _neural_collapse_merge(parts, self.class_group)
        for key, value in merged.items():
            setattr(self, key, value)
        self.nc4_mismatch = incoming_state["nc4_mismatch"] + self.nc4_mismatch
        self.nc4_total = incoming_state["nc4_total"] + self.nc4_total

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported: neural collapse has no meaningful per-batch value; call :meth:`update`."""
        raise TypeError(
            "NeuralCollapse has no per-batch value; call update() and compute() instead of forward"
        )
