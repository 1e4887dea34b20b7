"""Datamodules over datasets held in memory as uint8 arrays: CIFAR-10/100-LT, MNIST-LT, Fashion-MNIST-LT,
SVHN-LT and STL-10-LT (the long-tailed split of Cao et al., NeurIPS 2019). They support
``pipeline="device"``."""

from __future__ import annotations

from typing import Any

import numpy as np
from torchvision import transforms as T

from lt_lightning.data.datamodules.base import LongTailDataModule, resolve_dir
from lt_lightning.data.datasets import (
    ArrayImageDataset,
    read_cifar,
    read_mnist,
    read_stl10,
    read_svhn,
)
from lt_lightning.data.profiles import PROFILES, ProfileName, long_tail_counts
from lt_lightning.data.splits import long_tail_split
from lt_lightning.data.transforms import (
    NORMALIZATION,
    NormalizationName,
    cifar_transforms,
    small_image_transforms,
)

__all__ = [
    "CIFAR10LTDataModule",
    "CIFAR100LTDataModule",
    "FashionMNISTLTDataModule",
    "MNISTLTDataModule",
    "STL10LTDataModule",
    "SVHNLTDataModule",
]


class _InMemoryLTDataModule(LongTailDataModule):
    """Long-tailed subset of a dataset that fits in memory as uint8 arrays (CIFAR, MNIST, SVHN, STL-10).

    ``class_counts = long_tail_counts(K, max_count, imbalance_ratio, profile)``; with
    ``val_per_class > 0`` the validation set is ``val_per_class`` unused training images per class (a
    class whose count needs them gives them up, see ``long_tail_split``), otherwise validation uses the
    test set, as the original papers do. ``augment=False`` trains on the plain images and
    ``normalization`` names another entry of :data:`~lt_lightning.data.transforms.NORMALIZATION` (e.g.
    ``"half"``, Normalize(0.5, 0.5) for 3-channel sets: Yang's SVHN-LT and STL-10-LT, which also do not
    augment).

    Args:
        data_dir: folder holding (or receiving, with ``download``) the dataset files.
        imbalance_ratio: r = n_max / n_min of the training split (1: balanced).
        profile: long-tail profile, ``"exp"`` (Cao et al.) or ``"step"``.
        max_count: training images of the head class (default: the dataset's per-class size).
        val_per_class: held-out training images per class for validation (0: validate on the test set).
        download: download the dataset into ``data_dir`` if missing (torchvision).
        augment: train with the dataset's usual augmentation (crop and flip); ``False``: plain images.
        normalization: a key of :data:`~lt_lightning.data.transforms.NORMALIZATION` (default: the
            dataset's own mean/std).
        **kwargs: :class:`LongTailDataModule` arguments.
    """

    dataset_num_classes: int = 10
    default_max_count: int = 5000
    #: per-class sizes of the full training set, to announce the counts before reading any file
    train_pool: tuple[int, ...] = ()

    def __init__(
        self,
        data_dir: str = "data",
        imbalance_ratio: float = 100.0,
        profile: ProfileName = "exp",
        max_count: int | None = None,
        val_per_class: int = 0,
        download: bool = False,
        augment: bool = True,
        normalization: NormalizationName | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if normalization is not None and normalization not in NORMALIZATION:
            raise ValueError(
                f"unknown normalization {normalization!r}; valid: {', '.join(NORMALIZATION)} (None: the dataset's own)"
            )
        self.normalization = normalization
        if not imbalance_ratio >= 1:
            raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio!r}")
        if profile not in PROFILES:
            raise ValueError(f"unknown long-tail profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
        if val_per_class < 0:
            raise ValueError(f"val_per_class must be >= 0, got {val_per_class}")
        self.data_dir = resolve_dir(data_dir)
        self.imbalance_ratio = float(imbalance_ratio)
        self.profile = profile
        self.max_count = int(max_count or self.default_max_count)
        self.val_per_class = val_per_class
        self.download = download
        self.augment = augment
        self._wanted_counts = long_tail_counts(
            self.dataset_num_classes, self.max_count, imbalance_ratio, profile
        )
        self._set_class_counts(self._announced_counts())

    def _announced_counts(self) -> list[int]:
        """The training counts, known before any file is read: the profile's, capped by ``train_pool``
        minus the validation images when ``val_per_class`` takes them from a class's pool."""
        wanted = self._wanted_counts
        if self.val_per_class and self.train_pool:
            wanted = [min(n, pool - self.val_per_class) for n, pool in zip(wanted, self.train_pool)]
        return wanted

    # subclass hooks
    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _download(self) -> None:
        raise NotImplementedError

    def _transforms(self) -> tuple[T.Compose, T.Compose]:
        raise NotImplementedError

    def prepare_data(self) -> None:
        if self.download:
            self._download()

    def _build_datasets(
        self,
    ) -> tuple[ArrayImageDataset, ArrayImageDataset, ArrayImageDataset, ArrayImageDataset]:
        train_tf, eval_tf = self._transforms()
        images, labels = self._read("train")
        train_idx, val_idx = long_tail_split(
            labels, self._wanted_counts, seed=self.seed, val_per_class=self.val_per_class
        )
        test_images, test_labels = self._read("test")
        test = ArrayImageDataset(test_images, test_labels, eval_tf)
        train = ArrayImageDataset(images[train_idx], labels[train_idx], train_tf)
        train_eval = ArrayImageDataset(train.images, train.targets, eval_tf)
        val = ArrayImageDataset(images[val_idx], labels[val_idx], eval_tf) if self.val_per_class else test
        return train, train_eval, val, test


class CIFAR10LTDataModule(_InMemoryLTDataModule):
    """CIFAR-10-LT (Cao et al. 2019): n_max = 5000; r = 100 gives 12,406 training images.

    Reads torchvision's extracted ``cifar-10-batches-py`` folder under ``data_dir``.
    """

    dataset_num_classes = 10
    default_max_count = 5000
    train_pool: tuple[int, ...] = (5000,) * 10

    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_cifar(self.data_dir, 10, split)

    def _download(self) -> None:
        from torchvision.datasets import CIFAR10

        for train in (True, False):
            CIFAR10(str(self.data_dir), train=train, download=True)

    def _transforms(self) -> tuple[T.Compose, T.Compose]:
        return cifar_transforms(self.augment)


class CIFAR100LTDataModule(CIFAR10LTDataModule):
    """CIFAR-100-LT: n_max = 500; r = 100 gives 10,847 training images (35/35/30 many/medium/few)."""

    dataset_num_classes = 100
    default_max_count = 500
    train_pool: tuple[int, ...] = (500,) * 100

    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_cifar(self.data_dir, 100, split)

    def _download(self) -> None:
        from torchvision.datasets import CIFAR100

        for train in (True, False):
            CIFAR100(str(self.data_dir), train=train, download=True)


class MNISTLTDataModule(_InMemoryLTDataModule):
    """MNIST-LT from ``data_dir/MNIST/raw`` (IDX files). ``imbalance_ratio=1`` gives balanced MNIST
    (5,000 a class by default; the smallest class has 5,421)."""

    dataset_num_classes = 10
    default_max_count = 5000
    train_pool = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
    _folder = "MNIST"
    _norm: NormalizationName = "mnist"

    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_mnist(self.data_dir, self._folder, split)

    def _download(self) -> None:
        from torchvision.datasets import MNIST

        for train in (True, False):
            MNIST(str(self.data_dir), train=train, download=True)

    def _transforms(self) -> tuple[T.Compose, T.Compose]:
        return small_image_transforms(
            self.normalization or self._norm, 28, crop_padding=2 if self.augment else 0
        )


class FashionMNISTLTDataModule(MNISTLTDataModule):
    """Fashion-MNIST-LT from ``data_dir/FashionMNIST/raw`` (6,000 images a class)."""

    train_pool = (6000,) * 10
    _folder = "FashionMNIST"
    _norm = "fashion_mnist"

    def _download(self) -> None:
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(self.data_dir), train=train, download=True)

    def _transforms(self) -> tuple[T.Compose, T.Compose]:
        return small_image_transforms(
            self.normalization or self._norm, 28, crop_padding=2 if self.augment else 0, flip=self.augment
        )


