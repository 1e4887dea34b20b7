"""Datamodules on tiny datasets written in the real on-disk formats."""

from pathlib import Path
from typing import get_args, get_type_hints

import numpy as np
import pytest
import torch

from lt_lightning.data import (
    CIFAR10LTDataModule,
    CIFAR100LTDataModule,
    DigitsLTDataModule,
    FashionMNISTLTDataModule,
    ImageNetLTDataModule,
    INaturalist2018DataModule,
    MNISTLTDataModule,
    PlacesLTDataModule,
    STL10LTDataModule,
    SVHNLTDataModule,
    SyntheticLTDataModule,
    long_tail_counts,
    long_tail_split,
)
from lt_lightning.data.datamodules.base import LongTailDataModule
from lt_lightning.data.datamodules.small import DIGITS_PER_CLASS
from lt_lightning.data.device_pipeline import PIPELINES, PipelineName
from lt_lightning.data.profiles import PROFILES, ProfileName
from lt_lightning.data.samplers import SAMPLERS, SamplerName
from lt_lightning.data.transforms import NORMALIZATION, NormalizationName
from tests.data import formats


def _labels_of(loader):
    return torch.cat([y for _, y in loader])


def test_cifar10_lt_counts_known_before_setup_and_published_totals():
    dm = CIFAR10LTDataModule(data_dir="does-not-exist", imbalance_ratio=100)
    assert dm.num_classes == 10 and sum(dm.class_counts) == 12406
    assert torch.bincount(torch.tensor(dm.shot_groups), minlength=3).tolist() == [8, 2, 0]
    dm100 = CIFAR100LTDataModule(data_dir="does-not-exist", imbalance_ratio=100)
    assert sum(dm100.class_counts) == 10847
    assert torch.bincount(torch.tensor(dm100.shot_groups), minlength=3).tolist() == [35, 35, 30]


def test_cifar10_lt_on_disk(tmp_path):
    written = formats.write_cifar(tmp_path, 10, train_per_class=30, test_per_class=4)
    dm = CIFAR10LTDataModule(
        data_dir=str(tmp_path), imbalance_ratio=10, max_count=20, batch_size=16, val_per_class=5
    )
    dm.setup("fit")
    counts = long_tail_counts(10, 20, 10)
    assert dm.class_counts == counts
    images, labels = written["train"]
    # the training images are exactly the seeded LT subset of the on-disk images
    train_idx, val_idx = long_tail_split(labels, counts, seed=0, val_per_class=5)
    np.testing.assert_array_equal(dm.train_dataset.images, images[train_idx])
    np.testing.assert_array_equal(dm.val_dataset.images, images[val_idx])
    assert len(dm.test_dataset) == 40
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)
    # un-augmented, in-order view of the training set
    ev = _labels_of(dm.train_eval_dataloader())
    assert torch.equal(ev, dm.train_dataset.targets)
    xe, _ = next(iter(dm.train_eval_dataloader()))
    xe2, _ = next(iter(dm.train_eval_dataloader()))
    assert torch.equal(xe, xe2)
    assert torch.bincount(_labels_of(dm.val_dataloader()), minlength=10).tolist() == [5] * 10


def test_cifar100_lt_on_disk_val_defaults_to_test(tmp_path):
    formats.write_cifar(tmp_path, 100, train_per_class=6, test_per_class=1)
    dm = CIFAR100LTDataModule(data_dir=str(tmp_path), imbalance_ratio=5, max_count=5, batch_size=8)
    dm.setup()
    assert len(dm.train_dataset) == sum(long_tail_counts(100, 5, 5))
    assert dm.val_dataset is dm.test_dataset and len(dm.test_dataset) == 100


