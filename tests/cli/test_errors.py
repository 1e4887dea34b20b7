"""lt_lightning.cli.errors: one line naming the option as typed, the bad value and what is valid; an
option or value of lt_lightning 0.1 says where it went."""

from __future__ import annotations

from argparse import ArgumentError
from pathlib import Path

import pytest

from lt_lightning.cli import build_cli, format_error
from lt_lightning.cli.errors import USER_ERRORS, root_cause
from lt_lightning.models.migration import LEGACY_KEYS
from tests.cli.helpers import digits

SCHEDULES = "constant, cosine, multistep"


@pytest.mark.parametrize(
    ("config", "args", "expected"),
    [
        (
            "joint",
            ["--data.init_args.sampler", "classs"],
            "--data.init_args.sampler: got 'classs'; valid: instance, class, sqrt, power, progressive, stratified",
        ),
        (
            "joint",
            ["--model.init_args.lr_schedule.name", "cosin"],
            f"--model.init_args.lr_schedule.name: got 'cosin'; valid: {SCHEDULES}",
        ),
        (
            "joint",
            ["--model.init_args.lr_schedule.interval", "batch"],
            "--model.init_args.lr_schedule.interval: got 'batch'; valid: step, epoch",
        ),
        (
            "joint",
            ["--model.init_args.lr_schedule.warmup", "3"],
            "--model.init_args.lr_schedule.warmup: lt_lightning.optim.LRSchedule has no option 'warmup'",
        ),
        (  # a key of a dict value is named in the option too
            "joint",
            ["--model.init_args.lr_schedule", "{name: cosine, warmup: 3}"],
            "--model.init_args.lr_schedule.warmup: lt_lightning.optim.LRSchedule has no option 'warmup'",
        ),
        (
            "joint",
            ["--model.init_args.lr_schedule", "cosin"],
            "--model.init_args.lr_schedule: got 'cosin'; expected lt_lightning.optim.LRSchedule options: "
            "--model.init_args.lr_schedule.<name> VALUE, or '{<name>: value, ...}'",
        ),
        (
            "joint",
            ["--model.init_args.optimizer", "adam"],
            "--model.init_args.optimizer: got 'adam'; expected a torch.optim.optimizer.Optimizer class path "
            "(e.g. torch.optim.AdamW; its options: --model.init_args.optimizer.init_args.<name> VALUE)",
        ),
        (
            "joint",
            ["--model.init_args.optimizer", "torch.optim.Adamm"],
            "--model.init_args.optimizer: module 'torch.optim' has no attribute 'Adamm'",
        ),
        (  # before: "--model.init_args.optimizer.lr: Type collections.abc.Callable[...] expects a function ..."
            "joint",
            ["--model.init_args.optimizer.init_args.lr", "abc"],
            "--model.init_args.optimizer.init_args.lr: expected float, got 'abc'",
        ),
        (
            "joint",
            ["--model.init_args.optimizer", "{class_path: torch.optim.AdamW, init_args: {lr: x}}"],
            "--model.init_args.optimizer: lr: expected float, got 'x'",
        ),
        (  # before: the optimizer's type and a namespace dump
            "joint",
            ["--model.init_args.optimizer.init_args.lrr", "0.1"],
            "--model.init_args.optimizer.init_args.lrr: torch.optim.SGD has no option 'lrr'",
        ),
        (
            "joint",
            ["--model.init_args.foo", "1"],
            "--model.init_args.foo: lt_lightning.models.JointModule has no option 'foo'",
        ),
        (
            "joint",
            ["--data.init_args.many_thresholds", "3"],
            "--data.init_args.many_thresholds: lt_lightning.data.DigitsLTDataModule has no option 'many_thresholds'",
        ),
        (
            "joint",
            ["--model.init_args.neck", "bn2"],
            "--model.init_args.neck: got 'bn2'; valid: none, bn, l2, bn_l2",
        ),
        (
            "crt",
            ["--model.init_args.mode", "cb"],
            "--model.init_args.mode: got 'cb'; valid: crt, lws, tau_norm, ncm, weight_balancing",
        ),
        (  # a union: before, only its first member ("expected bool, got 'sometimes'")
            "joint",
            ["--model.init_args.compile_backbone", "sometimes"],
            "--model.init_args.compile_backbone: got 'sometimes'; expected bool or one of: step",
        ),
        ("joint", ["--trainer.max_epochs", "abc"], "--trainer.max_epochs: expected int, got 'abc'"),
        ("joint", ["--data.init_args.batch_size", "x"], "--data.init_args.batch_size: expected int, got 'x'"),
        (
            "joint",
            ["--model", "lt_lightning.models.JointModul"],
            "--model: module 'lt_lightning.models' has no attribute 'JointModul'",
        ),
        # errors raised by the classes themselves name the class
        (
            "joint",
            ["--data.init_args.imbalance_ratio", "0.5"],
            "DigitsLTDataModule: imbalance_ratio must be >= 1 (n_max / n_min), got 0.5",
        ),
        (
            "joint",
            ["--model.init_args.mixup.alpha", "-1"],
            "JointModule: Mixup alpha must be a finite number >= 0, got -1.0",
        ),
        (
            "crt",
            ["--model.init_args.stage1_checkpoint", "missing.ckpt"],
            "DecoupledModule: stage-1 checkpoint not found: 'missing.ckpt'",
        ),
        (
            "crt",
            ["--model.init_args.tau", "1.0"],
            "DecoupledModule: tau do not apply to mode 'crt' (CRTModule)",
        ),
        (
            "joint",
            ["--data.init_args.sampler", "power"],
            "DigitsLTDataModule: the 'power' sampler needs sampler_q in [0, 1], got None",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_values_give_one_line(tmp_path, monkeypatch, config, args, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(USER_ERRORS) as info:
        build_cli(["fit", "--config", digits(config), "--trainer.max_epochs", "1", *args])
    assert format_error(info.value) == expected
    assert not (tmp_path / "runs").exists()  # refused before anything ran


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model.init_args.lr", "0.1"], "is now --model.init_args.optimizer.init_args.lr 0.1"),
        (["--model.init_args.momentum", "0.5"], "is now --model.init_args.optimizer.init_args.momentum 0.5"),
        (
            ["--model.init_args.weight_decay", "0"],
            "is now --model.init_args.optimizer.init_args.weight_decay 0",
        ),
        (["--model.init_args.lr_interval", "epoch"], "is now --model.init_args.lr_schedule.interval epoch"),
        (["--model.init_args.warmup_epochs", "2"], "is now --model.init_args.lr_schedule.warmup_epochs 2"),
        (
            ["--model.init_args.milestones", "[1, 2]"],
            "is now --model.init_args.lr_schedule.milestones [1, 2]",
        ),
        (["--model.init_args.mixup_alpha", "1.0"], "is now --model.init_args.mixup.alpha 1.0"),
        (
            ["--model.init_args.gain", "2"],
            "is now --model.init_args.optimizer.init_args.gain 2 (with --model.init_args.optimizer lt_lightning.optim.AGD)",
        ),
        (
            ["--model.init_args.many_threshold", "50"],
            "the shot thresholds are the data's: --data.init_args.many_threshold 50",
        ),
        (
            ["--model.init_args.optimizer", "sgd"],
            "got 'sgd', lt_lightning 0.1's name: now --model.init_args.optimizer torch.optim.SGD",
        ),
        (["--model.init_args.optimizer", "adamw"], "now --model.init_args.optimizer torch.optim.AdamW"),
        (
            ["--model.init_args.lr_schedule", "cosine"],
            "got 'cosine', lt_lightning 0.1's form: now --model.init_args.lr_schedule.name cosine",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_options_of_lt_lightning_0_1_say_where_they_went(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArgumentError) as info:
        build_cli(["fit", "--config", digits("joint"), *args, "--print_config"])
    message = format_error(info.value)
    assert message.startswith(f"{args[0]}: ") and message.endswith(expected), message
    assert "\n" not in message


def test_every_option_of_lt_lightning_0_1_has_a_new_place():
    from lt_lightning.cli.errors import _moved_option

    for name in sorted(LEGACY_KEYS):
        assert _moved_option(name, 1) != "", name
    assert _moved_option("backbone", 1) == ""  # a current option: no hint


def test_root_cause_follows_the_chain_and_stops_on_a_cycle():
    inner = ValueError("inner")
    middle = RuntimeError("middle")
    middle.__cause__ = inner
    outer = TypeError("outer")
    outer.__cause__ = middle
    assert root_cause(outer) is inner
    inner.__cause__ = outer  # a cycle: stops at the first error seen twice
    assert root_cause(outer) is inner


def test_a_bad_value_in_a_callback_of_the_config_names_every_valid_kind(tmp_path, monkeypatch):
    # the union's members are named, not only its first ("expected bool, got 'every'")
    monkeypatch.chdir(tmp_path)
    text = (
        Path(digits("joint"))
        .read_text()
        .replace("{every_n_epochs: 10}", "{every_n_epochs: 10, log_figures: every}")
    )
    config = tmp_path / "joint.yaml"
    config.write_text(
        text.replace("config: _base.yaml", f"config: {Path(digits('joint')).parent / '_base.yaml'}")
    )
    with pytest.raises(USER_ERRORS) as info:
        build_cli(["fit", "--config", str(config)])
    assert (
        format_error(info.value)
        == "--trainer.callbacks.log_figures: got 'every'; expected bool or one of: last"
    )
