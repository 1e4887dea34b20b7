"""Contract tests for every backbone: [N, out_features] features, backward, fixdim, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lt_lightning.nn import (
    BACKBONE_NAMES,
    MLP,
    CIFARResNet32,
    FixDim,
    TDEResNet32,
    TorchvisionResNet,
    build_backbone,
)

EXPECTED_DIM = {
    "resnet32": 64,
    "resnet32_tde": 128,
    "resnet18": 512,
    "resnet50": 2048,
    "resnext50_32x4d": 2048,
    "resnet152": 2048,
    "resnet50_yang": 4096,
    "mlp": 256,
    "ufm": 16,
}


def _make(name: str, **kwargs) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "mlp":
        return build_backbone(name, in_features=64, **kwargs), torch.randn(4, 1, 8, 8)
    if name == "ufm":  # free features: the input is sample indices
        return build_backbone(name, num_samples=6, dim=16, **kwargs), torch.tensor([0, 5, 2, 5])
    if name == "resnet18":
        kwargs.setdefault("cifar_stem", True)
    return build_backbone(name, **kwargs), torch.randn(2, 3, 32, 32)


def test_every_name_is_covered() -> None:
    assert set(BACKBONE_NAMES) == set(EXPECTED_DIM)


#: ImageNet-size networks: seconds of CPU for one forward and backward
HEAVY = {"resnet50", "resnext50_32x4d", "resnet152", "resnet50_yang"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in BACKBONE_NAMES]
)
def test_backbone_contract(name: str) -> None:
    net, x = _make(name)
    assert isinstance(net.out_features, int) and net.out_features == EXPECTED_DIM[name]
    feats = net(x)
    assert feats.shape == (x.shape[0], net.out_features)
    assert torch.isfinite(feats).all()
    if name != "ufm":  # free features can be negative
        assert (feats >= 0).all()  # pooled post-ReLU activations
    feats.square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["resnet32", "resnet32_tde", "resnet18", "mlp"])
def test_fixdim_gives_num_classes(name: str) -> None:
    net, x = _make(name, num_classes=7, fixdim=True)
    assert isinstance(net, FixDim) and net.out_features == 7
    feats = net(x)
    assert feats.shape == (x.shape[0], 7)
    feats.sum().backward()
    assert net.project[0].weight.grad is not None


def test_fixdim_needs_num_classes() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_backbone("resnet32", fixdim=True)


def test_unknown_backbone_lists_names() -> None:
    with pytest.raises(ValueError, match="resnet32_tde"):
        build_backbone("vgg16")


def test_cifar_resnet32_depth_width_and_eval_determinism() -> None:
    net = CIFARResNet32(width=32)
    assert net.out_features == 128
    convs3 = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == 31  # + the classifier = 32 weighted layers (6n + 2, n = 5)
    x = torch.randn(2, 3, 32, 32)
    fmap = net.forward_features(x)
    assert fmap.shape == (2, 128, 8, 8)
    net.eval()
    assert torch.equal(net(x), net(x))
    assert torch.allclose(net(x), net.forward_features(x).mean((2, 3)), atol=1e-6)


def test_cifar_resnet32_in_channels() -> None:
    net = CIFARResNet32(in_channels=1)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 64)


def test_tde_resnet32_concatenates_two_branches() -> None:
    net = TDEResNet32().eval()
    x = torch.randn(2, 3, 32, 32)
    feats = net(x)
    shared = net.layer3(net.layer2(net.layer1(net.stem(x))))
    assert torch.allclose(feats[:, :64], net.branch1(shared).mean((2, 3)), atol=1e-6)
    assert torch.allclose(feats[:, 64:], net.branch2(shared).mean((2, 3)), atol=1e-6)
    assert not torch.allclose(feats[:, :64], feats[:, 64:])


def test_torchvision_cifar_stem_and_channels() -> None:
    plain = TorchvisionResNet("resnet18")
    stem = TorchvisionResNet("resnet18", cifar_stem=True, in_channels=1)
    assert plain.net.conv1.kernel_size == (7, 7) and isinstance(plain.net.maxpool, nn.MaxPool2d)
    assert stem.net.conv1.kernel_size == (3, 3) and stem.net.conv1.stride == (1, 1)
    assert isinstance(stem.net.maxpool, nn.Identity) and stem.net.conv1.in_channels == 1
    assert stem(torch.randn(2, 1, 16, 16)).shape == (2, 512)
    assert not hasattr(plain.net.fc, "weight")


def test_torchvision_weights_path_roundtrip(tmp_path) -> None:
    import torchvision

    torch.manual_seed(1)
    src = torchvision.models.resnet18(weights=None)  # a full torchvision model, fc included
    path = tmp_path / "r18.pt"
    torch.save(src.state_dict(), path)
    net = TorchvisionResNet("resnet18", weights_path=str(path)).eval()
    src.eval()
    src.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(net(x), src(x), atol=1e-6)
    # a Lightning-style {"state_dict": ...} with our own "net." prefix works too
    torch.save({"state_dict": net.state_dict()}, tmp_path / "wrapped.pt")
    again = TorchvisionResNet("resnet18", weights_path=tmp_path / "wrapped.pt").eval()
    assert torch.allclose(again(x), net(x), atol=1e-6)


def test_torchvision_weights_path_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        TorchvisionResNet("resnet18", weights_path=tmp_path / "missing.pt")
    torch.save(TorchvisionResNet("resnet18").state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="resnet50"):
        TorchvisionResNet("resnet50", weights_path=tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="arch"):
        TorchvisionResNet("resnet34")


def test_mlp_variants() -> None:
    assert MLP(10)(torch.randn(3, 10)).shape == (3, 256)
    net = MLP(64, hidden=(32,), out_features=16, batchnorm=False)
    assert net.out_features == 16
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 16)
    assert MLP(5, hidden=()).out_features == 5
    with pytest.raises(ValueError, match="64"):
        net(torch.randn(3, 10))
    with pytest.raises(ValueError, match="hidden"):
        MLP(5, hidden=(0,))


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(CIFARResNet32, {"width": 0}), (CIFARResNet32, {"in_channels": 2.5}), (MLP, {"in_features": -1})],
)
def test_bad_constructor_args(cls, kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        cls(**kwargs)


def test_resnet32_option_a_matches_the_standard_parameter_count():
    # The CIFAR ResNet-32 of He et al. / LDAM-DRW has 464,154 parameters with its 10-way fc layer
    # (64 * 10 + 10 = 650 of them); option A shortcuts add none.
    from lt_lightning.nn.backbones import CIFARResNet32

    net = CIFARResNet32(width=16, shortcut="A")
    assert sum(p.numel() for p in net.parameters()) == 464_154 - 650
    assert sum(p.numel() for p in CIFARResNet32(width=16, shortcut="B").parameters()) > 464_154 - 650


def test_option_a_shortcut_is_subsample_and_zero_pad():
    from lt_lightning.nn.backbones import _PadShortcut

    x = torch.randn(2, 4, 6, 6)
    out = _PadShortcut(4, 8, 2)(x)
    assert out.shape == (2, 8, 3, 3)
    torch.testing.assert_close(out[:, 2:6], x[:, :, ::2, ::2])
    assert out[:, :2].abs().sum() == 0 and out[:, 6:].abs().sum() == 0


def test_bad_shortcut():
    from lt_lightning.nn.backbones import CIFARResNet32

    with pytest.raises(ValueError, match="shortcut must be 'A'"):
        CIFARResNet32(shortcut="C")


def test_tde_resnet32_is_tangs_option_a_network() -> None:
    """Tang's ResNet32Feature: option-A (zero-padding) shortcuts, no 1x1 convs, Kaiming fan-in init."""
    torch.manual_seed(0)
    net = TDEResNet32()
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules())
    # 3x3 stem + 5 + 5 + 4 shared blocks + 2 parallel blocks; BN (2 per channel) after every conv
    conv = 3 * 16 * 9 + 10 * 16 * 16 * 9 + (16 * 32 * 9 + 9 * 32 * 32 * 9)
    conv += 32 * 64 * 9 + 7 * 64 * 64 * 9 + 4 * 64 * 64 * 9  # 4 shared blocks, then 2 parallel ones
    bn = 2 * (16 + 10 * 16 + 10 * 32 + 8 * 64 + 4 * 64)
    assert sum(p.numel() for p in net.parameters()) == conv + bn == 537_488
    # fan-in: the 16 -> 32 stride-2 conv has fan_in 144 (fan_out 288): std sqrt(2/144)
    w = net.layer2[0].conv1.weight
    assert w.std().item() == pytest.approx((2 / 144) ** 0.5, rel=0.05)
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 128)