@pytest.mark.parametrize(
    ("cls", "writer", "shape"),
    [
        (MNISTLTDataModule, lambda p: formats.write_mnist(p, "MNIST", 12, 2), (1, 28, 28)),
        (FashionMNISTLTDataModule, lambda p: formats.write_mnist(p, "FashionMNIST", 12, 2), (1, 28, 28)),
        (SVHNLTDataModule, lambda p: formats.write_svhn(p, 12, 2), (3, 32, 32)),
        (STL10LTDataModule, lambda p: formats.write_stl10(p, 12, 2), (3, 96, 96)),
    ],
)
def test_other_torchvision_formats(tmp_path, cls, writer, shape):
    written = writer(tmp_path)
    dm = cls(data_dir=str(tmp_path), imbalance_ratio=5, max_count=10, batch_size=4)
    dm.setup()
    assert torch.bincount(dm.train_dataset.targets, minlength=10).tolist() == long_tail_counts(10, 10, 5)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, *shape)
    assert len(dm.test_dataset) == 20
    # ratio 1 gives the balanced sets the NC papers use
    bal = cls(data_dir=str(tmp_path), imbalance_ratio=1, max_count=12)
    bal.setup()
    assert bal.class_counts == [12] * 10
    np.testing.assert_array_equal(
        np.sort(bal.train_dataset.images.reshape(120, -1), axis=0),
        np.sort(written["train"][0].reshape(120, -1), axis=0),
    )


def _write_split_dataset(root, k, counts, val_per_class, test_per_class):
    train = np.repeat(np.arange(k), counts)
    formats.write_image_folder(root, "train.txt", train, seed=1)
    formats.write_image_folder(root, "val.txt", np.repeat(np.arange(k), val_per_class), seed=2)
    formats.write_image_folder(root, "test.txt", np.repeat(np.arange(k), test_per_class), seed=3)


@pytest.mark.parametrize("cls", [ImageNetLTDataModule, PlacesLTDataModule, INaturalist2018DataModule])
def test_split_file_datamodules(tmp_path, cls):
    _write_split_dataset(tmp_path, 3, [5, 3, 1], 2, 2)
    dm = cls(
        data_dir=str(tmp_path),
        train_file="train.txt",
        val_file="val.txt",
        test_file="test.txt",
        num_classes=3,
        batch_size=2,
        image_size=32,
    )
    assert dm.class_counts == [5, 3, 1]  # known from the split file before setup
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 32, 32)
    assert _labels_of(dm.val_dataloader()).tolist() == [0, 0, 1, 1, 2, 2]
    assert _labels_of(dm.train_eval_dataloader()).tolist() == [0] * 5 + [1] * 3 + [2]


def test_split_file_errors(tmp_path):
    _write_split_dataset(tmp_path, 3, [2, 2, 2], 1, 1)
    common = {"data_dir": str(tmp_path), "val_file": "val.txt", "test_file": "test.txt"}
    with pytest.raises(FileNotFoundError, match="split file 'nope.txt' not found"):
        ImageNetLTDataModule(train_file="nope.txt", num_classes=3, **common)
    with pytest.raises(ValueError, match=r"label 2 outside 0\.\.1"):
        ImageNetLTDataModule(train_file="train.txt", num_classes=2, **common)
    with pytest.raises(ValueError, match=r"classes \[3\] would have no training samples"):
        ImageNetLTDataModule(train_file="train.txt", num_classes=4, **common)
    (tmp_path / "train" / "c0" / "0.png").unlink()
    dm = ImageNetLTDataModule(train_file="train.txt", num_classes=3, **common)
    with pytest.raises(FileNotFoundError, match=r"1 images listed .* missing .*0\.png"):
        dm.setup()


