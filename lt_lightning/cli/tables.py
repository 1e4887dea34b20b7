"""Numbers as the command line prints them: 4 significant digits, NaN as ``nan``; the end-of-run tables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["SUMMARY_KEYS", "format_metrics_table", "significant"]

#: the rows of the end-of-run metric tables (``{split}`` is val or test)
SUMMARY_KEYS = ("acc", "balanced_acc", "many_acc", "medium_acc", "few_acc", "loss")


def significant(value: float, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits, trailing zeros kept (``43.10``, ``0.4567``, ``1234``).

    >>> significant(43.1), significant(0.000123456), significant(1234.5), significant(float("nan"))
    ('43.10', '0.0001235', '1234', 'nan')
    """
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0." + "0" * (digits - 1)
    text = f"{value:#.{digits}g}"
    if "e" not in text and abs(value) >= 10 ** (digits - 1):
        text = text.rstrip(".")
    if "e" in text and 1e-5 <= abs(value) < 10**digits:  # '#g' switches to exponents below 1e-4
        exponent = math.floor(math.log10(abs(value)))
        text = f"{value:.{max(digits - 1 - exponent, 0)}f}"
    return text


def format_metrics_table(metrics: Mapping[str, Any], split: str, title: str | None = None) -> str:
    """A small text table of the ``{split}/…`` summary metrics (and the final NC1) in ``metrics``, with 4
    significant digits; an NC number says the epoch it was measured at (``nc/epoch``, 0-based)."""
    keys = [f"{split}/{k}" for k in SUMMARY_KEYS] + [f"nc/{s}/nc1" for s in ("train", split)]
    nc_epoch = metrics.get("nc/epoch")
    rows = []
    for key in dict.fromkeys(keys):
        if key in metrics:
            label = key
            if key.startswith("nc/") and nc_epoch is not None:
                label = f"{key} (epoch {int(float(nc_epoch))})"
            rows.append((label, significant(float(metrics[key]))))
    if not rows:
        return ""
    width = max(len(k) for k, _ in rows)
    head = title or f"final {split} metrics"
    lines = [head, "-" * max(len(head), width + 10)]
    lines += [f"{k:<{width}}  {v:>8}" for k, v in rows]
    return "\n".join(lines)
