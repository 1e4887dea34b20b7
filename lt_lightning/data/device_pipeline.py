"""A device-resident training pipeline for datasets that fit in memory (``pipeline="device"``).

The uint8 images (or float feature tensors) move once to the training device; every batch is then a
gather by the sampler's indices followed by batched augmentation on that device: padded random crop,
horizontal flip, ``ToTensor``'s ``/ 255`` and ``Normalize``. No per-image Python, no worker processes.

Same distribution as the torchvision path (``RandomCrop(size, padding=p)`` then
``RandomHorizontalFlip()`` then ``ToTensor()`` and ``Normalize(mean, std)``): the image is padded with
zeros (pixel value 0, before normalisation; the border is added once to the resident set), the crop's
top-left corner is uniform over ``{0, …, 2p}²``, the crop is mirrored with probability 1/2, then
``(x / 255 − mean) / std`` as one affine pass (within 1 ulp of torchvision's two steps, so a given
crop and flip give the same tensor to float32 rounding). The augmentation parameters of an epoch are
drawn on the device, for the rank's whole slice of the epoch, from a generator seeded by ``(seed, epoch,
rank)``, so an epoch's batches depend only on those (and the sampler's order, itself seeded by ``(seed,
epoch)``): resuming at an epoch boundary reproduces the run exactly, as on the DataLoader path, and so
does a mid-epoch resume (:mod:`lt_lightning.data.loading`): the sampler skips the samples already
trained and the loader aligns the epoch's crops and flips with the position it resumes at.

The sampler is the datamodule's own object (a ``DistributedSampler`` subclass, sliced per rank):
:class:`DeviceLoader` exposes it as ``.sampler`` so that Lightning calls its ``set_epoch`` every epoch,
and reads the epoch's indices from ``iter(sampler)`` (one host list per epoch, never per sample).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torchvision import transforms as T

from lt_lightning.data.loading import ResumePosition

__all__ = [
    "PIPELINES",
    "AugmentSpec",
    "DeviceLoader",
    "PipelineName",
    "augment_batch",
    "normalisation_affine",
    "pad_images",
    "spec_from_transform",
]

#: Values of the datamodules' ``pipeline`` argument.
PipelineName = Literal["dataloader", "device"]
PIPELINES: tuple[str, ...] = get_args(PipelineName)


@dataclass(frozen=True)
class AugmentSpec:
    """Batched equivalent of ``[RandomCrop(size, padding)] [RandomHorizontalFlip()] ToTensor() Normalize``.

    Attributes:
        crop_padding: ``p`` of the padded random crop (0: no crop).
        flip: mirror horizontally with probability 1/2.
        mean, std: per-channel normalisation (empty: none, e.g. float features).
    """

    crop_padding: int = 0
    flip: bool = False
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


def spec_from_transform(transform: object | None) -> AugmentSpec:
    """Read an :class:`AugmentSpec` off a torchvision ``Compose`` of the supported steps.

    Raises:
        ValueError: a step other than ``RandomCrop`` (zero padding, same size as the image, constant
            fill 0), ``RandomHorizontalFlip(p=0.5)``, ``ToTensor`` and ``Normalize``.
    """
    if transform is None:
        return AugmentSpec()
    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    padding, flip = 0, False
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    for step in steps:
        if isinstance(step, T.RandomCrop):
            pad = step.padding
            if not isinstance(pad, int) and not (isinstance(pad, (tuple, list)) and len(set(pad)) == 1):
                raise ValueError(f"pipeline='device' needs an equal padding on all sides, got {pad!r}")
            if step.padding_mode != "constant" or step.fill != 0 or step.pad_if_needed:
                raise ValueError("pipeline='device' supports RandomCrop with zero constant padding only")
            padding = int(pad if isinstance(pad, int) else pad[0])
        elif isinstance(step, T.RandomHorizontalFlip):
            if step.p != 0.5:
                raise ValueError(f"pipeline='device' supports RandomHorizontalFlip(p=0.5), got p={step.p}")
            flip = True
        elif isinstance(step, T.Normalize):
            mean, std = tuple(float(m) for m in step.mean), tuple(float(s) for s in step.std)
        elif not isinstance(step, T.ToTensor):
            raise ValueError(
                f"pipeline='device' supports RandomCrop, RandomHorizontalFlip, ToTensor and Normalize; "
                f"got {type(step).__name__} (use pipeline='dataloader')"
            )
    return AugmentSpec(padding, flip, mean, std)


def augment_batch(
    images: Tensor,
    spec: AugmentSpec,
    offsets: Tensor | None = None,
    flips: Tensor | None = None,
    *,
    indices: Tensor | None = None,
    padded: bool = False,
    affine: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Crop, flip and normalise a batch of uint8 images: one gather, one conversion, one affine pass.

    Args:
        images: ``[B, H, W]`` or ``[B, H, W, C]`` uint8 (the arrays' own layout); with ``indices``,
            the whole dataset ``[N, ...]`` from which ``indices`` pick the batch.
        spec: what to apply.
        offsets: ``[B, 2]`` long crop corners ``(top, left)`` in ``[0, 2p]`` (required when
            ``spec.crop_padding > 0``; corner ``(p, p)`` is the un-shifted image).
        flips: ``[B]`` bool, mirror these crops (required when ``spec.flip``).
        indices: ``[B]`` rows of ``images`` to use (default: all, in order).
        padded: ``images`` already carry the zero border of width ``p`` (:func:`pad_images`), so
            no per-batch padding copy is made.
        affine: the normalisation's ``(scale, shift)`` from :func:`normalisation_affine` (computed
            here when None; a loader passes them once instead of a host-to-device copy per batch).

    Returns:
        ``[B, C, H, W]`` float32 on ``images``' device. Normalisation is ``x · (1 / (255 std)) −
        mean / std`` in one pass, within 1 ulp of torchvision's ``(x / 255 − mean) / std``.
    """
    x = images if images.ndim == 4 else images[..., None]
    p = spec.crop_padding
    if p and not padded:
        x, padded = pad_images(x, p), True
    dev = x.device
    h, w = x.shape[1] - 2 * p * padded, x.shape[2] - 2 * p * padded
    b = len(indices) if indices is not None else x.shape[0]
    sample = indices if indices is not None else torch.arange(b, device=dev)
    if p or spec.flip:
        rows = torch.arange(h, device=dev).expand(b, h)
        cols = torch.arange(w, device=dev).expand(b, w)
        if p:
            if offsets is None:
                raise ValueError(f"augment_batch: crop_padding={p} needs the crop corners (offsets)")
            rows = rows + offsets[:, :1]
            cols = cols + offsets[:, 1:]
        if spec.flip:
            if flips is None:
                raise ValueError("augment_batch: spec.flip needs the flips")
            cols = torch.where(flips[:, None], cols.flip(1), cols)  # mirroring the crop = reversed columns
        crop = x[sample[:, None, None], rows[:, :, None], cols[:, None, :]]  # [B, H, W, C] uint8
    else:
        crop = x.index_select(0, sample) if indices is not None else x
    out = torch.empty(b, crop.shape[3], h, w, device=dev)
    out.copy_(crop.permute(0, 3, 1, 2))  # uint8 -> float32 and NHWC -> NCHW in one pass
    scale, shift = affine if affine is not None else normalisation_affine(spec, out.shape[1], dev)
    return torch.addcmul(shift, out, scale, out=out)


