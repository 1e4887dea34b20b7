"""LightningModules: one file per training method, plus the shared base."""

from lt_lightning.models.base import LongTailModule, load_module_from_checkpoint
from lt_lightning.models.decoupled import DecoupledModule
from lt_lightning.models.fixed_etf import FixedETFModule
from lt_lightning.models.implicit_etf import ImplicitETFModule
from lt_lightning.models.joint import JointModule
from lt_lightning.models.tde import TDEModule

__all__ = [
    "DecoupledModule",
    "FixedETFModule",
    "ImplicitETFModule",
    "JointModule",
    "LongTailModule",
    "TDEModule",
    "load_module_from_checkpoint",
]
