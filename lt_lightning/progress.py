"""Progress bars for the library's own long loops (NC pass, NCM fitting, τ selection, seeds).

Lightning draws the bars of fit/validate/test; these loops run inside hooks, outside Lightning's loops,
so they get a tqdm bar of their own, shown when the trainer shows its bar and only on global rank 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress", "trainer_shows_progress"]

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
    with tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True) as bar:
        yield from bar
