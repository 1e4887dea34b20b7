"""lt_lightning.cli.main: ``lt-lightning`` dispatches ``fit|validate|test|predict|seeds``; a user error is one
line on stderr with exit status 2 (command line) or 1 (later), an unexpected one keeps its traceback."""

from __future__ import annotations

import importlib
import re
import sys

import pytest

from lt_lightning.cli import main
from tests.cli.helpers import digits, run_cli

SAMPLER_ERROR = (
    "lt-lightning: error: --data.init_args.sampler: got 'classs'; valid: instance, class, sqrt, power, "
    "progressive, stratified"
)


@pytest.mark.slow
def test_the_console_prints_one_line_and_exits_2(tmp_path):
    proc = run_cli(tmp_path, "fit", "-c", digits("joint"), "--data.init_args.sampler", "classs")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [SAMPLER_ERROR]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_diverging_run_exits_1_naming_the_step_without_a_checkpoint(tmp_path):
    proc = run_cli(tmp_path, "fit", "-c", digits("joint"), "--model.init_args.optimizer.init_args.lr", "1e8")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    found = re.fullmatch(
        r"lt-lightning: error: NonFiniteError: non-finite loss(?: and features)? \(NaN or inf\) at training "
        r"step (\d+) \(noticed at step (\d+)\); its update was skipped and no checkpoint was written after "
        r"it\. Lower the learning rate or check the data\.",
        last,
    )
    assert found, last
    first, noticed = int(found.group(1)), int(found.group(2))
    # read every log_every_n_steps (5 in the digits configs), not every step: no host sync per step
    assert first < noticed and noticed % 5 == 0
    assert not list(tmp_path.glob("runs/digits_lt/joint/seed0/*.ckpt"))  # diverged in epoch 0: nothing saved


def test_main_prints_one_line_in_process(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "-c", digits("joint"), "--data.init_args.sampler", "classs"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [SAMPLER_ERROR]
    # a later error (here the datamodule's own check) exits 1
    with pytest.raises(SystemExit) as info:
        main(["fit", "-c", digits("joint"), "--data.init_args.imbalance_ratio", "0.5"])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "lt-lightning: error: DigitsLTDataModule: imbalance_ratio must be >= 1 (n_max / n_min), got 0.5"
    ]


def test_main_reads_sys_argv_and_dispatches_seeds(tmp_path, monkeypatch, capsys):
    args = ["seeds", "-c", digits("joint"), "--seeds", "1", "1", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["lt-lightning", *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    assert capsys.readouterr().err.strip() == "lt-lightning: error: --seeds must be distinct, got [1, 1]"
    with pytest.raises(SystemExit) as info:
        main(["seeds", "-c", str(tmp_path / "missing.yaml"), "--seeds", "0", "--out", str(tmp_path)])
    assert info.value.code == 1
    assert "config not found" in capsys.readouterr().err


def test_the_traceback_on_request(monkeypatch):
    monkeypatch.setenv("LT_LIGHTNING_TRACEBACK", "1")
    with pytest.raises(ValueError, match="--seeds must be distinct"):
        main(["seeds", "-c", digits("joint"), "--seeds", "1", "1", "--out", "x"])


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    # the module (``lt_lightning.cli.main`` as an attribute is the function the package re-exports)
    cli_main = importlib.import_module("lt_lightning.cli.main")

    def broken(args):
        raise RuntimeError("a bug, not the user's")

    monkeypatch.setattr(cli_main, "build_cli", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["fit", "-c", digits("joint")])

    def wrapped(args):  # a user-error type whose root cause is a bug: not hidden either
        raise ValueError("wrapped") from KeyError("missing key")

    monkeypatch.setattr(cli_main, "build_cli", wrapped)
    with pytest.raises(ValueError, match="wrapped"):
        main(["fit", "-c", digits("joint")])