class SVHNLTDataModule(_InMemoryLTDataModule):
    """SVHN-LT (Yang et al. report it) from ``data_dir/{train,test}_32x32.mat``; n_max = 4,000.

    ``extra=True`` is Yang's protocol (``datasets/svhn.py``): the ``train`` and ``extra`` splits (also
    ``extra_32x32.mat``) are each made long-tailed on their own, class c keeping
    ``min(int(len(split) / 10 * r^(-c/9)), available)`` images (first of the seed's per-class shuffle), and
    concatenated; ``imbalance_ratio=1`` keeps both splits whole. The class counts need the label files,
    so they are read at construction; ``max_count``/``profile``/``val_per_class`` do not apply.

    Args:
        extra: Yang's protocol: also use the ``extra`` split, each split made long-tailed on its own.
        **kwargs: :class:`_InMemoryLTDataModule` arguments.
    """

    dataset_num_classes = 10
    default_max_count = 4000
    train_pool = (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659)

    def __init__(self, *args: Any, extra: bool = False, **kwargs: Any) -> None:
        self.extra = extra  # read by _announced_counts, which the parent's __init__ calls
        self._split_counts: dict[str, list[int]] = {}
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        super().__init__(*args, **kwargs)

    def _announced_counts(self) -> list[int]:
        if not self.extra:
            return super()._announced_counts()
        if self.val_per_class:
            raise ValueError("SVHN extra=True (Yang's protocol) has no val_per_class split; set it to 0")
        self._cache = {split: self._read(split) for split in ("train", "extra")}
        for split, (_, labels) in self._cache.items():
            self._split_counts[split] = self._yang_counts(labels)
        return [a + b for a, b in zip(self._split_counts["train"], self._split_counts["extra"])]

    def _yang_counts(self, labels: np.ndarray) -> list[int]:
        available = np.bincount(labels, minlength=10)
        if self.imbalance_ratio == 1:
            return available.tolist()
        img_max = len(labels) / 10
        wanted = [int(img_max * ((1.0 / self.imbalance_ratio) ** (c / 9.0))) for c in range(10)]
        return [min(w, int(a)) for w, a in zip(wanted, available)]

    def _build_datasets(
        self,
    ) -> tuple[ArrayImageDataset, ArrayImageDataset, ArrayImageDataset, ArrayImageDataset]:
        if not self.extra:
            return super()._build_datasets()
        train_tf, eval_tf = self._transforms()
        parts = []
        for split in ("train", "extra"):
            images, labels = self._cache.pop(split) if split in self._cache else self._read(split)
            idx, _ = long_tail_split(labels, self._split_counts[split], seed=self.seed)
            parts.append((images[idx], labels[idx]))
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        test = ArrayImageDataset(*self._read("test"), eval_tf)
        train = ArrayImageDataset(images, labels, train_tf)
        return train, ArrayImageDataset(images, labels, eval_tf), test, test

    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_svhn(self.data_dir, split)

    def _download(self) -> None:
        from torchvision.datasets import SVHN

        for split in ("train", "test", "extra") if self.extra else ("train", "test"):
            SVHN(str(self.data_dir), split=split, download=True)

    def _transforms(self) -> tuple[T.Compose, T.Compose]:
        # digits: no horizontal flip
        return small_image_transforms(self.normalization or "svhn", 32, crop_padding=4 if self.augment else 0)


class STL10LTDataModule(_InMemoryLTDataModule):
    """STL-10-LT (Yang et al. report it) from ``data_dir/stl10_binary``; 500 labelled images a class."""

    dataset_num_classes = 10
    default_max_count = 500
    train_pool = (500,) * 10

    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_stl10(self.data_dir, split)

    def _download(self) -> None:
        from torchvision.datasets import STL10

        for split in ("train", "test"):
            STL10(str(self.data_dir), split=split, download=True)

    def _transforms(self) -> tuple[T.Compose, T.Compose]:
        return small_image_transforms(
            self.normalization or "stl10", 96, crop_padding=12 if self.augment else 0, flip=self.augment
        )
