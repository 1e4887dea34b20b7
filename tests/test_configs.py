"""Every shipped config parses through the CLI (``--print_config``), and the CLI wires data into model."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from lt_lightning.cli import build_cli

ROOT = Path(__file__).parents[1]
#: the runnable configs; configs/<dataset>/_base.yaml holds the blocks each folder's configs share
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*/*.yaml") if not p.name.startswith("_"))
BASES = sorted((ROOT / "configs").glob("*/_base.yaml"))


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


@pytest.mark.parametrize("base", BASES, ids=lambda p: p.parent.name)
def test_every_config_of_a_folder_includes_its_shared_blocks(base):
    # one copy of the folder's seed, trainer and data block: every config includes it and changes values
    for path in sorted(base.parent.glob("*.yaml")):
        if path != base:
            assert "\nconfig: _base.yaml\n" in "\n" + path.read_text(), path
    shared = yaml.safe_load(base.read_text())
    assert set(shared) <= {"seed_everything", "trainer", "data"}, set(shared)
    assert "callbacks" not in shared.get("trainer", {})


def test_a_dotted_override_in_a_config_changes_one_value_of_the_shared_block(tmp_path):
    from lt_lightning.cli.configs import resolve_config

    base = resolve_config(ROOT / "configs" / "digits_lt" / "joint.yaml")
    crt = resolve_config(ROOT / "configs" / "digits_lt" / "crt.yaml")
    assert (
        base["data"]["init_args"]["sampler"] == "instance" and crt["data"]["init_args"]["sampler"] == "class"
    )
    assert crt["trainer"]["max_epochs"] == 10 and base["trainer"]["max_epochs"] == 30
    same = {k: v for k, v in crt["data"]["init_args"].items() if k != "sampler"}
    assert same == {k: v for k, v in base["data"]["init_args"].items() if k != "sampler"}


def test_yangs_ce_baseline_config_builds_a_frozen_random_classifier(tmp_path):
    # configs/cifar10_lt/joint_yang.yaml: Yang's models/resnet_cifar.py Classifier (kaiming-normal, frozen)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli = build_cli(
            [
                "--config",
                str(ROOT / "configs" / "cifar10_lt" / "joint_yang.yaml"),
                "--trainer.default_root_dir",
                str(tmp_path),
                "--trainer.accelerator",
                "cpu",
            ],
            run=False,
        )
    head = cli.model.head
    assert not any(p.requires_grad for p in head.parameters()) and head.init == "kaiming_normal"
    assert all(not n.startswith("head.") for n, _ in cli.model.named_trainable_parameters())
    assert cli.model.mixup.alpha == 1.0 and cli.datamodule.shot_groups == [0] * 3 + [1] * 4 + [2] * 3