def test_resnet50_yang_has_a_1024_plane_layer4_and_4096_features() -> None:
    """Yang's models/resnet.py ResNet_FE: layer4 = _make_layer(Bottleneck, 1024, 3, stride=2)."""
    from lt_lightning.nn.backbones import build_backbone

    net = build_backbone("resnet50_yang")
    plain = build_backbone("resnet50")
    assert net.out_features == 4096 and plain.out_features == 2048
    assert [b.conv1.out_channels for b in net.net.layer4] == [1024] * 3
    assert net.net.layer4[0].conv1.in_channels == 1024  # fed by layer3's 4 x 256 channels
    # layers 1-3 and the stem are torchvision's ResNet-50 unchanged
    for name in ("conv1", "layer1", "layer2", "layer3"):
        a = [p.shape for p in getattr(net.net, name).parameters()]
        assert a == [p.shape for p in getattr(plain.net, name).parameters()]
    # layer4 parameters from the bottleneck formula (1x1, 3x3, 1x1 convs + BNs; 1x1 projection in block 0)
    w, out = 1024, 4096
    block = lambda cin: cin * w + 9 * w * w + w * out + 2 * (2 * w + out)  # noqa: E731
    expected = block(1024) + (1024 * out + 2 * out) + 2 * block(out)
    assert sum(p.numel() for p in net.net.layer4.parameters()) == expected
    net.eval()
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 4096)


def test_bn_affine_false_has_no_bn_parameters() -> None:
    """Markou's ResNet-18: BatchNorm2d(affine=False); the conv weights are all that train in the trunk."""
    net = TorchvisionResNet("resnet18", bn_affine=False)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 20 and all(not m.affine and m.weight is None for m in bns)
    plain = TorchvisionResNet("resnet18")
    n_bn = sum(2 * m.num_features for m in plain.modules() if isinstance(m, nn.BatchNorm2d))
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in plain.parameters()) - n_bn
    assert net.net.conv1.kernel_size == (7, 7)  # the ImageNet stem (Markou's resnet18 on 32x32 inputs)
    net.eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
