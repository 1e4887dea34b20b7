"""On-disk dataset readers and the small Dataset classes the datamodules wrap.

The readers parse the formats that torchvision's downloads leave on disk (CIFAR's pickled batches,
MNIST's IDX files, SVHN's .mat files, STL-10's binaries) directly, without torchvision's checksum
checks, so any file in the same format loads; torchvision is used only to download. Split-file
datasets (ImageNet-LT, Places-LT, iNaturalist-2018) read ``<relative path> <label>`` lines.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "ArrayImageDataset",
    "LabelledDataset",
    "SplitFileDataset",
    "TensorFeatureDataset",
    "read_cifar",
    "read_idx",
    "read_mnist",
    "read_split_file",
    "read_stl10",
    "read_svhn",
]

_CIFAR_DIRS = {10: "cifar-10-batches-py", 100: "cifar-100-python"}
_CIFAR_FILES = {
    10: ({"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}, "labels"),
    100: ({"train": ["train"], "test": ["test"]}, "fine_labels"),
}


def _missing(path: Path, name: str, how: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name} not found at {path}. {how}")


#: the only globals a CIFAR batch pickle may name (numpy arrays); anything else could run code
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not plain data)")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> object:
    """Unpickle one CIFAR batch with only numpy arrays allowed; errors name the file."""
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="latin1").load()
    except Exception as err:  # truncated or garbage files fail anywhere in the unpickler
        raise ValueError(
            f"{path} is not a readable CIFAR batch (corrupt or truncated: {err}); delete it and download again"
        ) from err


def read_cifar(root: str | os.PathLike, num_classes: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10/100 from torchvision's on-disk format (pickled batches).

    Returns:
        ``(images [N, 32, 32, 3] uint8, labels [N] int64)``.
    """
    if num_classes not in _CIFAR_DIRS:
        raise ValueError(f"CIFAR has 10 or 100 classes, got num_classes={num_classes}")
    files, key = _CIFAR_FILES[num_classes]
    folder = Path(root) / _CIFAR_DIRS[num_classes]
    images, labels = [], []
    for name in files[split]:
        path = folder / name
        if not path.is_file():
            raise _missing(
                path,
                f"CIFAR-{num_classes} file {name!r}",
                "Pass download=True (needs internet) or place torchvision's extracted "
                f"'{_CIFAR_DIRS[num_classes]}' folder under data_dir.",
            )
        batch = _load_cifar_batch(path)
        if not isinstance(batch, dict) or "data" not in batch or key not in batch:
            raise ValueError(f"{path} is not a CIFAR-{num_classes} batch (no 'data' / {key!r} entries)")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[key], dtype=np.int64))
    return np.concatenate(images).transpose(0, 2, 3, 1).copy(), np.concatenate(labels)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an uncompressed IDX file (the MNIST format: big-endian header, then uint8 data)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {body.size} bytes")
    return body.reshape(shape)


