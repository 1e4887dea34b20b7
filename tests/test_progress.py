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


def test_progress_passes_items_through(capsys, monkeypatch):
    monkeypatch.setenv("LT_LIGHTNING_PROGRESS", "bar")  # pytest's stdout is no terminal
    assert list(progress(range(5), "x", enabled=False)) == list(range(5))
    assert capsys.readouterr().err == ""
    assert list(progress(iter(range(3)), "counting", enabled=True)) == [0, 1, 2]
    assert "counting" in capsys.readouterr().err


def test_trainer_decides(tmp_path):
    assert not trainer_shows_progress(None)
    quiet = L.Trainer(enable_progress_bar=False, logger=False, default_root_dir=tmp_path)
    loud = L.Trainer(enable_progress_bar=True, logger=False, default_root_dir=tmp_path)
    assert not trainer_shows_progress(quiet) and trainer_shows_progress(loud)


def test_nc_pass_draws_a_bar_only_when_the_trainer_does(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LT_LIGHTNING_PROGRESS", "bar")
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


# ---- the training progress: a bar with loss/accuracy on a terminal, a line per epoch in a file ----------
def _tiny_fit(tmp_path, callbacks):
    dm = SyntheticLTDataModule(num_classes=4, feature_dim=8, max_count=40, imbalance_ratio=4, batch_size=16)
    model = JointModule(
        num_classes=dm.num_classes,
        class_counts=dm.class_counts,
        backbone="mlp",
        backbone_kwargs={"in_features": 8, "hidden": [16]},
    )
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    return trainer, model


def test_off_a_terminal_each_epoch_is_one_line(tmp_path, capsys, monkeypatch):
    import re

    from lt_lightning.progress import EpochLines, progress_bar_callback

    monkeypatch.delenv("LT_LIGHTNING_PROGRESS", raising=False)
    assert isinstance(progress_bar_callback(), EpochLines)  # pytest's stdout is no terminal
    trainer, _ = _tiny_fit(tmp_path, [progress_bar_callback()])
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3
    for i, line in enumerate(lines, 1):
        assert re.fullmatch(rf"epoch {i}/3  loss \S+  acc \S+  val_acc \S+  \(\d+\.\d s\)", line), line
    last = float(lines[-1].split("val_acc ")[1].split()[0])
    assert last == pytest.approx(float(trainer.callback_metrics["val/acc"]), rel=1e-3)
    assert "it/s" not in captured.out + captured.err  # no per-batch output


def test_on_a_terminal_the_bar_shows_loss_and_accuracy(tmp_path, monkeypatch):
    from lt_lightning.progress import MetricsProgressBar, progress_bar_callback

    monkeypatch.setenv("LT_LIGHTNING_PROGRESS", "bar")
    bar = progress_bar_callback()
    assert isinstance(bar, MetricsProgressBar)
    trainer, model = _tiny_fit(tmp_path, [bar])
    shown = bar.get_metrics(trainer, model)
    assert {"loss", "acc", "val_acc"} <= set(shown) and "v_num" not in shown
    assert float(shown["val_acc"]) == pytest.approx(float(trainer.callback_metrics["val/acc"]), rel=1e-3)


def test_third_party_noise_is_filtered_and_our_warnings_are_not():
    import warnings

    from lt_lightning.progress import quiet_third_party

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use x instead.", DeprecationWarning, stacklevel=2
        )
        warnings.warn(
            "LightningCLI's args parameter is intended to run from within Python like if it were",
            UserWarning,
            stacklevel=2,
        )
        warnings.warn(
            "lt-lightning test without --ckpt_path: the numbers below score an UNTRAINED model",
            UserWarning,
            stacklevel=2,
        )
    assert [str(w.message)[:12] for w in caught] == ["lt-lightning"]


def test_lightnings_tips_are_dropped(caplog):
    import logging

    from lightning.pytorch.utilities import rank_zero_info

    from lt_lightning.progress import quiet_third_party

    quiet_third_party()
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
        rank_zero_info("GPU available: False, used: False")
    assert [r.getMessage()[:3] for r in caplog.records] == ["GPU"]


def test_the_bar_reads_the_device_once_per_log_period_while_training(tmp_path, monkeypatch):
    import lt_lightning.progress as progress

    reads: list[tuple[int, bool]] = []
    real = progress._bar_metrics

    def counted(trainer, epoch=False):
        reads.append((trainer.global_step, trainer.training))
        return real(trainer, epoch)

    monkeypatch.setattr(progress, "_bar_metrics", counted)
    monkeypatch.setenv("LT_LIGHTNING_PROGRESS", "bar")
    bar = progress.progress_bar_callback()
    trainer, _ = _tiny_fit(tmp_path, [bar])  # 6 steps an epoch, 3 epochs, log_every_n_steps 50
    steps = trainer.global_step
    assert steps > 4
    training_reads = [step for step, training in reads if training]
    # a read per log period and after each validation (steps 0-17 are one period here), not per redraw
    assert len(training_reads) <= trainer.max_epochs + steps // 50 + 1 < steps
