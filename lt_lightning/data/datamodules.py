"""LightningDataModules that supply long-tailed splits with a configurable sampler.

Every datamodule knows ``num_classes`` and ``class_counts`` right after ``__init__`` (LightningCLI links
them into the model before ``setup`` runs), builds its datasets in ``setup``, and offers
``train_eval_dataloader()``: the training set un-augmented and in order, for measurements.

Under DDP the training loader's sampler is one of ours (a ``DistributedSampler`` subclass, so Lightning
leaves it alone): every rank draws the same global epoch from ``(seed, epoch)`` and takes its own
contiguous slice. The evaluation loaders (val, test, train-eval) give each rank a disjoint, unpadded
share, so metrics that sum per-class counts across ranks count every sample exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lt_lightning.data.datasets import (
    ArrayImageDataset,
    SplitFileDataset,
    TensorFeatureDataset,
    read_cifar,
    read_mnist,
    read_split_file,
    read_stl10,
    read_svhn,
)
from lt_lightning.data.device_pipeline import PIPELINES, DeviceLoader, spec_from_transform
from lt_lightning.data.profiles import PROFILES, long_tail_counts, shot_groups
from lt_lightning.data.resumable import ResumableDataLoader
from lt_lightning.data.samplers import BATCH_SAMPLERS, SAMPLERS, DistributedEvalSampler, build_sampler
from lt_lightning.data.splits import long_tail_split
from lt_lightning.data.transforms import (
    NORMALIZATION,
    cifar_transforms,
    imagenet_transforms,
    small_image_transforms,
)

#: names of :data:`~lt_lightning.data.transforms.NORMALIZATION` (the ``normalization`` option's choices)
NORMALIZATIONS = tuple(NORMALIZATION)

__all__ = [
    "CIFAR10LTDataModule",
    "CIFAR100LTDataModule",
    "DigitsLTDataModule",
    "FashionMNISTLTDataModule",
    "INaturalist2018DataModule",
    "ImageNetLTDataModule",
    "LongTailDataModule",
    "MNISTLTDataModule",
    "PlacesLTDataModule",
    "STL10LTDataModule",
    "SVHNLTDataModule",
    "SyntheticLTDataModule",
]


class LongTailDataModule(L.LightningDataModule):
    """Shared machinery: loaders, sampler choice, seed, class counts and shot groups.

    Subclasses set ``self.num_classes`` and ``self.class_counts`` in ``__init__`` and implement
    ``_build_datasets()`` returning ``(train, train_eval, val, test)`` datasets whose ``targets``
    attribute holds the ``[N]`` labels.

    Args:
        batch_size: training batch size per process.
        global_batch_size: if set, the training batch summed over all processes (the papers' batch
            sizes are global): each of the ``world_size`` processes takes ``global_batch_size /
            world_size``, which must divide evenly. Overrides ``batch_size``.
        eval_batch_size: batch size of the evaluation loaders (default: ``batch_size``).
        num_workers: DataLoader workers.
        sampler: ``"instance"``, ``"class"`` (Kang's 4-per-visit round robin), ``"sqrt"``, ``"power"``
            (class probability ∝ n_c^q), ``"progressive"`` or ``"stratified"`` (Markou: every batch holds each
            class in its training proportion, :class:`~lt_lightning.data.samplers.StratifiedBatchSampler`).
        sampler_q: q of the ``"power"`` sampler, in [0, 1].
        samples_per_class: samples per class visit of the ``"class"`` sampler (Kang: 4).
        sampler_epochs: T of the ``"progressive"`` sampler (default: the trainer's ``max_epochs``).
        seed: seed of the split and of the sampler order.
        pin_memory: DataLoader ``pin_memory`` (page-locked host batches for faster GPU copies).
        persistent_workers: keep the DataLoader workers alive between epochs (needs ``num_workers > 0``).
        drop_last: drop the last incomplete training batch of every epoch.
        many_threshold: classes with more training samples than this are many-shot.
        few_threshold: classes with fewer training samples than this are few-shot.
        shot_group_boundaries: ``[medium_start, few_start]`` class indices defining the shot groups by
            class range instead of by count (Yang's CIFAR-100-LT: ``[36, 71]``).
        pipeline: ``"dataloader"`` (default: torchvision transforms in a DataLoader) or ``"device"``
            (in-memory datasets only: the data move once to the training device and each training
            batch is gathered and augmented there, see :mod:`lt_lightning.data.device_pipeline`;
            same samplers, same augmentation distribution).
    """

    num_classes: int
    class_counts: list[int]
    #: whether the training set is in memory, so that ``pipeline="device"`` can hold it on the device
    supports_device_pipeline: bool = True

    def __init__(
        self,
        *,
        batch_size: int = 128,
        global_batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sampler: Literal[SAMPLERS + BATCH_SAMPLERS] = "instance",
        sampler_q: float | None = None,
        samples_per_class: int = 4,
        sampler_epochs: int | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        drop_last: bool = False,
        many_threshold: int = 100,
        few_threshold: int = 20,
        shot_group_boundaries: Sequence[int] | None = None,
        pipeline: Literal[PIPELINES] = "dataloader",
    ) -> None:
        super().__init__()
        if pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {pipeline!r}; valid pipelines: {', '.join(PIPELINES)}")
        if pipeline == "device" and not self.supports_device_pipeline:
            raise ValueError(f"{type(self).__name__} reads images from disk; use pipeline='dataloader'")
        if shot_group_boundaries is not None:
            b = list(shot_group_boundaries)
            if (
                len(b) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in b)
                or not 0 <= b[0] <= b[1]
            ):
                raise ValueError(
                    "shot_group_boundaries must be two class indices [medium_start, few_start] with "
                    f"0 <= medium_start <= few_start (Yang's CIFAR-100-LT: [36, 71]), got {shot_group_boundaries!r}"
                )
        self.shot_group_boundaries = None if shot_group_boundaries is None else list(shot_group_boundaries)
        if sampler not in SAMPLERS + BATCH_SAMPLERS:
            valid = ", ".join(SAMPLERS + BATCH_SAMPLERS)
            raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {valid}")
        if sampler == "power" and (sampler_q is None or not 0.0 <= sampler_q <= 1.0):
            raise ValueError(f"the 'power' sampler needs sampler_q in [0, 1], got {sampler_q!r}")
        if sampler_q is not None and not 0.0 <= sampler_q <= 1.0:
            raise ValueError(f"sampler_q must lie in [0, 1], got {sampler_q!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if global_batch_size is not None and global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
        if samples_per_class < 1:
            raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
        self.batch_size = batch_size
        self.global_batch_size = global_batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.sampler = sampler
        self.sampler_q = sampler_q
        self.samples_per_class = samples_per_class
        self.sampler_epochs = sampler_epochs
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.drop_last = drop_last
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self.pipeline = pipeline
        self.train_dataset: Dataset | None = None
        self.train_eval_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    # ---- facts about the split -------------------------------------------------------------------
    @property
    def shot_groups(self) -> torch.LongTensor:
        """``[K]`` shot group of every class: 0 many, 1 medium, 2 few. From ``shot_group_boundaries`` (class
        index ranges, as Yang's ``head/med/tail_class_idx``) when given, else from the count thresholds."""
        if self.shot_group_boundaries is not None:
            medium, few = self.shot_group_boundaries
            if few > self.num_classes:
                raise ValueError(
                    f"shot_group_boundaries {self.shot_group_boundaries} exceed K={self.num_classes}"
                )
            idx = torch.arange(self.num_classes)
            return (idx >= medium).long() + (idx >= few).long()
        return shot_groups(self.class_counts, self.many_threshold, self.few_threshold)

    @property
    def explicit_shot_groups(self) -> list[int] | None:
        """``[K]`` shot groups when ``shot_group_boundaries`` is given (linked into the model), else None."""
        return None if self.shot_group_boundaries is None else self.shot_groups.tolist()

    @property
    def val_is_test(self) -> bool:
        """True when validation reuses the test split (no ``val_per_class`` / no separate val file):
        anything chosen on validation (τ, α, a checkpoint) would then be chosen on the test set."""
        self.train_dataset_or_setup()
        return self.val_dataset is self.test_dataset

    @property
    def num_train_samples(self) -> int:
        return int(sum(self.class_counts))

    def _set_class_counts(self, counts: list[int]) -> None:
        zero = [c for c, n in enumerate(counts) if n < 1]
        if zero:
            raise ValueError(
                f"classes {zero} would have no training samples (counts {counts}); "
                "lower imbalance_ratio or raise max_count"
            )
        self.num_classes = len(counts)
        self.class_counts = [int(n) for n in counts]

    # ---- building --------------------------------------------------------------------------------
    def _build_datasets(self) -> tuple[Dataset, Dataset, Dataset, Dataset]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train, train_eval, val, test = self._build_datasets()
        realized = torch.bincount(train.targets, minlength=self.num_classes).tolist()
        if realized != self.class_counts:
            raise ValueError(
                f"{type(self).__name__}: the data on disk gives training counts {realized}, "
                f"but the configuration announced {self.class_counts}; check max_count / the data files"
            )
        self.train_dataset, self.train_eval_dataset, self.val_dataset, self.test_dataset = (
            train,
            train_eval,
            val,
            test,
        )

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _loader(
        self, dataset: Dataset, batch_size: int, sampler, drop_last: bool = False, loader_cls=DataLoader
    ) -> DataLoader:
        return loader_cls(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=drop_last,
        )

    def build_train_sampler(self):
        """The training sampler of ``self.sampler`` over the training labels, for this rank."""
        if self.train_dataset is None:
            self.setup("fit")
        num_replicas, rank = self._world()
        epochs = self.sampler_epochs
        if epochs is None and self.sampler == "progressive":
            trainer = getattr(self, "trainer", None)
            epochs = trainer.max_epochs if trainer is not None and trainer.max_epochs else None
            if epochs is None or epochs < 1:
                raise ValueError(
                    "the 'progressive' sampler needs sampler_epochs or a trainer with max_epochs"
                )
        return build_sampler(
            self.sampler,
            self.train_dataset.targets,
            seed=self.seed,
            q=self.sampler_q,
            num_epochs=epochs,
            samples_per_class=self.samples_per_class,
            num_replicas=num_replicas,
            rank=rank,
            num_classes=self.num_classes,
            batch_size=self.train_batch_size() * num_replicas if self.sampler == "stratified" else None,
        )

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        num_replicas, rank = self._world()
        sampler = DistributedEvalSampler(dataset, num_replicas=num_replicas, rank=rank)
        return self._loader(dataset, self.eval_batch_size, sampler)

    def train_batch_size(self) -> int:
        """Per-process training batch size (``global_batch_size / world_size`` when that is set)."""
        if self.global_batch_size is None:
            return self.batch_size
        world, _ = self._world()
        if self.global_batch_size % world:
            raise ValueError(
                f"global_batch_size={self.global_batch_size} is not divisible by the {world} processes"
            )
        return self.global_batch_size // world

    def train_dataloader(self) -> DataLoader | DeviceLoader:
        if self.pipeline == "device":
            return self._device_train_loader()
        sampler = self.build_train_sampler()
        batch_size = self.train_batch_size()
        drop_last = train_drop_last(len(sampler), batch_size, self.drop_last)
        loader = self._loader(
            self.train_dataset_or_setup(), batch_size, sampler, drop_last, loader_cls=ResumableDataLoader
        )
        return self._track_position(loader)

    def _track_position(self, loader):
        """Let ``loader`` read how many batches of the epoch have been trained, for its checkpoint state."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            loader.batches_done = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return loader

    def _device_train_loader(self) -> DeviceLoader:
        dataset = self.train_dataset_or_setup()
        data = getattr(dataset, "images", getattr(dataset, "inputs", None))
        if data is None:
            raise ValueError(f"pipeline='device' needs an in-memory dataset, got {type(dataset).__name__}")
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        sampler = self.build_train_sampler()
        batch_size = self.train_batch_size()
        loader = DeviceLoader(
            data,
            dataset.targets,
            sampler,
            batch_size,
            spec_from_transform(dataset.transform),
            device,
            drop_last=train_drop_last(len(sampler), batch_size, self.drop_last),
            seed=self.seed,
        )
        return self._track_position(loader)

    def train_dataset_or_setup(self) -> Dataset:
        if self.train_dataset is None:
            self.setup("fit")
        return self.train_dataset

    def train_eval_dataloader(self) -> DataLoader:
        """The training set, un-augmented and in order (this rank's unpadded share under DDP)."""
        self.train_dataset_or_setup()
        return self._eval_loader(self.train_eval_dataset)

    def val_dataloader(self) -> DataLoader:
        self.train_dataset_or_setup()
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        self.train_dataset_or_setup()
        return self._eval_loader(self.test_dataset)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def train_drop_last(samples_per_epoch: int, batch_size: int, drop_last: bool) -> bool:
    """The ``drop_last`` a training loader needs for ``samples_per_epoch`` samples per process.

    A last batch of a single sample is dropped (BatchNorm cannot train on one sample, and it would
    crash after the first epoch with a bare error); a batch larger than the epoch with ``drop_last``
    would train nothing and exit 0, so it is an error.

    Raises:
        ValueError: ``drop_last`` and ``batch_size > samples_per_epoch``.
    """
    if drop_last and batch_size > samples_per_epoch:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {samples_per_epoch} training samples per process "
            "and drop_last=True: no training batch would be left; lower batch_size or set drop_last false"
        )
    return drop_last or (samples_per_epoch > 1 and samples_per_epoch % batch_size == 1)


def _resolve_dir(data_dir: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(str(data_dir)))


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
        profile: Literal[PROFILES] = "exp",
        max_count: int | None = None,
        val_per_class: int = 0,
        download: bool = False,
        augment: bool = True,
        normalization: Literal[NORMALIZATIONS] | None = None,
        **kwargs,
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
        self.data_dir = _resolve_dir(data_dir)
        self.imbalance_ratio = float(imbalance_ratio)
        self.profile = profile
        self.max_count = int(max_count or self.default_max_count)
        self.val_per_class = val_per_class
        self.download = download
        self.augment = augment
        wanted = long_tail_counts(self.dataset_num_classes, self.max_count, imbalance_ratio, profile)
        self._wanted_counts = wanted
        if val_per_class and self.train_pool:
            wanted = [min(n, pool - val_per_class) for n, pool in zip(wanted, self.train_pool)]
        self._set_class_counts(wanted)

    # subclass hooks
    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _download(self) -> None:
        raise NotImplementedError

    def _transforms(self):
        raise NotImplementedError

    def prepare_data(self) -> None:
        if self.download:
            self._download()

    def _build_datasets(self):
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
    train_pool = (5000,) * 10

    def _read(self, split):
        return read_cifar(self.data_dir, 10, split)

    def _download(self):
        from torchvision.datasets import CIFAR10

        for train in (True, False):
            CIFAR10(str(self.data_dir), train=train, download=True)

    def _transforms(self):
        return cifar_transforms(self.augment)


class CIFAR100LTDataModule(CIFAR10LTDataModule):
    """CIFAR-100-LT: n_max = 500; r = 100 gives 10,847 training images (35/35/30 many/medium/few)."""

    dataset_num_classes = 100
    default_max_count = 500
    train_pool = (500,) * 100

    def _read(self, split):
        return read_cifar(self.data_dir, 100, split)

    def _download(self):
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
    _norm = "mnist"

    def _read(self, split):
        return read_mnist(self.data_dir, self._folder, split)

    def _download(self):
        from torchvision.datasets import MNIST

        for train in (True, False):
            MNIST(str(self.data_dir), train=train, download=True)

    def _transforms(self):
        return small_image_transforms(
            self.normalization or self._norm, 28, crop_padding=2 if self.augment else 0
        )


class FashionMNISTLTDataModule(MNISTLTDataModule):
    """Fashion-MNIST-LT from ``data_dir/FashionMNIST/raw`` (6,000 images a class)."""

    train_pool = (6000,) * 10
    _folder = "FashionMNIST"
    _norm = "fashion_mnist"

    def _download(self):
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(self.data_dir), train=train, download=True)

    def _transforms(self):
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

    def __init__(self, *args, extra: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.extra = extra
        self._split_counts: dict[str, list[int]] = {}
        if extra:
            if self.val_per_class:
                raise ValueError("SVHN extra=True (Yang's protocol) has no val_per_class split; set it to 0")
            self._cache = {split: self._read(split) for split in ("train", "extra")}
            for split, (_, labels) in self._cache.items():
                self._split_counts[split] = self._yang_counts(labels)
            self._set_class_counts(
                [a + b for a, b in zip(self._split_counts["train"], self._split_counts["extra"])]
            )

    def _yang_counts(self, labels: np.ndarray) -> list[int]:
        available = np.bincount(labels, minlength=10)
        if self.imbalance_ratio == 1:
            return available.tolist()
        img_max = len(labels) / 10
        wanted = [int(img_max * ((1.0 / self.imbalance_ratio) ** (c / 9.0))) for c in range(10)]
        return [min(w, int(a)) for w, a in zip(wanted, available)]

    def _build_datasets(self):
        if not self.extra:
            return super()._build_datasets()
        train_tf, eval_tf = self._transforms()
        parts = []
        for split in ("train", "extra"):
            images, labels = self._cache.pop(split, None) or self._read(split)
            idx, _ = long_tail_split(labels, self._split_counts[split], seed=self.seed)
            parts.append((images[idx], labels[idx]))
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        test = ArrayImageDataset(*self._read("test"), eval_tf)
        train = ArrayImageDataset(images, labels, train_tf)
        return train, ArrayImageDataset(images, labels, eval_tf), test, test

    def _read(self, split):
        return read_svhn(self.data_dir, split)

    def _download(self):
        from torchvision.datasets import SVHN

        for split in ("train", "test", "extra") if self.extra else ("train", "test"):
            SVHN(str(self.data_dir), split=split, download=True)

    def _transforms(self):
        # digits: no horizontal flip
        return small_image_transforms(self.normalization or "svhn", 32, crop_padding=4 if self.augment else 0)


class STL10LTDataModule(_InMemoryLTDataModule):
    """STL-10-LT (Yang et al. report it) from ``data_dir/stl10_binary``; 500 labelled images a class."""

    dataset_num_classes = 10
    default_max_count = 500
    train_pool = (500,) * 10

    def _read(self, split):
        return read_stl10(self.data_dir, split)

    def _download(self):
        from torchvision.datasets import STL10

        for split in ("train", "test"):
            STL10(str(self.data_dir), split=split, download=True)

    def _transforms(self):
        return small_image_transforms(
            self.normalization or "stl10", 96, crop_padding=12 if self.augment else 0, flip=self.augment
        )


class DigitsLTDataModule(LongTailDataModule):
    """The embedded default: scikit-learn's bundled 8×8 digits (1,797 images) made long-tailed.

    Per class (seeded), ``test_per_class`` images form the balanced test set; from the rest the
    long-tailed training split takes ``long_tail_counts(10, max_count, imbalance_ratio, profile)``.
    Inputs are ``[1, 8, 8]`` floats in [0, 1]. Default shot thresholds suit its size: many > 60,
    few < 20 (3 / 3 / 4 classes at the defaults). Runs anywhere, no download, seconds on a CPU.

    Args:
        imbalance_ratio: r = n_max / n_min of the training split.
        profile: long-tail profile, ``"exp"`` or ``"step"``.
        max_count: training images of the head class (at most 174 minus the test and validation ones).
        test_per_class: images per class in the balanced test set.
        val_per_class: images per class in a balanced validation set (0: validate on the test set).
        many_threshold: classes with more training samples than this are many-shot.
        few_threshold: classes with fewer training samples than this are few-shot.
        **kwargs: :class:`LongTailDataModule` arguments.
    """

    def __init__(
        self,
        imbalance_ratio: float = 20.0,
        profile: Literal[PROFILES] = "exp",
        max_count: int = 120,
        test_per_class: int = 50,
        val_per_class: int = 0,
        many_threshold: int = 60,
        few_threshold: int = 20,
        **kwargs,
    ) -> None:
        super().__init__(many_threshold=many_threshold, few_threshold=few_threshold, **kwargs)
        if test_per_class < 1:
            raise ValueError(f"test_per_class must be >= 1, got {test_per_class}")
        self.imbalance_ratio = imbalance_ratio
        self.profile = profile
        self.max_count = max_count
        self.test_per_class = test_per_class
        self.val_per_class = val_per_class
        counts = long_tail_counts(10, max_count, imbalance_ratio, profile)
        pool_min = 174 - test_per_class - val_per_class  # the smallest digit class has 174 images
        if max(counts) > pool_min:
            raise ValueError(
                f"max_count={max_count} is too large: with test_per_class={test_per_class} and "
                f"val_per_class={val_per_class} every class has at least {pool_min} images left"
            )
        self._set_class_counts(counts)

    def _build_datasets(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        inputs = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = np.asarray(digits.target, dtype=np.int64)
        per_class = np.bincount(labels, minlength=10)
        # Hold out a balanced test set first, then draw the long-tailed split from the rest.
        pool_counts = (per_class - self.test_per_class).tolist()
        pool_idx, test_idx = long_tail_split(
            labels, pool_counts, seed=self.seed, val_per_class=self.test_per_class
        )
        train_rel, val_rel = long_tail_split(
            labels[pool_idx], self.class_counts, seed=self.seed + 1, val_per_class=self.val_per_class
        )
        train_idx, val_idx = pool_idx[train_rel], pool_idx[val_rel]
        labels_t = torch.as_tensor(labels)
        train = TensorFeatureDataset(inputs[train_idx], labels_t[train_idx])
        test = TensorFeatureDataset(inputs[test_idx], labels_t[test_idx])
        val = TensorFeatureDataset(inputs[val_idx], labels_t[val_idx]) if self.val_per_class else test
        return train, train, val, test


class SyntheticLTDataModule(LongTailDataModule):
    """Gaussian class clusters with a long-tailed profile, for fast tests and unconstrained-feature work.

    Class centres are random directions of norm ``center_norm`` in ``feature_dim`` dimensions; samples
    are centre + ``noise_std`` · N(0, I). Everything is drawn from one generator seeded by ``seed``.

    Args:
        num_classes: K.
        feature_dim: D, the dimension of the samples.
        max_count: training samples of the head class.
        imbalance_ratio: r = n_max / n_min of the training split.
        profile: long-tail profile, ``"exp"`` or ``"step"``.
        test_per_class: samples per class in the balanced test set.
        val_per_class: samples per class in a balanced validation set (0: validate on the test set).
        center_norm: norm of every class centre.
        noise_std: standard deviation of the isotropic Gaussian noise around each centre.
        **kwargs: :class:`LongTailDataModule` arguments.
    """

    def __init__(
        self,
        num_classes: int = 10,
        feature_dim: int = 32,
        max_count: int = 200,
        imbalance_ratio: float = 20.0,
        profile: Literal[PROFILES] = "exp",
        test_per_class: int = 50,
        val_per_class: int = 0,
        center_norm: float = 3.0,
        noise_std: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        if test_per_class < 1:
            raise ValueError(f"test_per_class must be >= 1, got {test_per_class}")
        self.feature_dim = feature_dim
        self.test_per_class = test_per_class
        self.val_per_class = val_per_class
        self.center_norm = center_norm
        self.noise_std = noise_std
        self._set_class_counts(long_tail_counts(num_classes, max_count, imbalance_ratio, profile))

    def _draw(self, counts: list[int], centers: torch.Tensor, g: torch.Generator) -> TensorFeatureDataset:
        labels = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))
        noise = torch.randn(len(labels), self.feature_dim, generator=g) * self.noise_std
        return TensorFeatureDataset(centers[labels] + noise, labels)

    def _build_datasets(self):
        g = torch.Generator().manual_seed(self.seed)
        centers = torch.randn(self.num_classes, self.feature_dim, generator=g)
        centers = self.center_norm * centers / centers.norm(dim=1, keepdim=True)
        train = self._draw(self.class_counts, centers, g)
        test = self._draw([self.test_per_class] * self.num_classes, centers, g)
        val = self._draw([self.val_per_class] * self.num_classes, centers, g) if self.val_per_class else test
        return train, train, val, test


class _SplitFileLTDataModule(LongTailDataModule):
    """Image root + split files (``<relative path> <label>`` a line, labels 0-based).

    ``class_counts`` comes from the training split file, read in ``__init__``. Split files given as
    relative paths are looked up under ``data_dir`` first. With ``check_files`` every listed image is
    checked to exist in ``setup``.

    Args:
        data_dir: the image root (paths in the split files are relative to it).
        train_file: training split file (default: the dataset's published name, under ``data_dir``).
        val_file: validation split file (default: the dataset's published name).
        test_file: test split file (default: the dataset's published name).
        num_classes: K (default: the dataset's).
        check_files: check in ``setup`` that every listed image exists.
        image_size: side of the square training crop and evaluation centre crop.
        **kwargs: :class:`LongTailDataModule` arguments.
    """

    supports_device_pipeline = False
    default_num_classes: int = 1000
    default_files: tuple[str, str, str] = ("", "", "")
    color_jitter: bool = True
    normalization: str = "imagenet"

    def __init__(
        self,
        data_dir: str = "data",
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        num_classes: int | None = None,
        check_files: bool = True,
        image_size: int = 224,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = _resolve_dir(data_dir)
        k = int(num_classes or self.default_num_classes)
        files = [self._locate(f or d) for f, d in zip((train_file, val_file, test_file), self.default_files)]
        self.train_file, self.val_file, self.test_file = files
        self.check_files = check_files
        self.image_size = image_size
        self._train_split = read_split_file(self.train_file, self.data_dir, k)
        counts = np.bincount(self._train_split[1], minlength=k).tolist()
        self._set_class_counts(counts)

    def _locate(self, name: str) -> Path:
        path = Path(os.path.expanduser(name))
        if not path.is_absolute() and not path.is_file() and (self.data_dir / path).is_file():
            path = self.data_dir / path
        if not path.is_file():
            raise FileNotFoundError(
                f"split file {name!r} not found (looked in the working directory and in {self.data_dir}); "
                "pass train_file/val_file/test_file"
            )
        return path

    def _dataset(self, split: tuple[list[str], np.ndarray], transform) -> SplitFileDataset:
        paths, labels = split
        if self.check_files:
            missing = [p for p in paths if not (self.data_dir / p).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} images listed in the split files are missing under {self.data_dir}, "
                    f"e.g. {missing[0]!r}"
                )
        return SplitFileDataset(self.data_dir, paths, labels, transform)

    def _build_datasets(self):
        train_tf, eval_tf = imagenet_transforms(self.color_jitter, self.normalization, self.image_size)
        k = self.num_classes
        train = self._dataset(self._train_split, train_tf)
        train_eval = SplitFileDataset(self.data_dir, train.paths, train.targets, eval_tf)
        val = self._dataset(read_split_file(self.val_file, self.data_dir, k), eval_tf)
        test = (
            val
            if self.test_file == self.val_file
            else self._dataset(read_split_file(self.test_file, self.data_dir, k), eval_tf)
        )
        return train, train_eval, val, test


class ImageNetLTDataModule(_SplitFileLTDataModule):
    """ImageNet-LT (Liu et al. 2019): 1,000 classes, 115,846 training images; val 20/class, test 50/class."""

    default_num_classes = 1000
    default_files = ("ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt")


class PlacesLTDataModule(_SplitFileLTDataModule):
    """Places-LT: 365 classes, 62,500 training images; val 20/class, test 100/class."""

    default_num_classes = 365
    default_files = ("Places_LT_train.txt", "Places_LT_val.txt", "Places_LT_test.txt")


class INaturalist2018DataModule(_SplitFileLTDataModule):
    """iNaturalist-2018: 8,142 classes, ~437.5k training images. Its 3/class "val" split is the test
    split; validation uses the same file unless ``val_file`` names another. No colour jitter."""

    default_num_classes = 8142
    default_files = ("iNaturalist18_train.txt", "iNaturalist18_val.txt", "iNaturalist18_val.txt")
    color_jitter = False
    normalization = "inat"
