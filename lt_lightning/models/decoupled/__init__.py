"""Two-stage decoupled training (Kang et al., ICLR 2020): cRT, LWS, τ-norm and NCM on a stage-1 model.

Stage 2 reads the stage-1 checkpoint of any lt_lightning method (:class:`Stage2Module`), keeps its
backbone and neck frozen, and replaces the classifier:

- :class:`CRTModule`: a re-initialised linear classifier trained with CE (with the class-balanced sampler);
- :class:`LWSModule`: per-class scales on the whole stage-1 logit, ``z_i = s_i (w_i·x + b_i)``;
- :class:`TauNormModule`: ``w_i / ‖w_i‖^τ`` without bias, no training; τ chosen on validation;
- :class:`NCMModule`: nearest class mean on un-augmented training features;
- :class:`WeightBalancingModule`: the stage-1 classifier fine-tuned with the class-balanced loss, weight
  decay and MaxNorm (Alshammari et al., CVPR 2022).

cRT, LWS and weight balancing are a second ``fit``; τ-norm and NCM a ``validate`` or ``test``. ``DecoupledModule(mode=...)``
builds any of them by name.
"""

from lt_lightning.models.decoupled.crt import CRTModule, LWSModule
from lt_lightning.models.decoupled.factory import MODES, DecoupledModule, decoupled_class
from lt_lightning.models.decoupled.maxnorm import WeightBalancingModule
from lt_lightning.models.decoupled.post_hoc import TAU_GRID, NCMModule, PostHocModule, TauNormModule
from lt_lightning.models.decoupled.stage2 import BN_MODES, Stage2Module, read_stage1

__all__ = [
    "BN_MODES",
    "MODES",
    "TAU_GRID",
    "CRTModule",
    "DecoupledModule",
    "LWSModule",
    "NCMModule",
    "PostHocModule",
    "Stage2Module",
    "TauNormModule",
    "WeightBalancingModule",
    "decoupled_class",
    "read_stage1",
]
