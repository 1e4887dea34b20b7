import numpy as np
import pytest

from lt_lightning.data import long_tail_counts, long_tail_split


def _ldam_reference(targets, counts, seed):
    """The CIFAR-LT generator as the LDAM-DRW code does it: global numpy seed, shuffle per class."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        selected = []
        for c, n in enumerate(counts):
            idx = np.where(targets == c)[0]
            np.random.shuffle(idx)
            selected.append(idx[:n])
        return np.concatenate(selected)
    finally:
        np.random.set_state(state)


def test_matches_ldam_generator_on_cifar_sized_labels():
    rng = np.random.default_rng(0)
    targets = rng.permutation(np.repeat(np.arange(10), 5000))
    counts = long_tail_counts(10, 5000, 100)
    train, val = long_tail_split(targets, counts, seed=0)
    np.testing.assert_array_equal(train, _ldam_reference(targets, counts, 0))
    assert len(train) == 12406 and len(val) == 0
    assert np.bincount(targets[train]).tolist() == counts


def test_val_comes_from_unused_images_and_keeps_training_split():
    rng = np.random.default_rng(1)
    targets = rng.permutation(np.repeat(np.arange(5), 40))
    counts = [40, 20, 10, 5, 2]
    train_no_val, _ = long_tail_split(targets, counts, seed=3)
    train, val = long_tail_split(targets, counts, seed=3, val_per_class=8)
    assert not set(train) & set(val)
    assert np.bincount(targets[val], minlength=5).tolist() == [8] * 5
    # classes with room keep exactly the same training images; the head class gives up 8
    assert np.bincount(targets[train], minlength=5).tolist() == [32, 20, 10, 5, 2]
    for c in range(1, 5):
        np.testing.assert_array_equal(train[targets[train] == c], train_no_val[targets[train_no_val] == c])


def test_seed_changes_selection_deterministically():
    targets = np.repeat(np.arange(3), 50)
    a, _ = long_tail_split(targets, [10, 5, 2], seed=0)
    b, _ = long_tail_split(targets, [10, 5, 2], seed=0)
    c, _ = long_tail_split(targets, [10, 5, 2], seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("counts", "val", "match"),
    [
        ([10, 60], 0, "class 1 has 50 images"),
        ([10, 0], 0, "class 1 would end with 0 training samples"),
        ([10, 10], 50, "class 0 has 50 images"),
    ],
)
def test_split_errors(counts, val, match):
    targets = np.repeat(np.arange(2), 50)
    with pytest.raises(ValueError, match=match):
        long_tail_split(targets, counts, val_per_class=val)


def test_labels_outside_range_rejected():
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1"):
        long_tail_split(np.array([0, 1, 2]), [1, 1])
