"""Packaging: a licence, one version source, py.typed, and a wheel that carries them."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import shutil
import zipfile
from pathlib import Path

import pytest

import lt_lightning

ROOT = Path(__file__).parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_and_build_floor_agree():
    cfg = _pyproject()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert cfg["project"]["license"] == "MIT" and cfg["project"]["license-files"] == ["LICENSE"]
    # the SPDX string and license-files need setuptools >= 77: the build floor must say so
    (req,) = [r for r in cfg["build-system"]["requires"] if r.startswith("setuptools")]
    floor = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", req).group(1).split("."))
    assert floor >= (77,)


def test_one_version_source():
    cfg = _pyproject()
    assert "version" not in cfg["project"] and "version" in cfg["project"]["dynamic"]
    assert cfg["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lt_lightning.__version__"}
    try:
        installed = importlib.metadata.version("lt_lightning")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("lt_lightning is not installed")
    assert installed == lt_lightning.__version__


def test_the_console_script_is_the_clis_main():
    assert _pyproject()["project"]["scripts"] == {"lt-lightning": "lt_lightning.cli:main"}
    module, _, name = "lt_lightning.cli:main".partition(":")
    main = getattr(importlib.import_module(module), name)
    assert main is importlib.import_module("lt_lightning.cli.main").main  # the dispatcher
    assert (ROOT / "lt_lightning/cli/__main__.py").is_file()  # python -m lt_lightning.cli (torchrun)


def test_typed_marker_is_package_data():
    assert (ROOT / "lt_lightning/py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["lt_lightning"]


@pytest.mark.slow
def test_wheel_carries_license_marker_and_version(tmp_path, monkeypatch):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is below the build floor")
    from setuptools import build_meta

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "lt_lightning", src / "lt_lightning", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(src)
    wheel = build_meta.build_wheel(str(tmp_path / "dist"))
    with zipfile.ZipFile(tmp_path / "dist" / wheel) as zf:
        names = zf.namelist()
        meta = zf.read(f"lt_lightning-{lt_lightning.__version__}.dist-info/METADATA").decode()
        entry_points = zf.read(f"lt_lightning-{lt_lightning.__version__}.dist-info/entry_points.txt").decode()
    assert "lt_lightning/py.typed" in names
    assert {
        "lt_lightning/cli/__init__.py",
        "lt_lightning/cli/__main__.py",
        "lt_lightning/cli/main.py",
    } <= set(names)
    assert "lt-lightning = lt_lightning.cli:main" in entry_points
    assert any(n.endswith("LICENSE") and ".dist-info/" in n for n in names)
    assert f"Version: {lt_lightning.__version__}\n" in meta and "License-Expression: MIT" in meta
