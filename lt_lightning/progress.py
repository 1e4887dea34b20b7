"""Progress output: the training bar, a plain line per epoch off a terminal, the library's own loops.

- :func:`progress_bar_callback`: on a terminal, Lightning's tqdm bar with the training loss and accuracy
  and the validation accuracy (:class:`MetricsProgressBar`); when stdout is not a terminal (a log file, a
  SLURM job), :class:`EpochLines`: one line per epoch, nothing per batch (``LT_LIGHTNING_PROGRESS=bar`` or
  ``=lines`` chooses).
- :func:`progress`: a tqdm bar for the library's own long loops (NC pass, NCM fitting, τ selection),
  which run inside hooks, outside Lightning's loops; shown when the trainer shows its bar, on rank 0 and
  on a terminal.
- :func:`quiet_third_party`: drops other packages' tips and deprecation chatter that say nothing about
  the run (our own warnings are left alone).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from tqdm.auto import tqdm

__all__ = [
    "BAR_METRICS",
    "EpochLines",
    "MetricsProgressBar",
    "interactive",
    "needs_progress_bar",
    "progress",
    "progress_bar_callback",
    "quiet_third_party",
    "trainer_shows_progress",
]

#: (metric, short name) shown on the bar and on the epoch lines, when logged
BAR_METRICS = (
    ("train/loss_step", "loss"),
    ("train/loss_epoch", "loss"),
    ("train/loss", "loss"),
    ("train/acc", "acc"),
    ("val/acc", "val_acc"),
)

#: (warning message regex) of other packages that say nothing about the run
_NOISY_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # lightning's _pytree on torch >= 2.10
    r".*LightningCLI's args parameter is intended to run from within Python.*",  # the suite passes args
    r".*Experiment logs directory .* exists and is not empty.*",  # a run folder: ours to manage
    r".*Checkpoint directory .* exists and is not empty.*",  # before_fit refuses a previous run's files
    r".*does not have many workers which may be a bottleneck.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
)
#: (logger name, message start) of other packages' informational tips
_NOISY_LOGS = ("💡 Tip:",)
_RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)

T = TypeVar("T")


def trainer_shows_progress(trainer: Any) -> bool:
    """True when ``trainer`` draws a progress bar and this process is global rank 0."""
    if trainer is None:
        return False
    return getattr(trainer, "progress_bar_callback", None) is not None and bool(
        getattr(trainer, "is_global_zero", True)
    )


def progress(iterable: Iterable[T], desc: str, enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """``iterable`` wrapped in a transient tqdm bar (a plain iteration when not ``enabled``)."""
    if not enabled:
        yield from iterable
        return
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with tqdm(
        iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=not interactive()
    ) as bar:
        yield from bar


def interactive() -> bool:
    """Whether progress may be drawn as bars: stdout is a terminal (``LT_LIGHTNING_PROGRESS`` = ``bar`` /
    ``lines`` forces one or the other)."""
    choice = os.environ.get("LT_LIGHTNING_PROGRESS", "").lower()
    if choice in ("bar", "lines"):
        return choice == "bar"
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def _bar_metrics(trainer: Any, epoch: bool = False) -> dict[str, float]:
    """The :data:`BAR_METRICS` the trainer holds now (one host read per metric, per refresh); ``epoch``:
    the epoch's mean loss before the last step's."""
    out: dict[str, float] = {}
    metrics = trainer.callback_metrics
    order = sorted(BAR_METRICS, key=lambda m: m[0] != "train/loss_epoch") if epoch else BAR_METRICS
    for key, short in order:
        if short not in out and key in metrics:
            out[short] = float(metrics[key])
    return out


class MetricsProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, also showing the training loss and accuracy and the validation accuracy.

    While training, the values are read from the device once per ``log_every_n_steps`` (when the module
    logs new ones, and Lightning reads them anyway), not at every redraw: a read is a host sync.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: dict[str, float] = {}
        self._read_at: int | None = None  # the log period (global_step // log_every_n_steps) last read

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        period = trainer.global_step // max(int(trainer.log_every_n_steps), 1) if trainer.training else None
        if period is None or period != self._read_at:
            self._shown, self._read_at = _bar_metrics(trainer), period
        for name, value in self._shown.items():
            items.setdefault(name, f"{value:.4g}")
        return items


class EpochLines(ProgressBar):
    """Progress for a log file: one line per training epoch (epoch, loss, accuracy, validation accuracy,
    seconds), one per validate/test/predict run, nothing per batch."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = 0.0
        self._pending: tuple[int, float] | None = None  # (epoch, seconds) of an epoch not yet printed

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, trainer: Any, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(text, flush=True)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._flush(trainer)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # Printed at the next epoch's start (or the end of training): Lightning calls this hook before the
        # module's own on_train_epoch_end, where the epoch's training means are logged.
        self._pending = (trainer.current_epoch, time.perf_counter() - self._start)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._flush(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._flush(trainer)

    def _flush(self, trainer: Any) -> None:
        if self._pending is None:
            return
        epoch, took = self._pending
        self._pending = None
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        values = "  ".join(f"{k} {v:.4g}" for k, v in _bar_metrics(trainer, epoch=True).items())
        self._print(trainer, f"epoch {epoch + 1}/{total}  {values}  ({took:.1f} s)")

    def _evaluated(self, trainer: Any, what: str) -> None:
        if not trainer.sanity_checking and trainer.state.fn != "fit":
            self._print(trainer, f"{what}: done")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._evaluated(trainer, "validate")

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._evaluated(trainer, "test")

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self._evaluated(trainer, "predict")


def progress_bar_callback() -> ProgressBar:
    """:class:`MetricsProgressBar` on a terminal, :class:`EpochLines` otherwise (see :func:`interactive`)."""
    return MetricsProgressBar() if interactive() else EpochLines()


def needs_progress_bar(trainer_config: Any) -> bool:
    """Whether a trainer built from ``trainer_config`` (instantiated callbacks) shows progress and has no
    progress bar of its own yet (``enable_progress_bar: false`` shows none)."""
    trainer_config = trainer_config or {}
    if trainer_config.get("enable_progress_bar") is False:
        return False
    callbacks = trainer_config.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    return not any(isinstance(c, ProgressBar) for c in callbacks)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_NOISY_LOGS)


def quiet_third_party() -> None:
    """Filter other packages' tips and irrelevant deprecation warnings, in this process (idempotent).

    W&B's own console chatter is silenced (``WANDB_SILENT``, unless set): our logger prints where an
    offline run went and how to sync it.
    """
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    os.environ.setdefault("WANDB_SILENT", "true")
