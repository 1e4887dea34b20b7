"""``--ckpt_path`` with a config: the model is rebuilt from the checkpoint, the method's evaluation options
come from the config / command line (and are printed), the options its fitted state depends on are
refused, other differing options are named in a warning, and a checkpoint of another method is refused
in one line naming both classes. The CLI asks the method class (``evaluation_options``,
``fitted_options``), it does not match names."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from lt_lightning.checkpoints import load_checkpoint_file
from lt_lightning.cli import build_cli, main
from lt_lightning.models import NCMModule, TauNormModule, TDEModule, load_module_from_checkpoint
from tests.cli.helpers import QUIET, accuracy_by_hand, digits

pytestmark = pytest.mark.slow  # each rebuilds a trained model and scores the test set


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A folder with short digits-LT runs: TDE and joint fitted; τ-norm and NCM fitted at evaluation
    (their classifier chosen from data) and saved, as a user's ``Trainer.save_checkpoint`` would."""
    tmp = tmp_path_factory.mktemp("runs")
    short = ["--trainer.max_epochs", "2", *QUIET]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        build_cli(["fit", "-c", digits("tde"), *short])
        build_cli(["fit", "-c", digits("joint"), *short])
        for method in ("tau_norm", "ncm"):
            cli = build_cli(["test", "-c", digits(method), *QUIET])
            cli.trainer.save_checkpoint(tmp / f"{method}.ckpt")
    return tmp


def _test(config: str, ckpt: Path, *args: str):
    return build_cli(["test", "-c", digits(config), "--ckpt_path", str(ckpt), *QUIET, *args])


def _acc(cli) -> float:
    return float(cli.trainer.callback_metrics["test/acc"])


def test_tde_alpha_given_at_test_time_wins_over_the_checkpoint(runs, monkeypatch, capsys):
    monkeypatch.chdir(runs)
    ckpt = runs / "runs/digits_lt/tde/seed0/last.ckpt"
    assert load_checkpoint_file(ckpt)["hyper_parameters"]["alpha"] == 1.0
    reference = load_module_from_checkpoint(str(ckpt))
    accs = {}
    for alpha in (1.0, 3.0):
        cli = _test("tde", ckpt, "--model.init_args.alpha", str(alpha))
        assert type(cli.model) is TDEModule and cli.model.head.alpha == alpha
        accs[alpha] = _acc(cli)
        # independent reference: the module rebuilt from the file, alpha set by hand
        model = copy.deepcopy(reference)
        model.head.alpha = alpha
        assert accs[alpha] == pytest.approx(accuracy_by_hand(model, cli.datamodule), abs=1e-6)
    assert accs[1.0] != accs[3.0]
    out = capsys.readouterr().out
    assert "test: evaluation options from the config/command line: alpha=3.0 (checkpoint: 1.0)" in out


def test_tau_norm_tau_given_at_test_time_wins(runs, monkeypatch, capsys):
    monkeypatch.chdir(runs)
    ckpt = runs / "tau_norm.ckpt"
    chosen = float(load_checkpoint_file(ckpt)["state_dict"]["head.tau"])
    tau = 0.5 if chosen != 0.5 else 1.5
    cli = _test("tau_norm", ckpt, "--model.init_args.tau", str(tau))
    assert type(cli.model) is TauNormModule
    assert float(cli.model.head.tau) == tau == float(cli.trainer.callback_metrics["test/tau_norm/tau"])
    assert f"tau={tau} (checkpoint: None)" in capsys.readouterr().out
    again = _test("tau_norm", ckpt)  # without it: the τ the checkpoint chose
    assert float(again.model.head.tau) == chosen


def test_ncm_metric_given_at_test_time_wins(runs, monkeypatch, capsys):
    monkeypatch.chdir(runs)
    ckpt = runs / "ncm.ckpt"
    cli = _test("ncm", ckpt, "--model.init_args.ncm_metric", "cosine")
    assert type(cli.model) is NCMModule and cli.model.head.metric == "cosine"
    assert "ncm_metric='cosine' (checkpoint: 'euclidean')" in capsys.readouterr().out
    # the fitted centroids are the checkpoint's, scored with the other metric
    state = load_checkpoint_file(ckpt)["state_dict"]
    assert torch.equal(cli.model.head.centroids, state["head.centroids"])
    model = load_module_from_checkpoint(str(ckpt))
    model.head.metric = "cosine"
    assert _acc(cli) == pytest.approx(accuracy_by_hand(model, cli.datamodule), abs=1e-6)


