"""Backbones, classifier heads and (in :mod:`lt_lightning.nn.functional`) their pure-tensor maths."""

from lt_lightning.nn.backbones import (
    BACKBONE_NAMES,
    MLP,
    BasicBlock,
    CIFARResNet32,
    FixDim,
    TDEResNet32,
    TorchvisionResNet,
    build_backbone,
    feature_dim_of,
)
from lt_lightning.nn.class_means import ClassMeanTracker
from lt_lightning.nn.heads import (
    CausalNormHead,
    ClassifierHead,
    ETFHead,
    FeatureNeck,
    LinearHead,
    LWSHead,
    NCMHead,
    NormedLinearHead,
    TauNormHead,
)

__all__ = [
    "BACKBONE_NAMES",
    "MLP",
    "BasicBlock",
    "CIFARResNet32",
    "CausalNormHead",
    "ClassMeanTracker",
    "ClassifierHead",
    "ETFHead",
    "FeatureNeck",
    "FixDim",
    "LWSHead",
    "LinearHead",
    "NCMHead",
    "NormedLinearHead",
    "TDEResNet32",
    "TauNormHead",
    "TorchvisionResNet",
    "build_backbone",
    "feature_dim_of",
]