def read_mnist(root: str | os.PathLike, folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST or Fashion-MNIST from ``root/<folder>/raw`` (torchvision's layout).

    Returns:
        ``(images [N, 28, 28] uint8, labels [N] int64)``.
    """
    prefix = "train" if split == "train" else "t10k"
    raw = Path(root) / folder / "raw"
    img_path, lbl_path = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
    for p in (img_path, lbl_path):
        if not p.is_file():
            raise _missing(
                p,
                f"{folder} file",
                f"Pass download=True (needs internet) or place the "
                f"uncompressed IDX files under data_dir/{folder}/raw.",
            )
    return read_idx(img_path).copy(), read_idx(lbl_path).astype(np.int64)


def read_svhn(root: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read SVHN's ``{split}_32x32.mat`` (label 10 stands for digit 0, as in the original files).

    Returns:
        ``(images [N, 32, 32, 3] uint8, labels [N] int64 in 0..9)``.
    """
    import scipy.io

    path = Path(root) / f"{split}_32x32.mat"
    if not path.is_file():
        raise _missing(
            path,
            "SVHN file",
            f"Pass download=True (needs internet) or place '{split}_32x32.mat' under data_dir.",
        )
    mat = scipy.io.loadmat(str(path))
    images = np.transpose(mat["X"], (3, 0, 1, 2)).astype(np.uint8)
    labels = mat["y"].astype(np.int64).reshape(-1) % 10
    return np.ascontiguousarray(images), labels


def read_stl10(root: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read STL-10's binaries from ``root/stl10_binary`` (column-major 96×96 images, labels 1..10).

    Returns:
        ``(images [N, 96, 96, 3] uint8, labels [N] int64 in 0..9)``.
    """
    folder = Path(root) / "stl10_binary"
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    for p in (x_path, y_path):
        if not p.is_file():
            raise _missing(
                p,
                "STL-10 file",
                "Pass download=True (needs internet) or place "
                "torchvision's extracted 'stl10_binary' folder under data_dir.",
            )
    raw = np.fromfile(x_path, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise ValueError(f"{x_path} holds {raw.size} bytes, not a whole number of 3x96x96 images")
    # Stored channel-major with each channel in column-major order: [N, C, W, H] -> [N, H, W, C].
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{y_path} has {labels.shape[0]} labels for {images.shape[0]} images")
    return np.ascontiguousarray(images), labels


def read_split_file(
    split_file: str | os.PathLike, root: str | os.PathLike, num_classes: int | None = None
) -> tuple[list[str], np.ndarray]:
    """Parse a split file: one sample a line, ``<relative image path> <integer label>``.

    Paths are relative to ``root`` and may not leave it. Blank lines are skipped.

    Returns:
        ``(relative paths, labels [N] int64)``.

    Raises:
        FileNotFoundError: the split file is missing.
        ValueError: a line does not parse, a label is outside ``0..num_classes-1``, or a path is absolute
            or escapes ``root`` (the file and line number are named).
    """
    split_file = Path(split_file)
    if not split_file.is_file():
        raise FileNotFoundError(f"split file not found: {split_file}")
    root_resolved = Path(root).resolve()
    paths: list[str] = []
    labels: list[int] = []
    with open(split_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            rel, sep, label_text = line.rpartition(" ")
            rel = rel.strip()
            try:
                label = int(label_text)
            except ValueError:
                label = None
            if not sep or not rel or label is None:
                raise ValueError(
                    f"{split_file}, line {lineno}: expected '<relative path> <integer label>', got {line!r}"
                )
            if num_classes is not None and not 0 <= label < num_classes:
                raise ValueError(f"{split_file}, line {lineno}: label {label} outside 0..{num_classes - 1}")
            if os.path.isabs(rel) or not (root_resolved / rel).resolve().is_relative_to(root_resolved):
                raise ValueError(
                    f"{split_file}, line {lineno}: path {rel!r} is absolute or escapes the image root"
                )
            paths.append(rel)
            labels.append(label)
    return paths, np.asarray(labels, dtype=np.int64)


class LabelledDataset(Dataset):
    """A dataset whose ``[N]`` int64 labels are its ``targets`` and whose items are ``(x, label)``."""

    targets: torch.Tensor
    transform: Callable | None

    def __len__(self) -> int:
        return len(self.targets)


class ArrayImageDataset(LabelledDataset):
    """Images held in memory as uint8 arrays ``[N, H, W]`` or ``[N, H, W, C]``; yields ``(x, label)``."""

    def __init__(
        self,
        images: np.ndarray,
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        transform: Callable | None = None,
    ):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        x = self.transform(img) if self.transform is not None else img
        return x, int(self.targets[i])


class TensorFeatureDataset(LabelledDataset):
    """Pre-made float tensors ``[N, ...]`` (digits, synthetic clusters); yields ``(x, label)``."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, transform: Callable | None = None):
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs = inputs
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.inputs[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[i])


class SplitFileDataset(LabelledDataset):
    """Images listed in a split file under an image root (ImageNet-LT, Places-LT, iNaturalist-2018)."""

    def __init__(
        self,
        root: str | os.PathLike,
        paths: Sequence[str],
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        transform: Callable | None = None,
    ):
        self.root = Path(root)
        self.paths = list(paths)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.root / self.paths[i]
        if not path.is_file():
            raise FileNotFoundError(f"image listed in the split file is missing: {path}")
        with Image.open(path) as file:
            img = file.convert("RGB")
        x = self.transform(img) if self.transform is not None else img
        return x, int(self.targets[i])