def test_missing_data_dir_without_download(tmp_path):
    dm = CIFAR10LTDataModule(data_dir=str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="download=True"):
        dm.setup()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"imbalance_ratio": 0.5}, "imbalance_ratio must be >= 1"),
        ({"profile": "cosine"}, "unknown long-tail profile 'cosine'"),
        ({"sampler": "balanced"}, "unknown sampler 'balanced'"),
        ({"sampler": "power"}, r"sampler_q in \[0, 1\]"),
        ({"sampler": "power", "sampler_q": 1.5}, r"sampler_q in \[0, 1\]"),
        ({"imbalance_ratio": 10000, "max_count": 100}, r"classes \[.*\] would have no training samples"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CIFAR10LTDataModule(data_dir="x", **kwargs)


def test_digits_default_runs_anywhere():
    dm = DigitsLTDataModule(batch_size=32, seed=0)
    assert dm.class_counts == long_tail_counts(10, 120, 20)
    assert torch.bincount(torch.tensor(dm.shot_groups), minlength=3).tolist() == [3, 3, 4]
    dm.setup()
    assert torch.bincount(dm.train_dataset.targets).tolist() == dm.class_counts
    assert torch.bincount(dm.test_dataset.targets).tolist() == [50] * 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    # train and test are disjoint images of the bundled set
    train = {tuple(v.flatten().tolist()) for v in dm.train_dataset.inputs}
    test = [tuple(v.flatten().tolist()) for v in dm.test_dataset.inputs]
    overlap = sum(t in train for t in test)
    assert overlap < 5  # the bundled set has a handful of duplicate images, never a shared index
    other = DigitsLTDataModule(seed=1)
    other.setup()
    assert not torch.equal(other.train_dataset.inputs, dm.train_dataset.inputs)


def test_digits_too_large_max_count():
    with pytest.raises(ValueError, match="max_count=150.*digit 0 for 200 images; it has 178"):
        DigitsLTDataModule(max_count=150)


def test_digits_validation_fits_per_class_and_leaves_training_unchanged():
    # digit 0 (178 images) trains on 120 and tests on 50: 8 spare, the most any class can give
    from sklearn.datasets import load_digits

    assert tuple(np.bincount(load_digits().target)) == DIGITS_PER_CLASS
    with pytest.raises(ValueError, match="at most 8 validation images per class fit"):
        DigitsLTDataModule(val_per_class=9)
    plain, held = DigitsLTDataModule(), DigitsLTDataModule(val_per_class=8)
    plain.setup()
    held.setup()
    assert torch.equal(plain.train_dataset.inputs, held.train_dataset.inputs)
    assert torch.equal(plain.test_dataset.inputs, held.test_dataset.inputs)
    assert torch.bincount(held.val_dataset.targets, minlength=10).tolist() == [8] * 10


def test_synthetic_datamodule_profile_and_determinism():
    dm = SyntheticLTDataModule(num_classes=5, feature_dim=8, max_count=40, imbalance_ratio=10, seed=3)
    dm.setup()
    assert torch.bincount(dm.train_dataset.targets).tolist() == long_tail_counts(5, 40, 10)
    dm2 = SyntheticLTDataModule(num_classes=5, feature_dim=8, max_count=40, imbalance_ratio=10, seed=3)
    dm2.setup()
    assert torch.equal(dm.train_dataset.inputs, dm2.train_dataset.inputs)
    assert dm.train_dataset.inputs.shape == (sum(dm.class_counts), 8)


def test_option_names_are_written_once_as_literals_and_tables_follow_them():
    assert PIPELINES == get_args(PipelineName) == ("dataloader", "device")
    assert PROFILES == get_args(ProfileName) == ("exp", "step")
    assert tuple(NORMALIZATION) == get_args(NormalizationName)
    assert tuple(SAMPLERS) == get_args(SamplerName)
    hints = get_type_hints(LongTailDataModule.__init__)
    assert hints["sampler"] == SamplerName and hints["pipeline"] == PipelineName
    in_memory = get_type_hints(CIFAR10LTDataModule.__init__)
    assert in_memory["profile"] == ProfileName and in_memory["normalization"] == NormalizationName | None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pipeline": "gpu"}, "unknown pipeline 'gpu'; valid pipelines: dataloader, device"),
        ({"normalization": "bogus"}, "unknown normalization 'bogus'; valid: cifar, imagenet"),
        ({"profile": "cosine"}, "unknown long-tail profile 'cosine'; valid profiles: exp, step"),
        ({"sampler": "x"}, "valid samplers: instance, class, sqrt, power, progressive, stratified"),
    ],
)
def test_unknown_option_names_list_the_valid_ones(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CIFAR10LTDataModule(data_dir="x", **kwargs)


def test_str_builds_nothing():
    dm = SyntheticLTDataModule(num_classes=3, max_count=20, pipeline="device")
    assert str(dm).startswith("SyntheticLTDataModule(num_classes=3, train samples=")
    assert dm.train_dataset is None  # Lightning's __str__ would run setup and build every loader


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_sampler_choice_reaches_the_loader(sampler):
    dm = SyntheticLTDataModule(
        num_classes=4,
        max_count=64,
        imbalance_ratio=16,
        sampler=sampler,
        sampler_q=0.5 if sampler == "power" else None,
        sampler_epochs=3,
        batch_size=1000 if sampler != "stratified" else 10,
    )
    dm.setup()
    loader = dm.train_dataloader()
    assert type(loader.sampler) is SAMPLERS[sampler]
    n = sum(dm.class_counts) if sampler != "stratified" else sum(dm.class_counts) // 10 * 10
    assert len(loader.sampler) == n
    labels = _labels_of(loader)
    assert len(labels) == n
    if sampler == "instance":
        assert torch.equal(torch.sort(labels).values, torch.sort(dm.train_dataset.targets).values)
    if sampler == "class":
        counts = torch.bincount(labels, minlength=4)
        assert counts.max() - counts.min() <= 4  # round robin, 4 per visit


def test_eval_loaders_shard_without_padding():
    dm = SyntheticLTDataModule(num_classes=3, max_count=11, imbalance_ratio=2, batch_size=4)
    dm.setup()
    n = len(dm.train_dataset)
    shards = []
    for rank in range(3):
        dm._world = lambda rank=rank: (3, rank)
        shards.append(_labels_of(dm.train_eval_dataloader()))
    assert sum(len(s) for s in shards) == n  # nothing padded, nothing dropped
    assert torch.equal(torch.sort(torch.cat(shards)).values, torch.sort(dm.train_dataset.targets).values)


def test_global_batch_size_splits_over_processes():
    dm = SyntheticLTDataModule(num_classes=3, max_count=40, global_batch_size=12)
    dm.setup()
    assert dm.train_dataloader().batch_size == 12
    dm._world = lambda: (4, 1)
    assert dm.train_dataloader().batch_size == 3
    dm._world = lambda: (5, 1)
    with pytest.raises(ValueError, match="global_batch_size=12 is not divisible by the 5 processes"):
        dm.train_dataloader()


def test_batch_size_and_global_batch_size_are_one_or_the_other():
    with pytest.raises(ValueError, match=r"batch_size=8 \(per process\) and global_batch_size=16"):
        SyntheticLTDataModule(num_classes=3, max_count=40, batch_size=8, global_batch_size=16)
    dm = SyntheticLTDataModule(num_classes=3, max_count=40)  # neither: 128 per process
    assert dm.train_batch_size() == 128 and dm.eval_batch_size == 128
    dm = SyntheticLTDataModule(num_classes=3, max_count=40, global_batch_size=16)
    assert dm.batch_size is None and dm.eval_batch_size == 16


def test_the_digits_configs_keep_their_global_batch_under_ddp():
    from lt_lightning.cli import build_cli

    config = Path(__file__).parents[2] / "configs/digits_lt/joint.yaml"
    cli = build_cli(["-c", str(config), "--trainer.logger", "false"], run=False)
    dm = cli.datamodule
    assert dm.global_batch_size == 32 and dm.batch_size is None
    dm.setup("fit")
    for world in (1, 2, 4):
        dm._world = lambda world=world: (world, 0)
        assert dm.train_batch_size() * world == 32


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
