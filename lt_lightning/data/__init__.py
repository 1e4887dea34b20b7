"""Long-tailed data: class-count profiles, splits, samplers, datasets and LightningDataModules.

Names are imported lazily (PEP 562) so that ``lt_lightning.data.profiles`` stays importable without
pulling in Lightning and torchvision.
"""

from __future__ import annotations

import importlib

_LOCATIONS = {
    "CIFAR10LTDataModule": "datamodules",
    "CIFAR100LTDataModule": "datamodules",
    "DigitsLTDataModule": "datamodules",
    "FashionMNISTLTDataModule": "datamodules",
    "INaturalist2018DataModule": "datamodules",
    "ImageNetLTDataModule": "datamodules",
    "LongTailDataModule": "datamodules",
    "MNISTLTDataModule": "datamodules",
    "PlacesLTDataModule": "datamodules",
    "STL10LTDataModule": "datamodules",
    "SVHNLTDataModule": "datamodules",
    "SyntheticLTDataModule": "datamodules",
    "long_tail_counts": "profiles",
    "shot_groups": "profiles",
    "SAMPLERS": "samplers",
    "ClassBalancedSampler": "samplers",
    "DistributedEvalSampler": "samplers",
    "InstanceBalancedSampler": "samplers",
    "LongTailSampler": "samplers",
    "PowerSampler": "samplers",
    "ProgressivelyBalancedSampler": "samplers",
    "SquareRootSampler": "samplers",
    "build_sampler": "samplers",
    "long_tail_split": "splits",
}

__all__ = [
    "SAMPLERS",
    "CIFAR10LTDataModule",
    "CIFAR100LTDataModule",
    "ClassBalancedSampler",
    "DigitsLTDataModule",
    "DistributedEvalSampler",
    "FashionMNISTLTDataModule",
    "INaturalist2018DataModule",
    "ImageNetLTDataModule",
    "InstanceBalancedSampler",
    "LongTailDataModule",
    "LongTailSampler",
    "MNISTLTDataModule",
    "PlacesLTDataModule",
    "PowerSampler",
    "ProgressivelyBalancedSampler",
    "STL10LTDataModule",
    "SVHNLTDataModule",
    "SquareRootSampler",
    "SyntheticLTDataModule",
    "build_sampler",
    "long_tail_counts",
    "long_tail_split",
    "shot_groups",
]


def __getattr__(name: str):
    if name in _LOCATIONS:
        value = getattr(importlib.import_module(f"lt_lightning.data.{_LOCATIONS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lt_lightning.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LOCATIONS))
