"""Every docstring example in the package runs (the README's conventions promise working examples)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lt_lightning

# ``__main__`` modules run the program when imported (``python -m lt_lightning.cli``): no examples there
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(lt_lightning.__path__, "lt_lightning.")
    if not m.name.endswith(".__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


def test_examples_exist():
    # the metric examples at least: a doctest collector that found nothing would pass vacuously
    module = importlib.import_module("lt_lightning.metrics.shot_accuracy")
    assert doctest.testmod(module).attempted >= 4
