"""Where a run's outputs go and what it prints: one run folder per fit/test/predict (config, CSV log,
checkpoints, predictions) named at the end; 4 significant digits; the epoch of each NC number (measured at
the last epoch); ``--version`` and ``--help`` listing ``seeds`` and ``suite``; relative paths of a config
read against the directory the command started in (``seeds`` on MNIST-LT files)."""

from __future__ import annotations

import json
import re

import lightning as L
import pytest
from jsonargparse import Namespace

from lt_lightning import __version__
from lt_lightning.callbacks import NeuralCollapseCallback
from lt_lightning.cli import build_cli, format_metrics_table, main
from lt_lightning.cli.runs import apply_run_folder
from lt_lightning.cli.tables import significant
from lt_lightning.data import SyntheticLTDataModule
from lt_lightning.models import JointModule
from tests.cli.helpers import CONFIGS, QUIET, digits
from tests.data.formats import write_mnist


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.65, "0.6500"),
        (43.1, "43.10"),
        (1.238, "1.238"),
        (123.456, "123.5"),
        (1234.5, "1234"),
        (0.0001234, "0.0001234"),
        (0.0, "0.000"),
        (float("nan"), "nan"),
    ],
)
def test_four_significant_digits(value, text):
    assert significant(value) == text
    if text not in ("nan", "0.000"):  # the digits really are the value's
        assert float(text) == pytest.approx(value, rel=5e-4)


def test_the_metrics_table_says_the_epoch_of_each_nc_number():
    metrics = {"val/acc": 0.8399999737739563, "nc/train/nc1": 0.123456789, "nc/epoch": 11.0}
    table = format_metrics_table(metrics, "val")
    assert re.search(r"^val/acc\s+0\.8400$", table, re.M)
    assert re.search(r"^nc/train/nc1 \(epoch 11\)\s+0\.1235$", table, re.M)
    assert "0.83999" not in table
    assert "(epoch" not in format_metrics_table({"nc/train/nc1": 0.5}, "val")  # unknown: not invented


def _config(sub_dirpath="runs/digits_lt/joint/seed{seed}", logger_dir="runs"):
    ckpt = Namespace(
        class_path="lightning.pytorch.callbacks.ModelCheckpoint", init_args=Namespace(dirpath=sub_dirpath)
    )
    csv = Namespace(
        class_path="lightning.pytorch.loggers.CSVLogger",
        init_args=Namespace(save_dir=logger_dir, name="lightning_logs", version=None),
    )
    wandb = Namespace(
        class_path="lt_lightning.loggers.WandbLoggerOfflineSafe",
        init_args=Namespace(save_dir="runs", name=None),
    )
    return Namespace(
        config=[str(CONFIGS / "digits_lt/_base.yaml"), str(CONFIGS / "digits_lt/joint.yaml")],
        seed_everything=3,
        run_dir=None,
        run_group="g",
        trainer=Namespace(logger=[csv, wandb], callbacks=[ckpt]),
    )


def test_the_run_folder_of_each_subcommand():
    fit = _config("runs/digits_lt/joint/seed3")
    assert apply_run_folder(fit, "fit") == "runs/digits_lt/joint/seed3"
    csv, wandb = fit.trainer.logger
    assert (csv.init_args.save_dir, csv.init_args.name, csv.init_args.version) == (
        "runs/digits_lt/joint/seed3",
        "",
        "",
    )
    assert wandb.init_args.name == "digits_lt/joint/seed3" and wandb.init_args.group == "g"
    assert wandb.init_args.tags == ["method:joint", "dataset:digits_lt", "follows:own"]
    test = _config("runs/digits_lt/joint/seed3")
    assert apply_run_folder(test, "test") == "runs/digits_lt/joint/seed3/test"  # never the fit's config/log
    explicit = _config()
    explicit.run_dir = "elsewhere/r1"
    assert apply_run_folder(explicit, "fit") == "elsewhere/r1"
    assert explicit.trainer.callbacks[0].init_args.dirpath == "elsewhere/r1"  # checkpoints there too
    mine = _config(logger_dir="my_logs")
    apply_run_folder(mine, "fit")
    assert mine.trainer.logger[0].init_args.save_dir == "my_logs"  # a logger the user placed stays


