"""Batch-size edge cases and corrupt data files (moved from tests/reliability/)."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from lt_lightning.data import SyntheticLTDataModule
from lt_lightning.data.datamodules import train_drop_last
from lt_lightning.data.datasets import read_cifar
from lt_lightning.models import JointModule
from tests.data import formats


def synthetic_dm(**kwargs) -> SyntheticLTDataModule:
    args = {"num_classes": 6, "feature_dim": 16, "max_count": 120, "imbalance_ratio": 10, "batch_size": 32}
    return SyntheticLTDataModule(**{**args, **kwargs})


def test_train_drop_last_rules():
    assert train_drop_last(33, 4, False) is True  # 8 batches of 4 and one of 1: the 1 is dropped
    assert train_drop_last(34, 4, False) is False  # last batch of 2 is kept
    assert train_drop_last(32, 4, False) is False
    assert train_drop_last(1, 4, False) is False  # a single sample is all there is: nothing to drop to
    assert train_drop_last(7, 1, False) is False
    assert train_drop_last(34, 4, True) is True
    with pytest.raises(ValueError, match=r"batch_size 64 is larger than the 40 training samples .*drop_last"):
        train_drop_last(40, 64, True)


def test_a_last_batch_of_one_is_dropped_and_batchnorm_trains(tmp_path):
    dm = synthetic_dm()
    dm.setup("fit")
    n = dm.num_train_samples
    bs = next(b for b in range(3, n) if n % b == 1)
    dm = synthetic_dm(batch_size=bs)
    sizes = [len(y) for _, y in dm.train_dataloader()]
    assert min(sizes) >= 2 and sum(sizes) == n - 1
    model = JointModule(  # BatchNorm fails on a batch of one
        num_classes=dm.num_classes,
        class_counts=dm.class_counts,
        backbone="mlp",
        backbone_kwargs={"in_features": 16, "hidden": [32]},
        neck="bn",
    )
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2 * (n // bs)


def test_drop_last_with_a_batch_larger_than_the_data_is_an_error():
    dm = synthetic_dm(batch_size=10_000, drop_last=True)
    with pytest.raises(ValueError, match="no training batch would be left"):
        dm.train_dataloader()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_corrupt_cifar_files_name_the_file_and_run_no_code(tmp_path):
    formats.write_cifar(tmp_path, 10, train_per_class=2, test_per_class=1)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    good = batch.read_bytes()
    batch.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"test_batch is not a readable CIFAR batch \(corrupt or truncated"):
        read_cifar(tmp_path, 10, "test")
    batch.write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="test_batch is not a readable CIFAR batch"):
        read_cifar(tmp_path, 10, "test")
    marker = tmp_path / "pwned"
    batch.write_bytes(pickle.dumps({"data": _Payload(marker), "labels": [0]}))
    with pytest.raises(ValueError, match=r"test_batch .*refusing to load pathlib"):
        read_cifar(tmp_path, 10, "test")
    assert not marker.exists()
    batch.write_bytes(pickle.dumps({"labels": np.zeros(3)}))
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 batch"):
        read_cifar(tmp_path, 10, "test")
