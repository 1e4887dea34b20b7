"""bench/digits_lt_table.py: its runs are valid CLI runs of the shipped configs, and its bookkeeping (no
training: run_seed is replaced by canned results)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lt_lightning.cli.lightning_cli import config_class
from tests.cli.helpers import DIGITS, resolved_config

PATH = Path(__file__).parents[1] / "bench" / "digits_lt_table.py"


@pytest.fixture
def table(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("digits_lt_table", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path)

    def fake_run_seed(seed, methods):
        return {
            m: {"acc": 0.5 + 0.1 * seed, "many_acc": 0.9, "medium_acc": 0.5, "few_acc": 0.1} for m in methods
        }

    monkeypatch.setattr(module, "run_seed", fake_run_seed)
    return module


def test_methods_subset_without_a_saved_table(table, tmp_path):
    # used to raise KeyError: rows were built for every method, run or not
    table.main(["--seeds", "0", "1", "--methods", "ncm"])
    saved = json.loads((tmp_path / "digits_lt_table.json").read_text())
    assert [r["method"] for r in saved["rows"]] == ["ncm"]
    mean, std = saved["rows"][0]["acc"]
    assert mean == pytest.approx(0.55) and std == pytest.approx(0.0707106781)
    # a second subset keeps the first one's results
    table.main(["--seeds", "0", "1", "--methods", "joint"])
    saved = json.loads((tmp_path / "digits_lt_table.json").read_text())
    assert [r["method"] for r in saved["rows"]] == ["joint", "ncm"]


def test_rows_use_the_seeds_each_method_has(table):
    per_seed = {0: {"joint": {"acc": 0.4, "nc1": 2.0}}, 1: {"joint": {"acc": 0.6}, "ncm": {"acc": 0.7}}}
    rows = {r["method"]: r for r in table.table_rows(per_seed, [0, 1, 2])}
    assert set(rows) == {"joint", "ncm"}
    assert rows["joint"]["seeds"] == [0, 1] and rows["joint"]["acc"][0] == pytest.approx(0.5)
    assert rows["joint"]["nc1"] == (2.0, 0.0)
    assert rows["ncm"]["seeds"] == [1] and "many_acc" not in rows["ncm"]


def test_every_digits_config_is_in_the_table(table):
    assert sorted(table.FIT + table.TEST_ONLY) == sorted(
        p.stem for p in DIGITS.glob("*.yaml") if not p.name.startswith("_")
    )


@pytest.mark.slow  # about 0.3 s a method
def test_each_run_is_a_valid_cli_run(table):
    for method in table.FIT + table.TEST_ONLY:
        sub = table.subcommand(method)
        flag, config, *args = table.cli_args(method, 2)
        assert flag == "--config"
        cfg = resolved_config(config, *args, subcommand=sub)
        assert cfg["seed_everything"] == 2 and cfg["data"]["init_args"]["seed"] == 2, method
        # tau_norm and ncm are tested (they train nothing), every other method is fitted
        assert (sub == "fit") == config_class(cfg["model"]).trains, method
