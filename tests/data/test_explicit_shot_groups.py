"""Explicit many/medium/few groups by class-index ranges (Yang's head/med/tail_class_idx), issue 8 item 9."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from lt_lightning.cli import build_cli
from lt_lightning.data import SyntheticLTDataModule


def test_boundaries_give_yangs_cifar100_groups():
    # Yang's config/cifar100/Res_cifar100_imb001_ETF_DR.yaml: head [0, 36), med [36, 71), tail [71, 100)
    dm = SyntheticLTDataModule(
        num_classes=100,
        feature_dim=4,
        max_count=50,
        imbalance_ratio=10,
        test_per_class=1,
        shot_group_boundaries=[36, 71],
    )
    groups = dm.shot_groups
    assert torch.bincount(groups, minlength=3).tolist() == [36, 35, 29]
    assert groups[35] == 0 and groups[36] == 1 and groups[70] == 1 and groups[71] == 2
    assert dm.explicit_shot_groups == groups.tolist()
    assert SyntheticLTDataModule(num_classes=10, feature_dim=4).explicit_shot_groups is None


@pytest.mark.parametrize("bad", [[71, 36], [5], [-1, 3], [1.5, 3]])
def test_bad_boundaries(bad):
    with pytest.raises(ValueError, match="shot_group_boundaries"):
        SyntheticLTDataModule(num_classes=10, feature_dim=4, shot_group_boundaries=bad)


def test_cli_links_explicit_groups_into_the_model_metrics(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli = build_cli(
            [
                "--config",
                "configs/synthetic_lt/joint.yaml",
                "--data.init_args.shot_group_boundaries",
                "[3, 7]",
                "--trainer.default_root_dir",
                str(tmp_path),
            ],
            run=False,
        )
    k = cli.model.num_classes
    expected = [0] * 3 + [1] * 4 + [2] * (k - 7)
    assert cli.model.hparams.shot_groups == expected
    assert cli.model.val_metrics.class_group.tolist() == expected
    assert cli.datamodule.shot_groups.tolist() == expected
