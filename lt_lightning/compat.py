"""The package's one compatibility module: every use of a private attribute of an upstream library.

Each section names the private attributes it touches, the upstream behaviour (and issue) that makes
them necessary, and checks at import that the installed version still has them, so that an upgrade
fails here with a message naming the version instead of silently merging metric states wrongly.
This module imports nothing of ``lt_lightning`` (every layer may import it).
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torchmetrics
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "ExactMergeMetric",
    "TorchmetricsCompatError",
    "batches_trained_this_epoch",
    "check_torchmetrics",
    "plot_metric_values",
]


# ==================================================================================================
# torchmetrics
# ==================================================================================================
# Private attributes touched: ``Metric._sync_dist``, ``Metric._reduce_states`` (overridden by
# ExactMergeMetric) and ``Metric._plot`` (called by plot_metric_values). Nothing else in lt_lightning
# touches a private attribute of torchmetrics: compute caching is switched off with the public
# ``compute_with_cache=False`` and manual syncs use the public ``Metric.sync_context``.
#
# Why: torchmetrics reduces every state on its own with its ``dist_reduce_fx`` (``Metric._sync_dist``
# all-gathers each state and applies its reduction; ``Metric._reduce_states``, behind ``merge_state``
# and ``forward``, does the same for two copies). Statistics whose merge depends on other states —
# a scatter about per-part means must be re-centred on the merged means before it can be summed
# (Chan et al.'s parallel variance algorithm) — have no per-state reduction. torchmetrics' own
# PearsonCorrCoef has the same problem and works around it with ``dist_reduce_fx=None`` (all-gather
# every rank's states) and a merge in ``compute`` (Lightning-AI/torchmetrics#998 "Fix pearson
# aggregation", #2893 "Pearson `_final_aggregation` modifies states in place"); for a ``[G, d, d]``
# scatter that costs world-size copies of it on every rank. ``merge_state`` (#2786, closing #2643)
# validates its argument and dispatches to ``_reduce_states``, which ``forward`` also uses to fold a
# batch into the accumulated state, so overriding the public ``merge_state`` alone (what its
# docstring suggests for states that do not merge "in a simple way") would leave ``forward``
# per-state. No public hook exists for the cross-rank sync either (#67 / #302 made ``sync`` and
# ``sync_context`` public but left ``_sync_dist`` as the per-state implementation). So
# ExactMergeMetric overrides the two private methods and hands them to public hooks of its own.
#
# ``Metric._plot`` is the protected helper every torchmetrics metric's ``plot()`` calls (plotting came
# with Lightning-AI/torchmetrics#1328; #1807 documents ``plot`` for custom metrics); ``Metric`` has no
# public equivalent, so our Metrics reach it through plot_metric_values.

#: The overridden methods and the parameters (after ``self``) torchmetrics calls them with.
_TM_OVERRIDES: dict[str, tuple[str, ...]] = {
    "_sync_dist": ("dist_sync_fn", "process_group"),
    "_reduce_states": ("incoming_state",),
    "_plot": ("val", "ax"),
}
#: Public methods that must still reach the overridden ones: ``caller -> private method it calls``.
_TM_CALLERS: dict[str, str] = {"sync": "_sync_dist", "merge_state": "_reduce_states"}


class TorchmetricsCompatError(ImportError):
    """The installed torchmetrics no longer has a private attribute lt_lightning relies on."""


def check_torchmetrics(metric_cls: type = Metric, version: str = torchmetrics.__version__) -> None:
    """Check that ``metric_cls`` still has what :class:`ExactMergeMetric` overrides (run at import).

    Checks each overridden method's existence and parameters, and that the public ``sync`` and
    ``merge_state`` still call them (their bytecode names them).

    Args:
        metric_cls: the class to check (torchmetrics' ``Metric``; a stand-in in tests).
        version: the version named in the error.

    Raises:
        TorchmetricsCompatError: naming the version and the missing or changed attribute.
    """
    hint = (
        "lt_lightning.compat is tested with torchmetrics 1.9.0: install a version that has it, or update it"
    )
    for name, params in _TM_OVERRIDES.items():
        fn = inspect.getattr_static(metric_cls, name, None)
        if not callable(fn):
            raise TorchmetricsCompatError(
                f"torchmetrics {version}: Metric.{name} no longer exists, and lt_lightning overrides or calls "
                f"it; {hint}"
            )
        got = tuple(inspect.signature(fn).parameters)[1:]
        if got[: len(params)] != params:
            raise TorchmetricsCompatError(
                f"torchmetrics {version}: Metric.{name} takes {got}, lt_lightning expects {params}; {hint}"
            )
    for caller, callee in _TM_CALLERS.items():
        code = getattr(inspect.getattr_static(metric_cls, caller, None), "__code__", None)
        if code is None or callee not in code.co_names:
            raise TorchmetricsCompatError(
                f"torchmetrics {version}: Metric.{caller} no longer calls Metric.{callee}, which "
                f"lt_lightning overrides to merge states exactly; {hint}"
            )


check_torchmetrics()


class ExactMergeMetric(Metric):
    """A torchmetrics ``Metric`` whose states are merged as a whole by the subclass, not one by one.

    Subclasses declare their states with ``add_state`` as usual (``dist_reduce_fx`` is then unused)
    and implement two public hooks:

    - :meth:`sync_states` — replace the local states by their merge over all ranks of
      ``process_group``, with collectives of the subclass's choice. torchmetrics calls it from
      ``sync()`` (so from ``compute()``), after caching the local states, and restores them after
      ``compute`` (``sync_context``), exactly as for any Metric.
    - :meth:`merge_states` — merge another copy's states (``incoming_state``: name -> tensor) into
      this one; ``merge_state(other)`` and ``forward`` call it.

    ``dist_sync_fn`` is refused: the merge runs its own collectives. Everything else (``reset``,
    ``state_dict``, ``sync_on_compute``, ``process_group``) is torchmetrics' own.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("dist_sync_fn") is not None:
            raise ValueError(
                f"{type(self).__name__} merges ranks with its own all-reduces; dist_sync_fn is not supported"
            )
        super().__init__(**kwargs)

    @abstractmethod
    def sync_states(self, process_group: Any | None) -> None:
        """Replace the local states by their exact merge over the ranks of ``process_group`` (collective)."""

    @abstractmethod
    def merge_states(self, incoming_state: dict[str, Tensor]) -> None:
        """Merge the states of another copy (``name -> tensor``, as ``metric_state``) into this one."""

    def distributed_available(self) -> bool:
        """Whether states would be synced now (the Metric's public ``distributed_available_fn``)."""
        fn = self.distributed_available_fn
        return bool(fn()) if callable(fn) else False

    # The two private overrides: the only place torchmetrics' per-state merge is replaced.
    def _sync_dist(self, dist_sync_fn: Callable | None = None, process_group: Any | None = None) -> None:
        self.sync_states(process_group or self.process_group)

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        self.merge_states(incoming_state)


def plot_metric_values(metric: Metric, val: Any = None, ax: Any = None) -> Any:
    """torchmetrics' own plot of a Metric's values: its protected ``Metric._plot`` (no public equivalent).

    Args:
        metric: the Metric (its ``higher_is_better`` and class name label the plot).
        val: a ``compute()`` result or a sequence of them; None computes one.
        ax: matplotlib axes to draw into, or None.

    Returns:
        ``(figure, axes)`` of matplotlib.
    """
    return metric._plot(val, ax)


# ==================================================================================================
# Lightning
# ==================================================================================================
# Private attributes touched: the fit loop's progress counter (``fit_loop.epoch_loop.batch_progress``).


def batches_trained_this_epoch(trainer: Any) -> int:
    """Training batches of the current epoch already trained, for an exact mid-epoch resume; 0 once the
    epoch's batches are all trained (a resumed run then starts the next epoch afresh).

    Reads Lightning's loop progress ``trainer.fit_loop.epoch_loop.batch_progress.current.processed``
    (incremented after ``training_step`` and before ``on_train_batch_end``, so a checkpoint written in
    that hook or in a mid-epoch validation counts the batch just trained) and compares it with
    ``trainer.num_training_batches``. Lightning has no public accessor for the position within the
    epoch; the loaders' ``state_dict`` (Lightning's ``_Stateful`` protocol) is where it must go.
    Checked on lightning 2.6.6.
    """
    try:
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
    except AttributeError as err:  # the loop's progress moved: a mid-epoch resume would be silently wrong
        import lightning

        raise RuntimeError(
            f"lightning {lightning.__version__}: fit_loop.epoch_loop.batch_progress.current.processed no longer "
            "exists; lt_lightning.compat reads it to save the position within an epoch (checked on lightning "
            "2.6.6): install lightning 2.6, or update lt_lightning/compat.py"
        ) from err
    return 0 if done >= trainer.num_training_batches else done
