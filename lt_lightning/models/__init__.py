"""LightningModules: one file per training method, the stage-2 methods in ``decoupled/``, the shared base."""

from lt_lightning.models.base import CLASS_PATH_KEY, LongTailModule
from lt_lightning.models.decoupled import (
    CRTModule,
    DecoupledModule,
    LWSModule,
    NCMModule,
    Stage2Module,
    TauNormModule,
    WeightBalancingModule,
)
from lt_lightning.models.fixed_etf import FixedETFModule
from lt_lightning.models.implicit_etf import ImplicitETFModule
from lt_lightning.models.joint import JointModule
from lt_lightning.models.loading import load_module_from_checkpoint
from lt_lightning.models.tde import TDEModule

__all__ = [
    "CLASS_PATH_KEY",
    "CRTModule",
    "DecoupledModule",
    "FixedETFModule",
    "ImplicitETFModule",
    "JointModule",
    "LWSModule",
    "LongTailModule",
    "NCMModule",
    "Stage2Module",
    "TDEModule",
    "TauNormModule",
    "WeightBalancingModule",
    "load_module_from_checkpoint",
]
