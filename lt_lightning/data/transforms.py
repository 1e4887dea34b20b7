"""Train/eval image transforms of the papers' recipes (see REFERENCE.md, "Data")."""

from __future__ import annotations

from typing import Literal

from torchvision import transforms as T

__all__ = [
    "NORMALIZATION",
    "NormalizationName",
    "cifar_transforms",
    "imagenet_transforms",
    "small_image_transforms",
]

#: the keys of :data:`NORMALIZATION` (the in-memory datamodules' ``normalization`` option)
NormalizationName = Literal["cifar", "imagenet", "inat", "mnist", "fashion_mnist", "svhn", "stl10", "half"]

# (mean, std) per dataset. CIFAR values as in the LDAM-DRW code the CIFAR-LT numbers come from.
NORMALIZATION: dict[NormalizationName, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inat": ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    # Yang et al.'s SVHN-LT / STL-10-LT (datasets/svhn.py, stl10.py): Normalize(mean=0.5, std=0.5)
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def cifar_transforms(augment: bool = True) -> tuple[T.Compose, T.Compose]:
    """Standard CIFAR augmentation: random 32×32 crop with 4-pixel padding + horizontal flip."""
    mean, std = NORMALIZATION["cifar"]
    post = [T.ToTensor(), T.Normalize(mean, std)]
    train = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
    return T.Compose(train + post), T.Compose(post)


def imagenet_transforms(
    color_jitter: bool = True,
    normalization: NormalizationName = "imagenet",
    image_size: int = 224,
    resize: int = 256,
) -> tuple[T.Compose, T.Compose]:
    """Kang et al.'s ImageNet-LT / Places-LT / iNat transforms.

    Train: RandomResizedCrop(224) + flip + ColorJitter(0.4, 0.4, 0.4, 0) (no jitter for iNat);
    test: Resize(256) + CenterCrop(224).
    """
    mean, std = NORMALIZATION[normalization]
    train = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    if color_jitter:
        train.append(T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0))
    post = [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(train + post), T.Compose([T.Resize(resize), T.CenterCrop(image_size), *post])


def small_image_transforms(
    name: NormalizationName, size: int, crop_padding: int = 0, flip: bool = False
) -> tuple[T.Compose, T.Compose]:
    """Transforms for MNIST-like, SVHN and STL-10 images: optional padded crop and flip, then normalise."""
    mean, std = NORMALIZATION[name]
    post = [T.ToTensor(), T.Normalize(mean, std)]
    train = []
    if crop_padding:
        train.append(T.RandomCrop(size, padding=crop_padding))
    if flip:
        train.append(T.RandomHorizontalFlip())
    return T.Compose(train + post), T.Compose(post)
