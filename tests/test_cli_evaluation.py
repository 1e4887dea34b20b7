"""The CLI's evaluation paths: predict, evaluation options over a checkpoint, untrained-model warning,
and the metric tables printed after fit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lt_lightning.cli import build_cli, format_metrics_table
from lt_lightning.models import load_module_from_checkpoint

CONFIGS = Path(__file__).parents[1] / "configs"
FAST = ["--trainer.max_epochs", "2", "--trainer.callbacks", "[]"]


@pytest.fixture(scope="module")
def tde_run(tmp_path_factory):
    """A short digits-LT TDE run: (working directory, checkpoint path)."""
    tmp = tmp_path_factory.mktemp("tde_run")
    cb = (
        "[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
        f"init_args: {{dirpath: {tmp}/ckpt, save_last: true, save_top_k: 0}}}}]"
    )
    args = ["fit", "-c", str(CONFIGS / "digits_lt/tde.yaml"), "--trainer.max_epochs", "3"]
    args += ["--trainer.callbacks", cb, "--trainer.default_root_dir", str(tmp)]
    cwd = os.getcwd()
    os.chdir(tmp)  # the default logger writes under ./runs
    try:
        build_cli(args)
    finally:
        os.chdir(cwd)
    return tmp, tmp / "ckpt/last.ckpt"


def _test_acc_with_alpha(ckpt: Path, alpha: float) -> float:
    """Independent reference: rebuild the module from the file, set alpha, score the test set."""
    cli = build_cli(["--config", str(CONFIGS / "digits_lt/tde.yaml")], run=False)
    dm = cli.datamodule
    dm.setup("test")
    model = load_module_from_checkpoint(str(ckpt)).eval()
    model.head.alpha = alpha
    correct = n = 0
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            correct += (model(x).argmax(1) == y).sum().item()
            n += len(y)
    return correct / n


@pytest.mark.slow
def test_alpha_given_at_test_time_wins_over_the_checkpoint(tde_run, monkeypatch, capsys):
    tmp, ckpt = tde_run
    monkeypatch.chdir(tmp)
    accs = {}
    for alpha in (1.0, 3.0):
        args = ["test", "-c", str(CONFIGS / "digits_lt/tde.yaml"), "--ckpt_path", str(ckpt)]
        cli = build_cli([*args, "--model.init_args.alpha", str(alpha), "--trainer.callbacks", "[]"])
        assert cli.model.head.alpha == alpha
        accs[alpha] = float(cli.trainer.callback_metrics["test/acc"])
        assert accs[alpha] == pytest.approx(_test_acc_with_alpha(ckpt, alpha), abs=1e-6)
    assert accs[1.0] != accs[3.0]
    assert "alpha=3.0 (checkpoint: 1.0)" in capsys.readouterr().out


@pytest.mark.slow
def test_other_model_options_replaced_by_the_checkpoint_warn(tde_run, monkeypatch):
    tmp, ckpt = tde_run
    monkeypatch.chdir(tmp)
    args = ["validate", "-c", str(CONFIGS / "digits_lt/tde.yaml"), "--ckpt_path", str(ckpt)]
    with pytest.warns(UserWarning, match=r"replaced by the checkpoint's values.*num_heads=4 -> 2"):
        cli = build_cli([*args, "--model.init_args.num_heads", "4", "--trainer.callbacks", "[]"])
    assert cli.model.hparams.num_heads == 2


@pytest.mark.slow
def test_predict_writes_predictions_that_match_test(tde_run, monkeypatch, capsys):
    tmp, ckpt = tde_run
    monkeypatch.chdir(tmp)
    args = ["predict", "-c", str(CONFIGS / "digits_lt/tde.yaml"), "--ckpt_path", str(ckpt)]
    out_dir = tmp / "pred"
    writer = (
        f"[{{class_path: lt_lightning.callbacks.PredictionWriter, init_args: {{output_dir: {out_dir}}}}}]"
    )
    build_cli([*args, "--trainer.callbacks", writer])
    saved = torch.load(out_dir / "predictions.pt")
    acc = (saved["preds"] == saved["targets"]).double().mean().item()
    assert acc == pytest.approx(_test_acc_with_alpha(ckpt, 1.0), abs=1e-6)
    assert "top-1 accuracy" in capsys.readouterr().out
    # without a writer in the config the CLI adds one (files in the logger's folder)
    cli = build_cli([*args, "--trainer.callbacks", "[]"])
    writers = [cb for cb in cli.trainer.callbacks if type(cb).__name__ == "PredictionWriter"]
    assert len(writers) == 1 and Path(writers[0].last_path).is_file()


@pytest.mark.slow
def test_test_without_checkpoint_warns_loudly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="UNTRAINED model"):
        build_cli(["test", "-c", str(CONFIGS / "digits_lt/joint.yaml"), "--trainer.limit_test_batches", "1"])


def test_fit_prints_validation_and_test_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", str(CONFIGS / "digits_lt/joint.yaml"), *FAST, "--test_after_fit", "true"]
    cli = build_cli([*args, "--trainer.enable_checkpointing", "false"])
    out = capsys.readouterr().out
    assert "final validation metrics" in out and "test metrics (final model)" in out
    metrics = cli.final_metrics
    rows = dict(line.split() for line in out.splitlines() if line.startswith(("val/", "test/")))
    for key in ("val/acc", "val/few_acc", "test/acc", "test/balanced_acc", "test/few_acc"):
        assert rows[key] == f"{float(metrics[key]):.4f}", key


def test_format_metrics_table():
    table = format_metrics_table(
        {"val/acc": torch.tensor(0.5), "val/few_acc": float("nan"), "nc/train/nc1": 0.25, "other": 1}, "val"
    )
    lines = table.splitlines()
    assert lines[0] == "final val metrics"
    assert [line.split() for line in lines[2:]] == [
        ["val/acc", "0.5000"],
        ["val/few_acc", "nan"],
        ["nc/train/nc1", "0.2500"],
    ]
    assert format_metrics_table({}, "test") == ""


def test_linked_model_options_are_refused_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", str(CONFIGS / "digits_lt/joint.yaml"), "--model.init_args.many_threshold", "50"]
    with pytest.raises(ValueError, match=r"many_threshold=50.*--data.init_args.many_threshold 50"):
        build_cli(args)


def test_options_the_checkpoint_state_depends_on_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "ncm.ckpt"
    hparams = {
        "_class_path": "lt_lightning.models.DecoupledModule",
        "stage1_checkpoint": "runs/digits_lt/joint/last.ckpt",
        "mode": "ncm",
        "ncm_normalize": True,
    }
    torch.save({"hyper_parameters": hparams}, ckpt)  # only the hyper-parameters are read before refusing
    args = ["test", "-c", str(CONFIGS / "digits_lt/ncm.yaml"), "--ckpt_path", str(ckpt)]
    with pytest.raises(ValueError, match=r"ncm_normalize=False \(checkpoint: True\) cannot be changed"):
        build_cli([*args, "--model.init_args.ncm_normalize", "false"])


@pytest.mark.slow
def test_data_thresholds_apply_at_test_time(tde_run, monkeypatch):
    tmp, ckpt = tde_run
    monkeypatch.chdir(tmp)
    args = [
        "test",
        "-c",
        str(CONFIGS / "digits_lt/tde.yaml"),
        "--ckpt_path",
        str(ckpt),
        "--trainer.callbacks",
        "[]",
    ]
    cli = build_cli([*args, "--data.init_args.many_threshold", "40"])
    counts = cli.datamodule.class_counts
    assert float(cli.trainer.callback_metrics["test/many_classes"]) == sum(n > 40 for n in counts)
    assert sum(n > 40 for n in counts) != sum(n > 60 for n in counts)  # the digits default would differ
