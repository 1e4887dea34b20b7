"""Feature extractors. Every backbone is an ``nn.Module`` with an int ``out_features`` (d) whose
``forward(x)`` returns the pooled, flattened penultimate features ``[N, d]``. Modules from elsewhere
may give d as ``num_features`` instead (timm's convention, with the classifier removed:
``timm.create_model(name, num_classes=0)``), see :func:`feature_dim_of`.

- :class:`CIFARResNet32`: He et al. CVPR 2016 CIFAR ResNet-32 (width 16 -> 64-d, width 32 -> 128-d).
- :class:`TDEResNet32`: Tang et al. NeurIPS 2020 variant whose last stage ends in two parallel blocks
  (zero-padding shortcuts and fan-in init, as Tang's ``models/ResNet32Feature.py``).
- :class:`TorchvisionResNet`: torchvision ResNet/ResNeXt without its ``fc`` (optional CIFAR stem), and
  ``"resnet50_yang"``: Yang et al.'s ImageNet-LT ResNet-50 whose layer4 has 1024 planes (4096-d features).
- :class:`MLP`: for digits (``[N, 1, 8, 8]``) and synthetic (``[N, D]``) data.
- :func:`build_backbone`: by name, with Zhu et al.'s ``fixdim`` projection to K dimensions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

__all__ = [
    "BACKBONES",
    "BACKBONE_NAMES",
    "MLP",
    "BackboneName",
    "BasicBlock",
    "CIFARResNet32",
    "FixDim",
    "TDEResNet32",
    "TorchvisionResNet",
    "build_backbone",
    "feature_dim_of",
]


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class _PadShortcut(nn.Module):
    """He et al.'s "option A" shortcut: subsample spatially, zero-pad the new channels on both sides."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_ch - in_ch
        self.pad = (0, 0, 0, 0, extra // 2, extra - extra // 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], self.pad)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (He et al. 2016).

    When the shape changes the shortcut is either ``"A"``, zero-padding (the LDAM-DRW CIFAR ResNet-32
    behind Yang's and the decoupling CIFAR numbers, and Tang's TDE ResNet-32), or ``"B"``, a 1x1 conv +
    BN projection.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-padding) or 'B' (projection), got {shortcut!r}")
        self.shortcut: nn.Module = nn.Identity()
        if (stride != 1 or in_ch != out_ch) and shortcut == "A":
            self.shortcut = _PadShortcut(in_ch, out_ch, stride)
        elif stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _stage(in_ch: int, out_ch: int, num_blocks: int, stride: int, shortcut: str = "B") -> nn.Sequential:
    blocks = [BasicBlock(in_ch, out_ch, stride, shortcut)]
    blocks += [BasicBlock(out_ch, out_ch, 1, shortcut) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _init_resnet(module: nn.Module, mode: str = "fan_out") -> None:
    # He et al.: Kaiming-normal convs, BN at (1, 0). The LDAM CIFAR code uses fan_in.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class CIFARResNet32(nn.Module):
    """CIFAR ResNet-32 (He et al. CVPR 2016): 3x3 stem, 3 stages x 5 basic blocks, global average pool.

    Stage widths are ``width * (1, 2, 4)`` at strides 1, 2, 2, so ``out_features = 4 * width``: 64 for
    the standard width 16, 128 for width 32 (Yang et al.'s CIFAR-100 choice, so that d >= K - 1).
    Default: the LDAM-DRW CIFAR ResNet-32 the CIFAR-LT numbers come from, zero-padding ("A")
    shortcuts and fan-in Kaiming-normal init; ``shortcut="B"`` gives projection shortcuts (fan-out init).

    Args:
        width: channels of the first stage.
        in_channels: input channels.
        num_blocks: basic blocks per stage (5 for 6n+2 = 32 layers).
        shortcut: ``"A"`` or ``"B"``, see :class:`BasicBlock`.
    """

    def __init__(
        self, width: int = 16, in_channels: int = 3, num_blocks: int = 5, shortcut: str = "A"
    ) -> None:
        super().__init__()
        _check_positive_int("width", width)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("num_blocks", num_blocks)
        self.stem = nn.Sequential(_conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.layer1 = _stage(width, width, num_blocks, 1, shortcut)
        self.layer2 = _stage(width, 2 * width, num_blocks, 2, shortcut)
        self.layer3 = _stage(2 * width, 4 * width, num_blocks, 2, shortcut)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = 4 * width
        _init_resnet(self, "fan_in" if shortcut == "A" else "fan_out")

    def forward_features(self, x: Tensor) -> Tensor:
        """Unpooled last feature map ``[N, d, H', W']``."""
        return self.layer3(self.layer2(self.layer1(self.stem(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.forward_features(x)).flatten(1)


class TDEResNet32(nn.Module):
    """ResNet-32 of Tang et al. (NeurIPS 2020) for CIFAR: 128-d features from two parallel last blocks.

    Stem and stages 1-2 as :class:`CIFARResNet32` (width 16); stage 3 has 4 shared blocks (the first at
    stride 2) and then two parallel 64-channel blocks whose outputs are concatenated along channels
    (2 x 64 = 128), so each path is still 32 layers deep. ``out_features = 128``. As Tang's
    ``models/ResNet32Feature.py`` (``BBN_ResNet_Cifar`` with ``option="A"``): zero-padding shortcuts (no
    1x1 projections) and Kaiming-normal fan-in init of the convolutions (BN at (1, 0)).

    Args:
        in_channels: input channels.
        shortcut: ``"A"`` (Tang's) or ``"B"`` (1x1 projections, fan-out init; not Tang's recipe).
    """

    def __init__(self, in_channels: int = 3, shortcut: str = "A") -> None:
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        width = 16
        self.stem = nn.Sequential(_conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.layer1 = _stage(width, width, 5, 1, shortcut)
        self.layer2 = _stage(width, 2 * width, 5, 2, shortcut)
        self.layer3 = _stage(2 * width, 4 * width, 4, 2, shortcut)
        self.branch1 = BasicBlock(4 * width, 4 * width, 1, shortcut)
        self.branch2 = BasicBlock(4 * width, 4 * width, 1, shortcut)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = 8 * width
        _init_resnet(self, "fan_in" if shortcut == "A" else "fan_out")

    def forward_features(self, x: Tensor) -> Tensor:
        """Unpooled concatenated feature map ``[N, 128, H', W']``."""
        shared = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return torch.cat([self.branch1(shared), self.branch2(shared)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.forward_features(x)).flatten(1)


TorchvisionArch = Literal["resnet18", "resnet50", "resnext50_32x4d", "resnet152", "resnet50_yang"]
TORCHVISION_ARCHS: tuple[str, ...] = get_args(TorchvisionArch)
#: Yang et al. (NeurIPS 2022) ``models/resnet.py`` ``ResNet_FE`` (``resnet50_fe``): layer4 built with 1024
#: planes instead of 512, so its bottlenecks output 4 x 1024 = 4096 channels.
YANG_LAYER4_PLANES = 1024


def _resnet50_yang() -> torchvision.models.ResNet:
    """torchvision's ResNet-50 with Yang's widened layer4 (``[3, 4, 6, 3]`` bottlenecks, 4096-d output)."""
    from torchvision.models.resnet import Bottleneck

    net = torchvision.models.resnet50(weights=None)
    net.inplanes = 256 * Bottleneck.expansion  # layer3's output, the input of layer4
    net.layer4 = net._make_layer(Bottleneck, YANG_LAYER4_PLANES, 3, stride=2)
    # the same init as torchvision's constructor (and Yang's): Kaiming fan-out convs, BN at (1, 0)
    _init_resnet(net.layer4, "fan_out")
    net.fc = nn.Linear(YANG_LAYER4_PLANES * Bottleneck.expansion, 1000)
    return net


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet/ResNeXt with ``fc`` removed: ``forward`` gives the pooled features.

    Always built with ``weights=None`` (nothing is downloaded). For pretrained weights (e.g. Kang's
    Places-LT recipe starts from an ImageNet ResNet-152) save a torchvision state dict yourself and
    pass its path as ``weights_path``: ``fc.*`` keys are dropped and the rest must match exactly.

    Args:
        arch: ``"resnet18"`` (512-d), ``"resnet50"``, ``"resnext50_32x4d"``, ``"resnet152"`` (2048-d),
            ``"resnet50_yang"`` (4096-d: Yang et al.'s ResNet-50 with a 1024-plane layer4).
        cifar_stem: replace the 7x7/2 stem conv with a 3x3/1 conv and drop the max-pool (32x32 inputs).
        in_channels: input channels (a new stem conv when != 3).
        weights_path: a ``torch.save``-d state dict (optionally under a ``"state_dict"`` key) to load.
        bn_affine: ``False`` gives BatchNorm layers without scale and shift (Markou et al.'s ResNet-18,
            ``nc/models/resnet.py``: ``affine = args.bias``, so ``--no-bias`` builds ``BatchNorm2d(affine=False)``).
    """

    def __init__(
        self,
        arch: str = "resnet18",
        cifar_stem: bool = False,
        in_channels: int = 3,
        weights_path: str | Path | None = None,
        bn_affine: bool = True,
    ) -> None:
        super().__init__()
        if arch not in TORCHVISION_ARCHS:
            raise ValueError(f"arch must be one of {TORCHVISION_ARCHS}, got {arch!r}")
        _check_positive_int("in_channels", in_channels)
        net = _resnet50_yang() if arch == "resnet50_yang" else getattr(torchvision.models, arch)(weights=None)
        self.out_features = int(net.fc.in_features)
        net.fc = nn.Identity()
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if cifar_stem or in_channels != 3:
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        if not bn_affine:
            _drop_bn_affine(net)
        self.arch = arch
        self.net = net
        if weights_path is not None:
            self.load_backbone_weights(weights_path)

    def load_backbone_weights(self, path: str | Path) -> None:
        """Load a torchvision-style state dict from ``path``, ignoring ``fc.*``; strict otherwise."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"weights_path {str(path)!r} is not a file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{str(path)!r} does not hold a state dict (got {type(state).__name__})")
        state = {
            k.removeprefix("net."): v
            for k, v in state.items()
            if not k.removeprefix("net.").startswith("fc.")
        }
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"weights in {str(path)!r} do not fit {self.arch}: {err}") from err

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _drop_bn_affine(module: nn.Module) -> None:
    """Replace every ``BatchNorm2d`` under ``module`` by one without affine parameters (same statistics)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(
                module,
                name,
                nn.BatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum, affine=False),
            )
        else:
            _drop_bn_affine(child)


class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs: ``(Linear -> [BatchNorm1d] -> ReLU)`` per layer.

    Layer widths are ``hidden`` followed by ``out_features`` if given; the features are the last
    layer's post-ReLU activations (like a ResNet's pooled features), so ``out_features`` =
    ``out_features or hidden[-1]`` (``in_features`` when there is no layer at all).

    Args:
        in_features: flattened input size (64 for 8x8 digits).
        hidden: hidden widths.
        out_features: width of an extra last layer (the feature dimension), or ``None``.
        batchnorm: BatchNorm1d after every Linear.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (256, 256),
        out_features: int | None = None,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int("in_features", in_features)
        widths = [int(_check_positive_int("hidden width", h)) for h in hidden]
        if out_features is not None:
            widths.append(_check_positive_int("out_features", out_features))
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for w in widths:
            layers.append(nn.Linear(prev, w, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(w))
            layers.append(nn.ReLU(inplace=True))
            prev = w
        self.layers = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = prev

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x[0].numel() != self.in_features:
            raise ValueError(
                f"MLP expects inputs [N, ...] with {self.in_features} values each, got {tuple(x.shape)}"
            )
        return self.layers(x)


def feature_dim_of(backbone: nn.Module) -> int:
    """The feature dimension d of a backbone: its ``out_features``, else its ``num_features`` (timm).

    Raises:
        ValueError: the module has neither as a positive int.
    """
    for name in ("out_features", "num_features"):
        value = getattr(backbone, name, None)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"backbone {type(backbone).__name__}.{name} must be an int >= 1, got {value!r}"
                )
            return value
    raise ValueError(
        f"backbone {type(backbone).__name__} must have an int attribute out_features or num_features (timm): "
        "the dimension d of the [N, d] features its forward returns"
    )


class FixDim(nn.Module):
    """Zhu et al. (NeurIPS 2021) ``fixdim``: make the feature dimension equal to K.

    Appends ``Linear(d, K) -> BatchNorm1d(K) -> ReLU`` to a backbone, so features stay post-activation
    like the backbone's own. ``out_features = K``.

    Args:
        backbone: a module with ``out_features`` (or timm's ``num_features``).
        num_classes: K.
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        self.backbone = backbone
        self.project = nn.Sequential(
            nn.Linear(feature_dim_of(backbone), num_classes, bias=False),
            nn.BatchNorm1d(num_classes),
            nn.ReLU(inplace=True),
        )
        self.out_features = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.backbone(x))


class UnconstrainedFeatures(nn.Module):
    """The unconstrained-features model (Mixon et al.; Zhu et al.; Markou et al.): every training sample's
    feature is a free parameter. The input is the ``[N]`` sample indices; the output their ``[N, d]`` rows.

    Args:
        num_samples: number of samples (rows).
        dim: feature dimension d.
        init_std: standard deviation of the Gaussian initialisation.
        seed: seed of the initialisation (a local generator).
    """

    def __init__(self, num_samples: int, dim: int, init_std: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        _check_positive_int("num_samples", num_samples)
        _check_positive_int("dim", dim)
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Parameter(init_std * torch.randn(num_samples, dim, generator=g))
        self.out_features = dim

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"UnconstrainedFeatures takes sample indices (int64), got dtype {x.dtype}")
        return self.features[x]


#: the names :func:`build_backbone` accepts (the ``backbone`` option of every method)
BackboneName = Literal[
    "resnet32",
    "resnet32_tde",
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "resnet152",
    "resnet50_yang",
    "mlp",
    "ufm",
]
#: name -> constructor (keyword arguments of the backbone's class)
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet32": CIFARResNet32,
    "resnet32_tde": TDEResNet32,
    **{arch: partial(TorchvisionResNet, arch=arch) for arch in TORCHVISION_ARCHS},
    "mlp": MLP,
    "ufm": UnconstrainedFeatures,
}
BACKBONE_NAMES: tuple[str, ...] = get_args(BackboneName)


def build_backbone(
    name: str, *, num_classes: int | None = None, fixdim: bool = False, **kwargs: object
) -> nn.Module:
    """Build a backbone by name (:data:`BACKBONES`).

    Args:
        name: one of ``BACKBONE_NAMES``: ``"resnet32"`` (:class:`CIFARResNet32`), ``"resnet32_tde"``
            (:class:`TDEResNet32`), ``"resnet18"``, ``"resnet50"``, ``"resnext50_32x4d"``,
            ``"resnet152"``, ``"resnet50_yang"`` (:class:`TorchvisionResNet`), ``"mlp"`` (:class:`MLP`),
            ``"ufm"`` (:class:`UnconstrainedFeatures`).
        num_classes: K; required with ``fixdim``.
        fixdim: append :class:`FixDim` so that ``out_features = K``.
        **kwargs: passed to the backbone's constructor.

    Returns:
        The backbone (with ``out_features``).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONE_NAMES)}")
    backbone: nn.Module = BACKBONES[name](**kwargs)
    if fixdim:
        if num_classes is None:
            raise ValueError("fixdim=True needs num_classes (the feature dimension becomes K)")
        backbone = FixDim(backbone, num_classes)
    return backbone
