"""Every shipped config parses through the CLI (``--print_config``), and the CLI wires data into model."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from lt_lightning.cli import build_cli

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*/*.yaml"))


def test_configs_exist_for_every_dataset_and_method():
    names = {(p.parent.name, p.stem) for p in CONFIGS}
    for ds in ("cifar10_lt", "cifar100_lt", "imagenet_lt", "places_lt", "inat2018", "digits_lt"):
        for method in ("joint", "fixed_etf", "fixed_etf_ce", "tde", "crt", "lws", "tau_norm", "ncm"):
            assert (ds, method) in names, (ds, method)
    for ds in ("cifar10_lt", "cifar100_lt", "imagenet_lt", "digits_lt", "synthetic_lt"):
        assert (ds, "implicit_etf") in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_parses(path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as info:
        build_cli(["fit", "--config", str(path), "--print_config"])
    assert info.value.code in (0, None)
    resolved = yaml.safe_load(out.getvalue())
    assert resolved["model"]["class_path"].startswith("lt_lightning.models.")
    assert resolved["data"]["class_path"].startswith("lt_lightning.data.")
