"""Progress bars: the helper, the digits configs, and the library's own loops (NC pass)."""

from __future__ import annotations

import lightning as L
import pytest

from lt_lightning.callbacks import NeuralCollapseCallback
from lt_lightning.data import SyntheticLTDataModule
from lt_lightning.models import JointModule
from lt_lightning.progress import progress, trainer_shows_progress
from tests.cli.helpers import DIGITS, resolved_config


@pytest.mark.parametrize(
    "path", sorted(p for p in DIGITS.glob("*.yaml") if not p.name.startswith("_")), ids=lambda p: p.stem
)
def test_digits_configs_show_the_progress_bar(path):
    assert resolved_config(path)["trainer"]["enable_progress_bar"] is True


def test_progress_passes_items_through(capsys):
    assert list(progress(range(5), "x", enabled=False)) == list(range(5))
    assert capsys.readouterr().err == ""
    assert list(progress(iter(range(3)), "counting", enabled=True)) == [0, 1, 2]
    assert "counting" in capsys.readouterr().err


def test_trainer_decides(tmp_path):
    assert not trainer_shows_progress(None)
    quiet = L.Trainer(enable_progress_bar=False, logger=False, default_root_dir=tmp_path)
    loud = L.Trainer(enable_progress_bar=True, logger=False, default_root_dir=tmp_path)
    assert not trainer_shows_progress(quiet) and trainer_shows_progress(loud)


def test_nc_pass_draws_a_bar_only_when_the_trainer_does(tmp_path, capsys):
    dm = SyntheticLTDataModule(num_classes=4, feature_dim=8, max_count=40, imbalance_ratio=4, batch_size=32)
    for shown in (False, True):
        model = JointModule(
            num_classes=dm.num_classes,
            class_counts=dm.class_counts,
            backbone="mlp",
            backbone_kwargs={"in_features": 8, "hidden": [16]},
        )
        trainer = L.Trainer(
            max_epochs=1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=shown,
            callbacks=[NeuralCollapseCallback(every_n_epochs=1, log_figures=False)],
            default_root_dir=tmp_path,
            num_sanity_val_steps=0,
        )
        trainer.fit(model, datamodule=dm)
        assert ("neural collapse" in capsys.readouterr().err) == shown
