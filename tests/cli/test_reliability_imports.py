"""Issue 20, item 2: a checkpoint may not choose a module to import, on any command-line load path.

A checkpoint naming the standard library's ``this`` (importing it prints the Zen of Python) at
``--ckpt_path`` of every subcommand and at ``--model.init_args.stage1_checkpoint`` is refused in one line
naming the file and the module, and nothing is imported or printed. (The library load paths:
tests/test_checkpoints.py.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lt_lightning.cli import main
from tests.cli.helpers import QUIET, digits

ZEN = "Beautiful is better than ugly"


@pytest.fixture(scope="module")
def naming_this(tmp_path_factory) -> Path:
    """A checkpoint of a JointModule whose optimizer record names ``this.Opt`` (the nested ``class_path``
    in the hyper-parameters that LightningCLI imported before issue 20). The refusal comes before the
    weights are read, so the record is all it needs."""
    record = {"optimizer": {"class_path": "this.Opt", "init_args": {"lr": 0.1}}, "num_classes": 10}
    ckpt = {
        "state_dict": {"head.weight": torch.zeros(10, 4)},
        "lt_lightning_class_path": "lt_lightning.models.joint.JointModule",
        "hyper_parameters": {"_class_path": "lt_lightning.models.JointModule", **record},
    }
    path = tmp_path_factory.mktemp("this") / "this.ckpt"
    torch.save(ckpt, path)
    return path


def _one_line_error(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("lt-lightning: error:")]
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err[-2000:]
    assert ZEN not in captured.out + captured.err
    return errors[0]


@pytest.mark.parametrize(
    ("sub", "method", "option"),
    [
        ("fit", "joint", "--ckpt_path"),
        ("validate", "joint", "--ckpt_path"),
        ("test", "joint", "--ckpt_path"),
        ("predict", "joint", "--ckpt_path"),
        ("fit", "crt", "--model.init_args.stage1_checkpoint"),
        ("test", "tau_norm", "--model.init_args.stage1_checkpoint"),
    ],
    ids=lambda v: v,
)
def test_a_checkpoint_naming_this_is_refused_in_one_line(
    tmp_path, monkeypatch, capsys, naming_this, sub, method, option
):
    monkeypatch.chdir(tmp_path)
    assert "this" not in sys.modules
    line = _one_line_error(capsys, [sub, "--config", digits(method), *QUIET, option, str(naming_this)])
    assert str(naming_this) in line and "'this'" in line and "refused" in line, line
    assert "this" not in sys.modules  # nothing imported
    assert not (tmp_path / "runs").exists()  # refused before anything ran
