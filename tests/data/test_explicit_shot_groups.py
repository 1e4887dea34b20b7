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


# ---- Yang's SVHN-LT / STL-10-LT input pipeline: no augmentation, Normalize(0.5, 0.5) (issue 8 item 10) ----


@pytest.mark.parametrize("name", ["svhn", "stl10"])
def test_yang_pipeline_no_augment_and_half_normalisation(tmp_path, name):
    import numpy as np

    from lt_lightning.data import STL10LTDataModule, SVHNLTDataModule
    from tests.data import formats

    cls, writer = (
        (SVHNLTDataModule, formats.write_svhn) if name == "svhn" else (STL10LTDataModule, formats.write_stl10)
    )
    writer(tmp_path, 12, 2)
    dm = cls(data_dir=str(tmp_path), imbalance_ratio=5, max_count=10, augment=False, normalization="half")
    dm.setup("fit")
    ds = dm.train_dataset
    x0, _ = ds[0]
    x1, _ = ds[0]
    assert torch.equal(x0, x1)  # no random augmentation
    raw = torch.as_tensor(np.asarray(ds.images[0]), dtype=torch.float32).permute(2, 0, 1) / 255.0
    torch.testing.assert_close(x0, (raw - 0.5) / 0.5)  # transforms.Normalize(mean=[0.5]*3, std=[0.5]*3)
    with pytest.raises(ValueError, match="normalization"):
        cls(data_dir=str(tmp_path), normalization="bogus")


def _write_svhn_split(root, split, counts, seed):
    import numpy as np
    import scipy.io

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), counts))
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    stored = np.where(labels == 0, 10, labels).reshape(-1, 1)  # SVHN stores digit 0 as 10
    scipy.io.savemat(str(root / f"{split}_32x32.mat"), {"X": images.transpose(1, 2, 3, 0), "y": stored})
    return images, labels


def test_svhn_extra_is_yangs_train_plus_extra_each_long_tailed(tmp_path):
    import numpy as np

    from lt_lightning.data import SVHNLTDataModule

    train = _write_svhn_split(tmp_path, "train", [30, 50, 40, 20, 25, 22, 18, 15, 12, 10], 1)
    extra = _write_svhn_split(tmp_path, "extra", [90, 60, 80, 70, 50, 40, 44, 30, 36, 20], 2)
    _write_svhn_split(tmp_path, "test", [3] * 10, 3)
    dm = SVHNLTDataModule(data_dir=str(tmp_path), imbalance_ratio=10, extra=True, augment=False, seed=0)

    # Yang's datasets/svhn.py, per split: np.random.seed(0); for each class in order, shuffle its indices and keep
    # the first int(len(split)/10 * 0.1**(c/9)) (fewer when the class has fewer)
    def yang(images, labels):
        np.random.seed(0)
        img_max = len(labels) / 10
        keep = []
        for c in range(10):
            idx = np.where(labels == c)[0]
            np.random.shuffle(idx)
            keep.append(idx[: int(img_max * (0.1 ** (c / 9.0)))])
        keep = np.concatenate(keep)
        return images[keep], labels[keep]

    ref = [yang(*train), yang(*extra)]
    ref_images = np.concatenate([r[0] for r in ref])
    ref_labels = np.concatenate([r[1] for r in ref])
    assert dm.class_counts == np.bincount(ref_labels, minlength=10).tolist()
    dm.setup("fit")
    assert np.array_equal(np.asarray(dm.train_dataset.images), ref_images)
    assert np.array_equal(np.asarray(dm.train_dataset.targets), ref_labels)
    with pytest.raises(ValueError, match="val_per_class"):
        SVHNLTDataModule(data_dir=str(tmp_path), extra=True, val_per_class=2)