def normalisation_affine(spec: AugmentSpec, channels: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``ToTensor`` + ``Normalize`` as ``x · scale + shift``: ``[1, C, 1, 1]`` float32 each.

    ``scale = 1 / (255 std)`` and ``shift = −mean / std`` are formed in float64 and rounded once.
    """
    mean = torch.tensor(spec.mean or (0.0,) * channels, dtype=torch.float64)
    std = torch.tensor(spec.std or (1.0,) * channels, dtype=torch.float64)
    scale = (1.0 / (255.0 * std)).float().to(device)[None, :, None, None]
    shift = (-mean / std).float().to(device)[None, :, None, None]
    return scale, shift


def pad_images(images: Tensor, padding: int) -> Tensor:
    """``[N, H, W, C]`` uint8 with a zero border of ``padding`` pixels: ``[N, H + 2p, W + 2p, C]``."""
    return torch.nn.functional.pad(images, (0, 0, padding, padding, padding, padding))


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed 63-bit seed for the augmentation of ``(seed, epoch, rank)``."""
    return int(np.random.SeedSequence([seed, epoch, rank, 0xA06]).generate_state(1, np.uint64)[0] >> 1)


class DeviceLoader(ResumePosition):
    """Batches ``(x float32 [B, C, H, W], y [B])`` drawn on a device from data resident there.

    Its position within the epoch is saved in checkpoints like the DataLoader path's
    (:class:`~lt_lightning.data.loading.ResumePosition`).

    Args:
        data: uint8 images ``[N, H, W(, C)]`` (augmented by ``spec``), or float inputs ``[N, ...]``
            (passed through as they are; ``spec`` must then be empty). A numpy array or tensor.
        targets: ``[N]`` labels.
        sampler: the training sampler (iterated once per epoch for this rank's indices).
        batch_size: samples per batch; drop_last: drop the last incomplete batch.
        spec: the augmentation (:func:`spec_from_transform`).
        device: where the data live and the batches are made.
        seed: base seed of the augmentation (mixed with the sampler's epoch and rank).
        channels_last: return image batches in ``torch.channels_last`` memory format.
    """

    batch_size: int
    #: batches come from ``sampler`` and ``batch_size`` (Lightning's evaluation loop reads this attribute)
    batch_sampler = None

    def __init__(
        self,
        data: np.ndarray | Tensor,
        targets: Tensor,
        sampler,
        batch_size: int,
        spec: AugmentSpec,
        device: torch.device | str = "cpu",
        *,
        drop_last: bool = False,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.data = torch.as_tensor(data).to(self.device)
        self.is_image = self.data.dtype == torch.uint8
        if self.is_image:
            if self.data.ndim == 3:
                self.data = self.data[..., None]
            if spec.crop_padding:  # the zero border once for the whole set, not per batch
                self.data = pad_images(self.data, spec.crop_padding)
            self._affine = normalisation_affine(spec, self.data.shape[-1], self.device)
        if not self.is_image and (spec.crop_padding or spec.flip or spec.mean):
            raise ValueError(f"augmentation {spec} needs uint8 images, got {self.data.dtype} data")
        self.targets = torch.as_tensor(targets, dtype=torch.long).to(self.device)
        if len(self.targets) != len(self.data):
            raise ValueError(f"{len(self.data)} samples but {len(self.targets)} targets")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.spec = spec
        self.drop_last = drop_last
        self.seed = int(seed)
        self.channels_last = channels_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _params(self, n: int) -> tuple[Tensor | None, Tensor | None]:
        """Crop corners ``[n, 2]`` and flips ``[n]`` of the epoch, from ``(seed, epoch, rank)``."""
        epoch = int(getattr(self.sampler, "epoch", 0))
        rank = int(getattr(self.sampler, "rank", 0))
        g = torch.Generator(device=self.device).manual_seed(_epoch_seed(self.seed, epoch, rank))
        p = self.spec.crop_padding
        offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=g, device=self.device) if p else None
        flips = torch.rand(n, generator=g, device=self.device) < 0.5 if self.spec.flip else None
        return offsets, flips

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        indices = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long).to(self.device)
        # The crops and flips are drawn for the rank's whole slice of the epoch; after a mid-epoch
        # resume the sampler yields the slice without its first `skipped` samples, which had them.
        slice_len = max(len(self.sampler), len(indices))
        skipped = slice_len - len(indices)
        offsets, flips = self._params(slice_len)
        stop = len(self) * self.batch_size - skipped
        for start in range(0, min(stop, len(indices)), self.batch_size):  # one iteration per batch
            sel = slice(start, start + self.batch_size)
            params = slice(skipped + start, skipped + start + self.batch_size)
            idx = indices[sel]
            if self.is_image:
                x = augment_batch(
                    self.data,
                    self.spec,
                    None if offsets is None else offsets[params],
                    None if flips is None else flips[params],
                    indices=idx,
                    padded=True,
                    affine=self._affine,
                )
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            else:
                x = self.data.index_select(0, idx)
            yield x, self.targets.index_select(0, idx)
