"""The run's shot groups: computed once by the datamodule with lt_lightning.spec's rule, from the count
thresholds or from class-index ranges (Yang's head/med/tail_class_idx)."""

from __future__ import annotations

import contextlib
import io

import pytest

import lt_lightning.spec as spec
from lt_lightning.data import CIFAR10LTDataModule, CIFAR100LTDataModule, SyntheticLTDataModule
from lt_lightning.data import shot_groups as data_shot_groups
from lt_lightning.data.profiles import shot_groups as profiles_shot_groups


def test_the_rule_is_specs():
    assert data_shot_groups is spec.shot_groups and profiles_shot_groups is spec.shot_groups
    assert data_shot_groups([500, 100, 20, 19]).tolist() == [0, 1, 1, 2]


def test_threshold_groups_are_a_list_known_at_construction():
    dm = CIFAR10LTDataModule(data_dir="does-not-exist", imbalance_ratio=100)
    assert dm.shot_groups == spec.shot_groups(dm.class_counts).tolist()
    assert [dm.shot_groups.count(g) for g in range(3)] == [8, 2, 0]
    dm100 = CIFAR100LTDataModule(data_dir="does-not-exist", imbalance_ratio=100)
    assert [dm100.shot_groups.count(g) for g in range(3)] == [35, 35, 30]
    custom = SyntheticLTDataModule(
        num_classes=5, max_count=100, imbalance_ratio=10, many_threshold=50, few_threshold=20
    )
    assert custom.class_counts == [100, 56, 31, 17, 10]
    assert custom.shot_groups == [0, 0, 1, 2, 2]
    assert all(type(g) is int for g in custom.shot_groups) and type(custom.class_counts[0]) is int


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
    assert isinstance(groups, list) and [groups.count(g) for g in range(3)] == [36, 35, 29]
    assert groups[35] == 0 and groups[36] == 1 and groups[70] == 1 and groups[71] == 2
    assert groups == spec.shot_groups_from_boundaries(100, [36, 71]).tolist()
    assert not hasattr(dm, "explicit_shot_groups")  # one fact, one attribute


@pytest.mark.parametrize("bad", [[71, 36], [5], [-1, 3], [1.5, 3], [3, 11]])
def test_bad_boundaries_are_refused_at_construction(bad):
    with pytest.raises(
        ValueError, match=r"shot_group_boundaries must be two class indices \[medium_start, few_start\]"
    ):
        SyntheticLTDataModule(num_classes=10, feature_dim=4, shot_group_boundaries=bad)


def test_bad_thresholds_are_refused_at_construction():
    with pytest.raises(ValueError, match="few_threshold"):
        SyntheticLTDataModule(num_classes=4, many_threshold=10, few_threshold=20)


def test_cli_links_the_datamodules_groups_into_the_model_metrics(tmp_path):
    from lt_lightning.cli import build_cli

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
    assert cli.datamodule.shot_groups == expected
    assert list(cli.model.hparams.shot_groups) == expected
    assert cli.model.val_metrics.class_group.tolist() == expected


def _yangs_groups(counts, medium_start, few_start) -> list[int]:
    """Yang's datasets/imagenet.py LT_Dataset, written out: class_map[sorted_classes[i]] = i with
    sorted_classes = np.argsort(-counts), then head/med/tail_class_idx slice the new ids."""
    import numpy as np

    sorted_classes = np.argsort(-np.array(counts))
    class_map = [0] * len(counts)
    for i in range(len(counts)):
        class_map[sorted_classes[i]] = i
    return [
        0 if class_map[c] < medium_start else 1 if class_map[c] < few_start else 2 for c in range(len(counts))
    ]


def _write_split_file(path, counts):
    lines = [f"c{c}/{i}.png {c}" for c, n in enumerate(counts) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "cls_name", ["ImageNetLTDataModule", "PlacesLTDataModule", "INaturalist2018DataModule"]
)
def test_split_file_boundaries_rank_classes_by_training_count(tmp_path, cls_name):
    # the split file's ids are not in count order: class 6 is the most frequent, class 2 the rarest
    import lt_lightning.data as data

    counts = [3, 9, 1, 7, 8, 2, 12, 5, 4, 6]
    _write_split_file(tmp_path / "train.txt", counts)
    dm = getattr(data, cls_name)(
        data_dir=str(tmp_path),
        train_file="train.txt",
        val_file="train.txt",
        test_file="train.txt",
        num_classes=10,
        shot_group_boundaries=[3, 7],
        check_files=False,
    )
    # by hand: ranks 6, 1, 4 | 3, 9, 7, 8 | 0, 5, 2
    by_hand = [2, 0, 2, 1, 0, 2, 0, 1, 1, 1]
    assert dm.class_counts == counts
    assert dm.shot_groups == by_hand == _yangs_groups(counts, 3, 7)
    assert dm.shot_groups != spec.shot_groups_from_boundaries(10, [3, 7]).tolist()  # not the raw ids


def test_imagenet_lt_sized_boundaries_follow_yangs_renumbering_ties_included(tmp_path):
    # ImageNet-LT's shape (1,000 classes, 5..1280 images, many ties) in a shuffled id order; Yang's
    # [390, 835]; ties are ranked as numpy's default argsort ranks them, as his code does
    import numpy as np

    from lt_lightning.data import ImageNetLTDataModule

    rng = np.random.default_rng(0)
    counts = np.maximum(5, (1280 * 0.004 ** rng.random(1000))).astype(int)
    counts[rng.choice(1000, 200, replace=False)] = 20  # a wide tie across a boundary
    assert len(set(counts.tolist())) < 1000 and np.any(np.diff(counts) > 0)
    _write_split_file(tmp_path / "train.txt", counts.tolist())
    dm = ImageNetLTDataModule(
        data_dir=str(tmp_path),
        train_file="train.txt",
        val_file="train.txt",
        test_file="train.txt",
        shot_group_boundaries=[390, 835],
        check_files=False,
    )
    assert dm.shot_groups == _yangs_groups(counts.tolist(), 390, 835)
    assert [dm.shot_groups.count(g) for g in range(3)] == [390, 445, 165]
    # every many-shot class has at least the count of every medium-shot class, and so on
    g = np.array(dm.shot_groups)
    assert counts[g == 0].min() >= counts[g == 1].max() and counts[g == 1].min() >= counts[g == 2].max()


def test_cifar_ids_that_already_descend_keep_their_order():
    # Yang slices CIFAR-100-LT's raw ids (no renumbering); its tail has ties that a sort could permute
    dm = CIFAR100LTDataModule(data_dir="does-not-exist", imbalance_ratio=100, shot_group_boundaries=[36, 71])
    assert len(set(dm.class_counts)) < 100  # ties exist
    assert dm.shot_groups == spec.shot_groups_from_boundaries(100, [36, 71]).tolist()
