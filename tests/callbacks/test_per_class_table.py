"""callbacks/per_class_table.py: the W&B per-class table at test (class, training count, accuracy, shot
group), against the module's own predictions counted per class by hand."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.loggers import WandbLogger

from lt_lightning.callbacks import PerClassTable
from lt_lightning.callbacks.per_class_table import PER_CLASS_COLUMNS, per_class_rows
from lt_lightning.loggers import WandbLoggerOfflineSafe
from lt_lightning.models import JointModule
from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm


def test_per_class_rows():
    rows = per_class_rows(torch.tensor([1.0, float("nan"), 0.25]), [50, 10, 3], torch.tensor([0, 1, 2]))
    assert rows == [[0, 50, 1.0, "many"], [1, 10, None, "medium"], [2, 3, 0.25, "few"]]
    assert per_class_rows(torch.tensor([0.5]), None, None) == [[0, None, 0.5, None]]
    assert per_class_rows(torch.tensor([0.5, 0.0]), (4, 2), [2, 0]) == [
        [0, 4, 0.5, "few"],
        [1, 2, 0.0, "many"],
    ]
    assert PER_CLASS_COLUMNS == ("class", "train_count", "accuracy", "shot_group")


@pytest.fixture
def tables(monkeypatch):
    logged = []
    monkeypatch.setattr(
        WandbLogger, "log_table", lambda self, key, columns, data, **kw: logged.append((key, columns, data))
    )
    return logged


def test_test_logs_a_per_class_table_to_wandb(tmp_path, tables):
    dm = synthetic_dm(many_threshold=40, few_threshold=25)
    model = JointModule(**model_kwargs(dm))
    logger = WandbLoggerOfflineSafe(mode="disabled", save_dir=str(tmp_path))
    res = cpu_trainer(tmp_path, logger=logger, callbacks=[PerClassTable()]).test(
        model, datamodule=dm, verbose=False
    )[0]
    ((key, columns, rows),) = tables
    assert key == "test/per_class" and columns == list(PER_CLASS_COLUMNS)
    names = ["many", "medium", "few"]
    assert [r[1] for r in rows] == dm.class_counts
    assert [r[3] for r in rows] == [names[g] for g in dm.shot_groups]
    model.eval()
    with torch.no_grad():
        x, y = dm.test_dataset.inputs, dm.test_dataset.targets
        pred = model(x).argmax(1)
    for k, _, acc, _ in rows:
        assert acc == pytest.approx((pred[y == k] == k).double().mean().item())
    assert res["test/acc"] == pytest.approx((pred == y).double().mean().item())  # the module still logs


def test_nothing_is_logged_without_a_wandb_logger_or_with_no_callback(tmp_path, tables):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm))
    cpu_trainer(tmp_path, callbacks=[PerClassTable()]).test(model, datamodule=dm, verbose=False)
    logger = WandbLoggerOfflineSafe(mode="disabled", save_dir=str(tmp_path))
    cpu_trainer(tmp_path, logger=logger).test(model, datamodule=dm, verbose=False)  # no table callback
    assert tables == []
