"""Long-tailed data: class-count profiles, splits, samplers, datasets, loaders, mixup and LightningDataModules.

Submodules: :mod:`~lt_lightning.data.profiles` (counts), :mod:`~lt_lightning.data.splits`,
:mod:`~lt_lightning.data.samplers` (the table of named samplers), :mod:`~lt_lightning.data.datasets`,
:mod:`~lt_lightning.data.transforms`, :mod:`~lt_lightning.data.device_pipeline`,
:mod:`~lt_lightning.data.loading` (the mid-epoch resume position), :mod:`~lt_lightning.data.augment`
(mixup) and :mod:`~lt_lightning.data.datamodules`. The shot-group rule is :mod:`lt_lightning.spec`'s;
``shot_groups`` here is that function.
"""

from __future__ import annotations

from lt_lightning.data.augment import Mixup, mixup_batch, mixup_generator
from lt_lightning.data.datamodules import (
    CIFAR10LTDataModule,
    CIFAR100LTDataModule,
    DigitsLTDataModule,
    FashionMNISTLTDataModule,
    ImageNetLTDataModule,
    INaturalist2018DataModule,
    LongTailDataModule,
    MNISTLTDataModule,
    PlacesLTDataModule,
    STL10LTDataModule,
    SVHNLTDataModule,
    SyntheticLTDataModule,
)
from lt_lightning.data.datasets import (
    ArrayImageDataset,
    LabelledDataset,
    SplitFileDataset,
    TensorFeatureDataset,
)
from lt_lightning.data.device_pipeline import PIPELINES, AugmentSpec, DeviceLoader, PipelineName
from lt_lightning.data.loading import ResumableDataLoader, ResumePosition
from lt_lightning.data.profiles import PROFILES, ProfileName, long_tail_counts
from lt_lightning.data.samplers import (
    SAMPLER_NAMES,
    SAMPLERS,
    ClassBalancedSampler,
    DistributedEvalSampler,
    InstanceBalancedSampler,
    LongTailSampler,
    PowerSampler,
    ProgressivelyBalancedSampler,
    SamplerName,
    SquareRootSampler,
    StratifiedBatchSampler,
    build_sampler,
    progressive_lambda,
)
from lt_lightning.data.splits import long_tail_split
from lt_lightning.data.transforms import NORMALIZATION, NormalizationName
from lt_lightning.spec import SHOT_GROUP_NAMES, shot_groups

__all__ = [
    "NORMALIZATION",
    "PIPELINES",
    "PROFILES",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "SHOT_GROUP_NAMES",
    "ArrayImageDataset",
    "AugmentSpec",
    "CIFAR10LTDataModule",
    "CIFAR100LTDataModule",
    "ClassBalancedSampler",
    "DeviceLoader",
    "DigitsLTDataModule",
    "DistributedEvalSampler",
    "FashionMNISTLTDataModule",
    "INaturalist2018DataModule",
    "ImageNetLTDataModule",
    "InstanceBalancedSampler",
    "LabelledDataset",
    "LongTailDataModule",
    "LongTailSampler",
    "MNISTLTDataModule",
    "Mixup",
    "NormalizationName",
    "PipelineName",
    "PlacesLTDataModule",
    "PowerSampler",
    "ProfileName",
    "ProgressivelyBalancedSampler",
    "ResumableDataLoader",
    "ResumePosition",
    "STL10LTDataModule",
    "SVHNLTDataModule",
    "SamplerName",
    "SplitFileDataset",
    "SquareRootSampler",
    "StratifiedBatchSampler",
    "SyntheticLTDataModule",
    "TensorFeatureDataset",
    "build_sampler",
    "long_tail_counts",
    "long_tail_split",
    "mixup_batch",
    "mixup_generator",
    "progressive_lambda",
    "shot_groups",
]
