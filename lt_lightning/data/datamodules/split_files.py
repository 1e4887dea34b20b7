"""Datamodules over an image root and split files (``<relative path> <label>`` a line): ImageNet-LT,
Places-LT and iNaturalist-2018. The class counts come from the training split file, read in
``__init__``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lt_lightning.data.datamodules.base import LongTailDataModule, resolve_dir
from lt_lightning.data.datasets import SplitFileDataset, read_split_file
from lt_lightning.data.transforms import NormalizationName, imagenet_transforms

__all__ = ["INaturalist2018DataModule", "ImageNetLTDataModule", "PlacesLTDataModule"]


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
    normalization: NormalizationName = "imagenet"

    def __init__(
        self,
        data_dir: str = "data",
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        num_classes: int | None = None,
        check_files: bool = True,
        image_size: int = 224,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = resolve_dir(data_dir)
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

    def _dataset(self, split: tuple[list[str], np.ndarray], transform: Any) -> SplitFileDataset:
        paths, labels = split
        if self.check_files:
            missing = [p for p in paths if not (self.data_dir / p).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} images listed in the split files are missing under {self.data_dir}, "
                    f"e.g. {missing[0]!r}"
                )
        return SplitFileDataset(self.data_dir, paths, labels, transform)

    def _build_datasets(
        self,
    ) -> tuple[SplitFileDataset, SplitFileDataset, SplitFileDataset, SplitFileDataset]:
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
