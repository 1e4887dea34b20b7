"""Writers of tiny datasets in the real on-disk formats (what torchvision's downloads leave behind)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def make_images(labels: np.ndarray, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random uint8 images whose first pixel encodes the sample index (to track images through splits)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)
    return images


def balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(num_classes), per_class)).astype(np.int64)


def write_cifar(root: Path, num_classes: int, train_per_class: int, test_per_class: int):
    """CIFAR-10/100 pickled batches. Returns {split: (images [N,32,32,3], labels)}."""
    out = {}
    folder = root / ("cifar-10-batches-py" if num_classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True)
    key = "labels" if num_classes == 10 else "fine_labels"
    for split, per_class, seed in (("train", train_per_class, 1), ("test", test_per_class, 2)):
        labels = balanced_labels(num_classes, per_class, seed)
        images = make_images(labels, (32, 32, 3), seed)
        out[split] = (images, labels)
        flat = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)
        if num_classes == 10:
            names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        else:
            names = [split]
        for chunk, name in zip(np.array_split(np.arange(len(labels)), len(names)), names):
            with open(folder / name, "wb") as f:
                pickle.dump({"data": flat[chunk], key: labels[chunk].tolist()}, f)
    return out


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str, train_per_class: int, test_per_class: int):
    out = {}
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for split, prefix, per_class, seed in (
        ("train", "train", train_per_class, 3),
        ("test", "t10k", test_per_class, 4),
    ):
        labels = balanced_labels(10, per_class, seed)
        images = make_images(labels, (28, 28), seed)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
        out[split] = (images, labels)
    return out


def write_svhn(root: Path, train_per_class: int, test_per_class: int):
    out = {}
    root.mkdir(parents=True, exist_ok=True)
    for split, per_class, seed in (("train", train_per_class, 5), ("test", test_per_class, 6)):
        labels = balanced_labels(10, per_class, seed)
        images = make_images(labels, (32, 32, 3), seed)
        stored = np.where(labels == 0, 10, labels).reshape(-1, 1)  # SVHN stores digit 0 as 10
        scipy.io.savemat(str(root / f"{split}_32x32.mat"), {"X": images.transpose(1, 2, 3, 0), "y": stored})
        out[split] = (images, labels)
    return out


def write_stl10(root: Path, train_per_class: int, test_per_class: int):
    out = {}
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, per_class, seed in (("train", train_per_class, 7), ("test", test_per_class, 8)):
        labels = balanced_labels(10, per_class, seed)
        images = make_images(labels, (96, 96, 3), seed)
        # STL-10 stores each image channel-major, every channel column-major.
        images.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")
        (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        out[split] = (images, labels)
    return out


def write_image_folder(root: Path, split_name: str, labels: np.ndarray, size: int = 40, seed: int = 0):
    """Tiny PNG images under root/<split>/<class>/<i>.png and a split file root/<split_name>."""
    rng = np.random.default_rng(seed)
    lines = []
    for i, y in enumerate(labels):
        rel = Path(split_name.split(".")[0]) / f"c{int(y)}" / f"{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(size, size + 3, 3), dtype=np.uint8)).save(root / rel)
        lines.append(f"{rel.as_posix()} {int(y)}")
    (root / split_name).write_text("\n".join(lines) + "\n")
    return lines
