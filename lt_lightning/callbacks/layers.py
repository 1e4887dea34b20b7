"""Layer-wise collapse (Papyan et al. 2020, per layer; He & Su 2022): NC1 of named layers' outputs, measured
by forward hooks on the neural-collapse callback's own un-augmented pass (no second pass).

Each layer's output is reduced to ``[N, C]`` (a conv map ``[N, C, H, W]`` average-pooled over space, or
flattened with ``flatten=True``) and streamed into a :class:`~lt_lightning.metrics.NeuralCollapse` without
shot groups: per layer ``counts [K]``, ``sums [K, C]`` and one ``[C, C]`` within-class scatter, all
float64, merged exactly across ranks (Chan et al.). Memory is ``O(K·C + C²)`` per layer: at C = 2048
the scatter is 32 MiB (float64), and each batch costs one ``[B, C]ᵀ[B, C]`` product; a flattened conv map
has ``C = channels·H·W`` and the ``[C, C]`` scatter grows with it, so flatten only small maps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from lt_lightning.metrics.functional.geometry import _neural_collapse_geometry
from lt_lightning.metrics.functional.nc_state import _neural_collapse_global_mean
from lt_lightning.metrics.neural_collapse import NeuralCollapse

__all__ = ["LAYER_KEYS", "LayerCollapse", "check_layer_names"]

#: what is logged per layer: ``nc/{split}/{key}/layer/{name}``
LAYER_KEYS = ("nc1", "tr_sw", "tr_sb")


def check_layer_names(layers: Sequence[str] | str | None) -> tuple[str, ...]:
    """The layer names as a tuple (module paths such as ``"backbone.layer2"``).

    Raises:
        ValueError: not a sequence of distinct non-empty strings.
    """
    if layers is None:
        return ()
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"layers must be distinct module names such as 'backbone.layer2', got {layers!r}")
    return names


def _as_rows(name: str, output: object, flatten: bool) -> Tensor:
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        output = output[0]
    if not isinstance(output, Tensor) or output.ndim < 2:
        raise TypeError(
            f"layer {name!r} must output a tensor [N, C, ...] for layer-wise NC1, got {type(output).__name__}"
        )
    if output.ndim == 2:
        return output
    if output.ndim == 4 and not flatten:
        return output.mean(dim=(2, 3))  # global average pool: [N, C]
    return output.flatten(1)


class LayerCollapse:
    """NC1 and the within/between-class traces of named submodules' outputs, collected by forward hooks.

    Use :meth:`hooked` around the pass and call :meth:`update` with each batch's labels after its forward.

    Args:
        module: the module whose submodules are named (the LightningModule).
        names: module paths, e.g. ``["backbone.layer1", "backbone.layer2"]``.
        num_classes: ``K``.
        flatten: flatten conv maps instead of average-pooling them.
        rtol, global_mean: as :class:`~lt_lightning.metrics.NeuralCollapse`.

    Raises:
        ValueError: a name that is not a submodule (some valid names are listed).
    """

    def __init__(
        self,
        module: nn.Module,
        names: Sequence[str],
        num_classes: int,
        flatten: bool = False,
        rtol: float | None = None,
        global_mean: str = "sample",
    ) -> None:
        found = dict(module.named_modules())
        missing = [n for n in names if n not in found]
        if missing:
            some = ", ".join(n for n in list(found)[1:12] if n)
            raise ValueError(
                f"layers {missing} are not submodules of {type(module).__name__}; some are: {some}"
            )
        self.modules = {n: found[n] for n in names}
        self.num_classes, self.flatten, self.rtol, self.global_mean = num_classes, flatten, rtol, global_mean
        self.metrics: dict[str, NeuralCollapse] = {}
        self._outputs: dict[str, Tensor] = {}

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        """Forward hooks on every named layer, removed on exit."""

        def hook(name: str):
            def keep(_module: nn.Module, _inputs: object, output: object) -> None:
                self._outputs[name] = _as_rows(name, output, self.flatten).detach()

            return keep

        handles = [m.register_forward_hook(hook(n)) for n, m in self.modules.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self._outputs.clear()

    def update(self, labels: Tensor) -> None:
        """Add the batch the hooks just saw (``labels`` ``[B]``)."""
        for name in self.modules:
            rows = self._outputs.pop(name, None)
            if rows is None:
                raise RuntimeError(f"layer {name!r} did not run in the forward pass of this batch")
            metric = self.metrics.get(name)
            if metric is None:
                metric = NeuralCollapse(
                    self.num_classes, int(rows.shape[1]), empty_classes="drop", rtol=self.rtol,
                    global_mean=self.global_mean,
                ).to(rows.device)  # fmt: skip
                self.metrics[name] = metric
            metric.update(rows, labels)

    def compute(self) -> dict[str, Tensor]:
        """``{f"{key}/layer/{name}": 0-d float64}`` for ``key`` in :data:`LAYER_KEYS`, merged over ranks
        (collective under DDP: call on every rank)."""
        out: dict[str, Tensor] = {}
        for name, metric in self.metrics.items():
            with metric.sync_context(dist_sync_fn=metric.dist_sync_fn, should_sync=metric.sync_on_compute):
                out.update({f"{k}/layer/{name}": v for k, v in self._geometry(metric).items()})
        return out

    def _geometry(self, metric: NeuralCollapse) -> dict[str, Tensor]:
        idx = torch.nonzero(metric.counts > 0).flatten()
        counts, sums = metric.counts[idx], metric.sums[idx]
        scatter = metric.scatter.sum(0)
        scatter = 0.5 * (scatter + scatter.T)
        if idx.numel() < 2:
            nan = torch.full((), float("nan"), dtype=torch.float64, device=counts.device)
            return dict.fromkeys(LAYER_KEYS, nan)
        nc = _neural_collapse_geometry(
            counts, sums, scatter, metric.sq_dev[idx], None, None, self.rtol, self.global_mean
        )
        means = sums / counts[:, None]
        hbar = means - _neural_collapse_global_mean(counts, sums, self.global_mean)
        return {
            "nc1": nc["nc1"],
            "tr_sw": torch.diagonal(scatter).sum() / counts.sum(),
            "tr_sb": (hbar * hbar).sum() / idx.numel(),
        }
