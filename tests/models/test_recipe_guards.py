"""Guards that keep a recipe from silently training something else than it says (issue 8)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from lt_lightning.models import JointModule


def test_trainable_backbone_without_weights_fails_at_construction():
    # Places-LT trains only layer4 of a pretrained ResNet: without the weights that is a frozen random net
    with pytest.raises(ValueError, match="weights_path"):
        JointModule(num_classes=5, backbone="resnet18", trainable_backbone=["net.layer4"])
    with pytest.raises(ValueError, match="weights_path"):
        JointModule(
            num_classes=5,
            backbone="resnet18",
            backbone_kwargs={"weights_path": None},
            trainable_backbone=["net.layer4"],
        )


def test_trainable_backbone_with_weights_freezes_all_but_the_prefix(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = JointModule(
        num_classes=5,
        backbone="resnet18",
        backbone_kwargs={"weights_path": str(path)},
        trainable_backbone=["net.layer4"],
    )
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("net.layer4") for n in trainable)
