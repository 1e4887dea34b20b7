"""The long-tail-loss configs follow kaidic/LDAM-DRW's CIFAR recipe (cifar_train.py), checked fact by fact."""

from __future__ import annotations

from pathlib import Path

import pytest

from lt_lightning.cli.configs import resolve_config
from lt_lightning.optim import LRSchedule

CONFIGS = Path(__file__).parents[1] / "configs"
METHODS = ("ldam_drw", "logit_adjust", "balanced_softmax", "logit_adjust_posthoc")


def _kaidic_lr(epoch0: int, base: float = 0.1) -> float:
    """cifar_train.py adjust_learning_rate, with their 1-based ``epoch = epoch + 1``."""
    epoch = epoch0 + 1
    if epoch <= 5:
        return base * epoch / 5
    if epoch > 180:
        return base * 0.0001
    if epoch > 160:
        return base * 0.01
    return base


@pytest.mark.parametrize("dataset", ["cifar10_lt", "cifar100_lt"])
@pytest.mark.parametrize("method", METHODS)
def test_cifar_configs_follow_ldam_drw_recipe(dataset, method):
    cfg = resolve_config(CONFIGS / dataset / f"{method}.yaml")
    m = cfg["model"]["init_args"]
    opt = m["optimizer"]
    assert cfg["model"]["class_path"] == "lt_lightning.models.JointModule"
    assert cfg["trainer"]["max_epochs"] == 200 and cfg["trainer"]["precision"] == "32-true"
    assert (
        cfg["data"]["init_args"]["batch_size"] == 128 and cfg["data"]["init_args"]["imbalance_ratio"] == 100
    )
    assert (m["backbone"], m["backbone_kwargs"]) == ("resnet32", {"width": 16})  # 64-d ResNet-32
    assert opt["class_path"] == "torch.optim.SGD"
    lr = opt["init_args"]["lr"]
    assert (lr, opt["init_args"]["momentum"], opt["init_args"]["weight_decay"]) == (0.1, 0.9, 0.0002)
    schedule = LRSchedule.from_config(m["lr_schedule"])
    assert schedule.interval == "epoch"
    for e in range(200):
        ours = lr * schedule.factor(e, max_epochs=200)
        assert ours == pytest.approx(_kaidic_lr(e), rel=1e-12), e
    if method == "ldam_drw":
        # LDAMLoss(max_m=0.5, s=30); train_rule DRW: idx = epoch // 160, betas [0, 0.9999]
        assert (m["loss"], m["ldam_max_margin"], m["ldam_scale"]) == ("ldam", 0.5, 30.0)
        assert (m["reweight"], m["cb_beta"], m["drw_epoch"]) == ("drw", 0.9999, 160)
    else:
        assert m["reweight"] == "none"


@pytest.mark.parametrize("method", METHODS)
def test_digits_configs_exist(method):
    cfg = resolve_config(CONFIGS / "digits_lt" / f"{method}.yaml")
    assert cfg["model"]["class_path"] == "lt_lightning.models.JointModule"
