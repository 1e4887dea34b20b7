"""Small embedded datamodules that need no download: scikit-learn's digits made long-tailed, and
Gaussian class clusters (the shared fast fixture of the tests)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lt_lightning.data.datamodules.base import LongTailDataModule
from lt_lightning.data.datasets import TensorFeatureDataset
from lt_lightning.data.profiles import ProfileName, long_tail_counts
from lt_lightning.data.splits import long_tail_split

__all__ = ["DigitsLTDataModule", "SyntheticLTDataModule"]

#: images per digit class in scikit-learn's bundled digits (``np.bincount(load_digits().target)``)
DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


class DigitsLTDataModule(LongTailDataModule):
    """The embedded default: scikit-learn's bundled 8×8 digits (1,797 images) made long-tailed.

    Per class (seeded), ``test_per_class`` images form the balanced test set; from the rest the
    long-tailed training split takes ``long_tail_counts(10, max_count, imbalance_ratio, profile)``.
    Inputs are ``[1, 8, 8]`` floats in [0, 1]. Default shot thresholds suit its size: many > 60,
    few < 20 (3 / 3 / 4 classes at the defaults). Runs anywhere, no download, seconds on a CPU.

    Args:
        imbalance_ratio: r = n_max / n_min of the training split.
        profile: long-tail profile, ``"exp"`` or ``"step"``.
        max_count: training images of the head class (digit 0 has 178, less the test and validation ones).
        test_per_class: images per class in the balanced test set.
        val_per_class: images per class in a balanced validation set (0: validate on the test set).
        many_threshold: classes with more training samples than this are many-shot.
        few_threshold: classes with fewer training samples than this are few-shot.
        **kwargs: :class:`LongTailDataModule` arguments.
    """

    def __init__(
        self,
        imbalance_ratio: float = 20.0,
        profile: ProfileName = "exp",
        max_count: int = 120,
        test_per_class: int = 50,
        val_per_class: int = 0,
        many_threshold: int = 60,
        few_threshold: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(many_threshold=many_threshold, few_threshold=few_threshold, **kwargs)
        if test_per_class < 1:
            raise ValueError(f"test_per_class must be >= 1, got {test_per_class}")
        self.imbalance_ratio = imbalance_ratio
        self.profile = profile
        self.max_count = max_count
        self.test_per_class = test_per_class
        self.val_per_class = val_per_class
        counts = long_tail_counts(10, max_count, imbalance_ratio, profile)
        # per class: its training images, the test ones and the validation ones must all fit
        spare = [n - test_per_class - val_per_class - c for n, c in zip(DIGITS_PER_CLASS, counts)]
        if min(spare) < 0:
            c = int(np.argmin(spare))
            raise ValueError(
                f"max_count={max_count}, test_per_class={test_per_class} and val_per_class={val_per_class} "
                f"ask digit {c} for {counts[c] + test_per_class + val_per_class} images; it has "
                f"{DIGITS_PER_CLASS[c]} (at most {val_per_class + min(spare)} validation images per class fit)"
            )
        self._set_class_counts(counts)

    def _build_datasets(
        self,
    ) -> tuple[TensorFeatureDataset, TensorFeatureDataset, TensorFeatureDataset, TensorFeatureDataset]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        inputs = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = np.asarray(digits.target, dtype=np.int64)
        per_class = np.bincount(labels, minlength=10)
        # Hold out a balanced test set first, then draw the long-tailed split from the rest.
        pool_counts = (per_class - self.test_per_class).tolist()
        pool_idx, test_idx = long_tail_split(
            labels, pool_counts, seed=self.seed, val_per_class=self.test_per_class
        )
        train_rel, val_rel = long_tail_split(
            labels[pool_idx], self.class_counts, seed=self.seed + 1, val_per_class=self.val_per_class
        )
        train_idx, val_idx = pool_idx[train_rel], pool_idx[val_rel]
        labels_t = torch.as_tensor(labels)
        train = TensorFeatureDataset(inputs[train_idx], labels_t[train_idx])
        test = TensorFeatureDataset(inputs[test_idx], labels_t[test_idx])
        val = TensorFeatureDataset(inputs[val_idx], labels_t[val_idx]) if self.val_per_class else test
        return train, train, val, test


class SyntheticLTDataModule(LongTailDataModule):
    """Gaussian class clusters with a long-tailed profile, for fast tests and unconstrained-feature work.

    Class centres are random directions of norm ``center_norm`` in ``feature_dim`` dimensions; samples
    are centre + ``noise_std`` · N(0, I). Everything is drawn from one generator seeded by ``seed``.

    Args:
        num_classes: K.
        feature_dim: D, the dimension of the samples.
        max_count: training samples of the head class.
        imbalance_ratio: r = n_max / n_min of the training split.
        profile: long-tail profile, ``"exp"`` or ``"step"``.
        test_per_class: samples per class in the balanced test set.
        val_per_class: samples per class in a balanced validation set (0: validate on the test set).
        center_norm: norm of every class centre.
        noise_std: standard deviation of the isotropic Gaussian noise around each centre.
        **kwargs: :class:`LongTailDataModule` arguments.
    """

    def __init__(
        self,
        num_classes: int = 10,
        feature_dim: int = 32,
        max_count: int = 200,
        imbalance_ratio: float = 20.0,
        profile: ProfileName = "exp",
        test_per_class: int = 50,
        val_per_class: int = 0,
        center_norm: float = 3.0,
        noise_std: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        if test_per_class < 1:
            raise ValueError(f"test_per_class must be >= 1, got {test_per_class}")
        self.feature_dim = feature_dim
        self.test_per_class = test_per_class
        self.val_per_class = val_per_class
        self.center_norm = center_norm
        self.noise_std = noise_std
        self._set_class_counts(long_tail_counts(num_classes, max_count, imbalance_ratio, profile))

    def _draw(self, counts: list[int], centers: torch.Tensor, g: torch.Generator) -> TensorFeatureDataset:
        labels = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))
        noise = torch.randn(len(labels), self.feature_dim, generator=g) * self.noise_std
        return TensorFeatureDataset(centers[labels] + noise, labels)

    def _build_datasets(
        self,
    ) -> tuple[TensorFeatureDataset, TensorFeatureDataset, TensorFeatureDataset, TensorFeatureDataset]:
        g = torch.Generator().manual_seed(self.seed)
        centers = torch.randn(self.num_classes, self.feature_dim, generator=g)
        centers = self.center_norm * centers / centers.norm(dim=1, keepdim=True)
        train = self._draw(self.class_counts, centers, g)
        test = self._draw([self.test_per_class] * self.num_classes, centers, g)
        val = self._draw([self.val_per_class] * self.num_classes, centers, g) if self.val_per_class else test
        return train, train, val, test
