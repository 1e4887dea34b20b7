"""Numbers as the command line prints them: 4 significant digits, NaN as ``nan``."""

from __future__ import annotations

import math

__all__ = ["significant"]


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
