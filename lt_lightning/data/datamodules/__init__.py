"""LightningDataModules that supply long-tailed splits with a configurable sampler.

One file per family: :mod:`~lt_lightning.data.datamodules.base` (:class:`LongTailDataModule`: loaders,
sampler choice, the run's facts), :mod:`~lt_lightning.data.datamodules.in_memory` (CIFAR-10/100,
MNIST, Fashion-MNIST, SVHN, STL-10), :mod:`~lt_lightning.data.datamodules.split_files` (ImageNet-LT,
Places-LT, iNaturalist-2018) and :mod:`~lt_lightning.data.datamodules.small` (digits, synthetic).
"""

from __future__ import annotations

from lt_lightning.data.datamodules.base import LongTailDataModule, train_drop_last
from lt_lightning.data.datamodules.in_memory import (
    CIFAR10LTDataModule,
    CIFAR100LTDataModule,
    FashionMNISTLTDataModule,
    MNISTLTDataModule,
    STL10LTDataModule,
    SVHNLTDataModule,
)
from lt_lightning.data.datamodules.small import DigitsLTDataModule, SyntheticLTDataModule
from lt_lightning.data.datamodules.split_files import (
    ImageNetLTDataModule,
    INaturalist2018DataModule,
    PlacesLTDataModule,
)

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
    "train_drop_last",
]
