"""Readers on tiny files written in the real on-disk formats."""

import numpy as np
import pytest

from lt_lightning.data.datasets import (
    SplitFileDataset,
    read_cifar,
    read_idx,
    read_mnist,
    read_split_file,
    read_stl10,
    read_svhn,
)
from tests.data import formats


@pytest.mark.parametrize("k", [10, 100])
def test_read_cifar_round_trip(tmp_path, k):
    written = formats.write_cifar(tmp_path, k, train_per_class=3, test_per_class=2)
    for split in ("train", "test"):
        images, labels = read_cifar(tmp_path, k, split)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
        assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8


@pytest.mark.parametrize("folder", ["MNIST", "FashionMNIST"])
def test_read_mnist_round_trip(tmp_path, folder):
    written = formats.write_mnist(tmp_path, folder, 4, 2)
    for split in ("train", "test"):
        images, labels = read_mnist(tmp_path, folder, split)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])


def test_read_idx_rejects_bad_magic_and_size(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        read_idx(short)


def test_read_svhn_maps_label_10_to_0(tmp_path):
    written = formats.write_svhn(tmp_path, 3, 2)
    images, labels = read_svhn(tmp_path, "train")
    np.testing.assert_array_equal(images, written["train"][0])
    np.testing.assert_array_equal(labels, written["train"][1])
    assert labels.min() == 0 and labels.max() == 9


def test_read_stl10_orientation(tmp_path):
    written = formats.write_stl10(tmp_path, 2, 1)
    images, labels = read_stl10(tmp_path, "train")
    # exact pixel equality proves the column-major transposition is undone
    np.testing.assert_array_equal(images, written["train"][0])
    np.testing.assert_array_equal(labels, written["train"][1])


@pytest.mark.parametrize(
    ("reader", "args", "match"),
    [
        (read_cifar, (10, "train"), "download=True"),
        (read_mnist, ("MNIST", "train"), "download=True"),
        (read_svhn, ("train",), "download=True"),
        (read_stl10, ("train",), "download=True"),
    ],
)
def test_missing_files_say_how_to_get_data(tmp_path, reader, args, match):
    with pytest.raises(FileNotFoundError, match=match):
        reader(tmp_path / "nowhere", *args)


def test_split_file_parse_and_load(tmp_path):
    labels = np.array([0, 1, 2, 1])
    formats.write_image_folder(tmp_path, "train.txt", labels)
    paths, parsed = read_split_file(tmp_path / "train.txt", tmp_path, num_classes=3)
    np.testing.assert_array_equal(parsed, labels)
    ds = SplitFileDataset(tmp_path, paths, parsed)
    img, y = ds[2]
    assert img.size == (43, 40) and img.mode == "RGB" and y == 2


def test_split_file_paths_with_spaces(tmp_path):
    (tmp_path / "a dir").mkdir()
    (tmp_path / "list.txt").write_text("a dir/x y.jpg 4\n\n")
    paths, labels = read_split_file(tmp_path / "list.txt", tmp_path, num_classes=5)
    assert paths == ["a dir/x y.jpg"] and labels.tolist() == [4]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("just_a_path.jpg", r"line 2: expected '<relative path> <integer label>'"),
        ("img.jpg seven", r"line 2: expected"),
        ("img.jpg 5", r"line 2: label 5 outside 0\.\.2"),
        ("img.jpg -1", r"line 2: label -1 outside"),
        ("../outside.jpg 1", r"line 2: path '\.\./outside\.jpg' is absolute or escapes"),
        ("/etc/passwd 1", r"line 2: path '/etc/passwd' is absolute or escapes"),
        ("a/../../b.jpg 1", r"escapes the image root"),
    ],
)
def test_split_file_bad_lines_name_file_and_line(tmp_path, line, match):
    f = tmp_path / "split.txt"
    f.write_text(f"ok.jpg 0\n{line}\n")
    with pytest.raises(ValueError, match=match) as info:
        read_split_file(f, tmp_path, num_classes=3)
    assert "split.txt" in str(info.value)


def test_missing_image_is_named(tmp_path):
    ds = SplitFileDataset(tmp_path, ["gone.jpg"], [0])
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        ds[0]
