"""``--help`` is a usable manual: short help for every method, a help string for every option, our backbones;
a subclass that builds its own backbone from plain arguments is a config-friendly method."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn

import lt_lightning.data as data
import lt_lightning.models as models
from lt_lightning.cli import build_cli
from lt_lightning.data import LongTailDataModule
from lt_lightning.models import JointModule, LongTailModule
from lt_lightning.nn.backbones import BACKBONE_NAMES, feature_dim_of

#: every method the package exports (the factory included), the bases excluded
MODULES = [
    cls
    for cls in (getattr(models, n) for n in models.__all__)
    if isinstance(cls, type)
    and issubclass(cls, LongTailModule)
    and cls not in (LongTailModule, models.Stage2Module)
]
DATAMODULES = [
    cls
    for cls in (getattr(data, n) for n in data.__all__)
    if isinstance(cls, type) and issubclass(cls, LongTailDataModule) and cls is not LongTailDataModule
]


def test_the_tables_hold_every_method_and_datamodule():
    names = {c.__name__ for c in MODULES}
    assert {"JointModule", "DecoupledModule", "CRTModule", "LWSModule", "TauNormModule", "NCMModule"} <= names
    assert len(DATAMODULES) >= 11


def _help(option: str, cls: type) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_cli(["fit", option, f"{cls.__module__}.{cls.__qualname__}"])
    return out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_model_help_is_short_and_lists_every_backbone(cls):
    text = _help("--model.help", cls)
    # before: ~850 lines, the backbone's `str | nn.Module` listed every nn.Module subclass
    assert len(text.splitlines()) < 250
    assert "torch.nn.ReLU" not in text
    if cls.is_stage2:  # stage 2 keeps the stage-1 backbone: no option
        assert "--model.backbone {" not in text and "--model.stage1_checkpoint" in text
        return
    choices = next(line for line in text.splitlines() if line.strip().startswith("--model.backbone {"))
    for name in BACKBONE_NAMES:
        assert name in choices, name


def _options_without_help(cls: type) -> list[str]:
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "x")
    missing = []
    for action in parser._actions:
        opts = action.option_strings
        if not opts or not opts[0].startswith("--x.") or opts[0].endswith(".help"):
            continue
        text = (action.help or "").strip()
        if not text or text.startswith("(type") or text.startswith("%(type"):
            missing.append(opts[0])
    return missing


@pytest.mark.parametrize(
    "cls",
    [c for c in MODULES + DATAMODULES],
    ids=lambda c: c.__name__,
)
def test_every_option_has_a_help_string(cls):
    assert _options_without_help(cls) == []


class _TimmLike(nn.Module):
    """timm's convention: ``num_features`` (no ``out_features``); ``num_classes=0`` returns features."""

    def __init__(self, d: int = 6) -> None:
        super().__init__()
        self.num_features = d
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, d), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_module_with_num_features_is_a_backbone():
    model = JointModule(num_classes=3, backbone=_TimmLike(6))
    assert model.feature_dim == 6
    assert model(torch.rand(4, 1, 8, 8)).shape == (4, 3)


def test_feature_dim_refuses_a_module_without_it():
    with pytest.raises(ValueError, match="out_features or num_features"):
        JointModule(num_classes=3, backbone=nn.Identity())
    bad = nn.Identity()
    bad.num_features = 0
    with pytest.raises(ValueError, match="num_features must be an int >= 1"):
        feature_dim_of(bad)


class _TimmJointModule(JointModule):
    """The README's pattern: a subclass that builds a timm-style backbone from plain arguments."""

    def __init__(self, width: int = 6, **kwargs):
        super().__init__(backbone=_TimmLike(width), **kwargs)


def test_a_subclass_building_its_backbone_is_a_config_friendly_method():
    model = _TimmJointModule(width=5, num_classes=3)
    assert model.hparams.width == 5 and "backbone" not in model.hparams  # modules are not hyper-parameters
    again = _TimmJointModule(**model.hparams)  # what load_from_checkpoint does
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    # the CLI offers its own arguments, not a backbone option
    parser = ArgumentParser()
    parser.add_class_arguments(_TimmJointModule, "x")
    options = {o for a in parser._actions for o in a.option_strings}
    assert "--x.width" in options and "--x.backbone" not in options
    assert {"--x.optimizer", "--x.lr_schedule", "--x.mixup"} <= options  # the injected parts