@pytest.mark.parametrize(
    ("option", "value", "recorded"),
    [("ncm_normalize", "false", "True"), ("ncm_center", "false", "True")],
)
def test_options_the_fitted_state_depends_on_are_refused(runs, monkeypatch, option, value, recorded):
    monkeypatch.chdir(runs)
    with pytest.raises(ValueError, match=rf"{option}=False \(checkpoint: {recorded}\) cannot be changed"):
        _test("ncm", runs / "ncm.ckpt", f"--model.init_args.{option}", value)


def test_other_model_options_replaced_by_the_checkpoint_warn(runs, monkeypatch):
    monkeypatch.chdir(runs)
    ckpt = runs / "runs/digits_lt/tde/seed0/last.ckpt"
    args = [
        "validate",
        "-c",
        digits("tde"),
        "--ckpt_path",
        str(ckpt),
        *QUIET,
        "--model.init_args.num_heads",
        "4",
    ]
    with pytest.warns(
        UserWarning, match=r"replaced by the checkpoint's values.*num_heads=4 -> 2.*TDEModule: alpha"
    ):
        cli = build_cli(args)
    assert cli.model.hparams.num_heads == 2


def test_a_resumed_fit_warns_about_the_options_it_replaces(runs, tmp_path, monkeypatch):
    # before: fit --ckpt_path silently trained on with the checkpoint's learning rate
    monkeypatch.chdir(tmp_path)
    ckpt = runs / "runs/digits_lt/joint/seed0/last.ckpt"
    args = ["fit", "-c", digits("joint"), "--ckpt_path", str(ckpt), "--trainer.max_epochs", "3", *QUIET]
    args += ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    lr = "--model.init_args.optimizer.init_args.lr"
    with pytest.warns(
        UserWarning,
        match=r"fit --ckpt_path .*replaced by the checkpoint's values.*optimizer=.*'lr': 0.5.*-> .*'lr': 0.05.*start a new run",
    ):
        cli = build_cli([*args, lr, "0.5", "--overwrite_run", "true"])
    assert cli.trainer.optimizers[0].defaults["lr"] == 0.05  # the run went on as it was
    with warnings.catch_warnings():  # the same options: nothing to say
        warnings.filterwarnings("error", message=".*replaced by the checkpoint's values")
        build_cli(args)


def test_the_datas_thresholds_apply_at_test_time(runs, monkeypatch):
    monkeypatch.chdir(runs)
    cli = _test("tde", runs / "runs/digits_lt/tde/seed0/last.ckpt", "--data.init_args.many_threshold", "40")
    counts = cli.datamodule.class_counts
    assert float(cli.trainer.callback_metrics["test/many_classes"]) == sum(n > 40 for n in counts)
    assert sum(n > 40 for n in counts) != sum(n > 60 for n in counts)  # the digits default would differ


@pytest.mark.parametrize(
    ("sub", "config", "ckpt", "recorded", "built"),
    [
        ("test", "joint", "runs/digits_lt/tde/seed0/last.ckpt", "TDEModule", "JointModule"),
        ("validate", "tde", "runs/digits_lt/joint/seed0/last.ckpt", "JointModule", "TDEModule"),
        ("fit", "fixed_etf", "runs/digits_lt/joint/seed0/last.ckpt", "JointModule", "FixedETFModule"),
        ("test", "ncm", "tau_norm.ckpt", "TauNormModule", "NCMModule"),  # the factory's modes differ
    ],
)
def test_a_checkpoint_of_another_method_is_one_line_naming_both(
    runs, monkeypatch, capsys, sub, config, ckpt, recorded, built
):
    monkeypatch.chdir(runs)
    with pytest.raises(SystemExit) as info:
        main([sub, "-c", digits(config), "--ckpt_path", ckpt])
    assert info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"lt-lightning: error: --ckpt_path {ckpt} is a {recorded} checkpoint but the config builds a {built}; "
        f"use the {recorded} config (or drop --ckpt_path)"
    ]