def test_nc_is_measured_at_the_last_epoch_and_says_which(tmp_path):
    calls = []

    class Counting(NeuralCollapseCallback):
        def measure(self, trainer, pl_module, figures=None):
            calls.append(trainer.current_epoch)
            return super().measure(trainer, pl_module, figures)

    dm = SyntheticLTDataModule(num_classes=4, feature_dim=8, max_count=40, imbalance_ratio=4, batch_size=32)
    model = JointModule(
        num_classes=4,
        class_counts=dm.class_counts,
        backbone="mlp",
        backbone_kwargs={"in_features": 8, "hidden": [16]},
    )
    trainer = L.Trainer(
        max_epochs=5, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[Counting(every_n_epochs=2, on="train", log_figures=False)],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert calls == [1, 3, 4]  # every 2nd epoch, and the last one (0-based 4) for the final numbers
    assert float(trainer.callback_metrics["nc/epoch"]) == 4.0


def test_version_and_help_list_every_command(capsys):
    main(["--version"])
    assert capsys.readouterr().out.strip() == f"lt-lightning {__version__}"
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "seeds", "suite", "--version"):
        assert re.search(rf"^\s+{re.escape(command)}\s", out, re.M), command


@pytest.mark.slow
def test_fit_test_and_predict_each_write_one_folder_and_say_where(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs/digits_lt/joint/seed0"
    build_cli(["fit", "-c", digits("joint"), "--trainer.max_epochs", "1", *QUIET])
    out = capsys.readouterr().out
    assert {"config.yaml", "metrics.csv", "last.ckpt"} <= {p.name for p in run.iterdir()}
    assert "[lt-lightning] run folder: runs/digits_lt/joint/seed0 (config.yaml, metrics.csv, last.ckpt" in out
    assert re.search(r"^nc/train/nc1 \(epoch 0\)\s+\d\.\d{4}$", out, re.M)  # measured at the last epoch
    assert not (tmp_path / "runs/lightning_logs").exists() and not (tmp_path / "runs/config.yaml").exists()
    fit_config = (run / "config.yaml").read_text()
    ckpt = str(run / "last.ckpt")
    build_cli(["test", "-c", digits("joint"), "--ckpt_path", ckpt, *QUIET])
    out = capsys.readouterr().out
    assert {"config.yaml", "metrics.csv"} <= {p.name for p in (run / "test").iterdir()}
    assert "[lt-lightning] run folder: runs/digits_lt/joint/seed0/test (config.yaml, metrics.csv)" in out
    assert re.search(r"^test/acc\s+0\.\d{4}$", out, re.M) and not re.search(r"0\.\d{7,}", out)
    assert (run / "config.yaml").read_text() == fit_config  # the fit's files are left as they were
    build_cli(["predict", "-c", digits("joint"), "--ckpt_path", ckpt, *QUIET])
    out = capsys.readouterr().out
    assert {"predictions.csv", "predictions.pt", "config.yaml"} <= {
        p.name for p in (run / "predict").iterdir()
    }
    assert (
        "run folder: runs/digits_lt/joint/seed0/predict (config.yaml, predictions.csv, predictions.pt)" in out
    )


@pytest.mark.slow
def test_seeds_on_mnist_reads_data_dir_against_the_start_directory(tmp_path, monkeypatch):
    # before: data_dir "data" was read inside each seed's folder: MNIST file not found at out/joint/seed0/data
    write_mnist(tmp_path / "data", "MNIST", 20, 4)
    monkeypatch.chdir(tmp_path)
    small = ["--trainer.max_epochs", "1", "--trainer.precision", "32", "--trainer.accelerator", "cpu"]
    small += [
        "--trainer.devices",
        "1",
        "--data.init_args.max_count",
        "20",
        "--data.init_args.imbalance_ratio",
        "4",
    ]
    small += ["--data.init_args.num_workers", "0", "--data.init_args.batch_size", "16", *QUIET]
    main(["seeds", "-c", str(CONFIGS / "mnist_lt/joint.yaml"), "--seeds", "0", "--out", "out", *small])
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    (run,) = summary["runs"]
    assert run["status"] == "done" and 0.0 <= run["metrics"]["test/acc"] <= 1.0
    assert (tmp_path / "out/mnist_lt/joint/seed0/last.ckpt").is_file()
