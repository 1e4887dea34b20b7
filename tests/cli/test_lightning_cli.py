"""lt_lightning.cli.lightning_cli: the datamodule's facts linked into the model, the parts every run gets,
``{seed}`` folders, runs that refuse to overwrite another, the two-stage flow, the metric tables, predict."""

from __future__ import annotations

import re
import shutil
from argparse import ArgumentError
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace

from lt_lightning.callbacks import FiniteGuard, NonFiniteError, PerClassTable, PredictionWriter
from lt_lightning.checkpoints import AtomicCheckpointIO, load_checkpoint_file
from lt_lightning.cli import (
    LINKED_OPTIONS,
    build_cli,
    default_logger,
    format_metrics_table,
    main,
    parse_config,
    substitute_seed,
)
from lt_lightning.cli.lightning_cli import config_class
from lt_lightning.cli.tables import significant
from lt_lightning.models import (
    CRTModule,
    JointModule,
    LWSModule,
    NCMModule,
    TauNormModule,
    load_module_from_checkpoint,
)
from lt_lightning.spec import shot_groups
from tests.cli.helpers import QUIET, accuracy_by_hand, digits

#: a short run: 1 epoch of 3 batches, 2 validation batches
FAST = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "2",
    *QUIET,
]


# ------------------------------------------------------------------------------ facts and parts
def test_the_datamodules_facts_are_linked_into_the_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert LINKED_OPTIONS == ("num_classes", "class_counts", "shot_groups")
    cli = build_cli(["--config", digits("tde")], run=False)
    model, dm = cli.model, cli.datamodule
    assert model.num_classes == dm.num_classes == 10
    assert model.class_counts == dm.class_counts
    # digits' own shot thresholds (60 / 20) decide the groups, by the spec's rule
    expected = shot_groups(dm.class_counts, 60, 20).tolist()
    assert model.hparams.shot_groups == list(dm.shot_groups) == expected
    assert model.val_metrics.class_group.tolist() == expected
    # the data's options decide them, and the model follows
    cli = build_cli(["--config", digits("tde"), "--data.init_args.many_threshold", "40"], run=False)
    assert cli.model.hparams.shot_groups == shot_groups(dm.class_counts, 40, 20).tolist() != expected


@pytest.mark.parametrize(
    ("option", "value", "data_option"),
    [
        ("shot_groups", "[0, 0, 0, 0, 0, 1, 1, 2, 2, 2]", "--data.init_args.shot_group_boundaries"),
        ("class_counts", "[5, 5, 5, 5, 5, 5, 5, 5, 5, 5]", "--data.init_args.class_counts"),
        ("num_classes", "7", "--data.init_args.num_classes"),
    ],
)
def test_linked_model_options_are_refused_not_overwritten(tmp_path, monkeypatch, option, value, data_option):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ValueError, match=rf"model.init_args.{option}=.*linked from the datamodule.*{data_option} "
    ):
        build_cli(["fit", "-c", digits("joint"), f"--model.init_args.{option}", value])


def test_every_run_gets_the_finite_guard_the_per_class_table_and_atomic_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", digits("joint"), "--trainer.callbacks", "[]"], run=False)
    kinds = [type(cb) for cb in cli.trainer.callbacks]
    assert kinds.count(FiniteGuard) == 1 and kinds.count(PerClassTable) == 1
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_default_logger(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert default_logger("out") == {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": "out"},
    }
    monkeypatch.setenv("WANDB_MODE", "offline")
    csv, wandb = default_logger()  # the run folder always holds the CSV log, W&B beside it
    assert csv["class_path"] == "lightning.pytorch.loggers.CSVLogger"
    assert wandb["class_path"] == "lt_lightning.loggers.WandbLoggerOfflineSafe"
    assert wandb["init_args"]["save_dir"] == "runs"


@pytest.mark.parametrize(
    ("model", "cls"),
    [
        ({"class_path": "lt_lightning.models.JointModule"}, JointModule),
        ({"class_path": "lt_lightning.models.DecoupledModule"}, CRTModule),  # the factory's default mode
        ({"class_path": "lt_lightning.models.DecoupledModule", "init_args": {"mode": "lws"}}, LWSModule),
        (
            {"class_path": "lt_lightning.models.DecoupledModule", "init_args": {"mode": "tau_norm"}},
            TauNormModule,
        ),
        ({"class_path": "lt_lightning.models.decoupled.NCMModule"}, NCMModule),
    ],
)
def test_config_class_resolves_the_factory(model, cls):
    assert config_class(model) is cls


def test_config_class_names_a_bad_mode():
    with pytest.raises(ValueError, match="unknown decoupled mode 'cb'; valid: crt, lws, tau_norm, ncm"):
        config_class({"class_path": "lt_lightning.models.DecoupledModule", "init_args": {"mode": "cb"}})


def test_parse_config_reads_a_config_as_the_cli_does_and_builds_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stage-1 run here: a stage-2 config still parses
    torch.manual_seed(123)
    state = torch.get_rng_state()
    cfg = parse_config(
        ["test", "-c", digits("crt"), "--seed_everything", "4", "--model.init_args.mode", "lws"]
    )
    assert torch.equal(torch.get_rng_state(), state)  # not seeded
    assert not (tmp_path / "runs").exists()
    assert config_class(cfg["model"]) is LWSModule
    assert cfg["model"]["init_args"]["stage1_checkpoint"] == "runs/digits_lt/joint/seed4/last.ckpt"
    assert cfg["data"]["init_args"]["sampler"] == "class" and type(cfg["data"]["init_args"]) is dict
    # a composed config: the included blocks, then the file's own keys
    (tmp_path / "joint.yaml").write_text(f"config: {digits('joint')}\ntrainer.max_epochs: 2\n")
    cfg = parse_config(["fit", "-c", str(tmp_path / "joint.yaml")])
    assert (
        cfg["trainer"]["max_epochs"] == 2 and cfg["model"]["class_path"] == "lt_lightning.models.JointModule"
    )
    assert cfg["trainer"]["callbacks"][0]["init_args"]["dirpath"] == "runs/digits_lt/joint/seed0"
    with pytest.raises(ArgumentError):
        parse_config(["fit", "-c", digits("joint"), "--data.init_args.sampler", "classs"])


# ------------------------------------------------------------------------------ {seed}
def test_the_seed_placeholder_is_filled_everywhere():
    config = Namespace(
        trainer=Namespace(
            callbacks=[Namespace(init_args=Namespace(dirpath="runs/x/joint/seed{seed}/steps"))]
        ),
        model=Namespace(init_args=Namespace(stage1_checkpoint="runs/x/joint/seed{seed}/last.ckpt", seed=3)),
        extra={"path": "a{seed}b", "list": ["{seed}", 1]},
    )
    substitute_seed(config, 7)
    assert config.trainer.callbacks[0].init_args.dirpath == "runs/x/joint/seed7/steps"
    assert config.model.init_args.stage1_checkpoint == "runs/x/joint/seed7/last.ckpt"
    assert config.extra == {"path": "a7b", "list": ["7", 1]} and config.model.init_args.seed == 3
    with pytest.raises(ValueError, match=r"model.init_args.stage1_checkpoint=.*seed_everything is None"):
        substitute_seed(Namespace(model=Namespace(init_args=Namespace(stage1_checkpoint="s{seed}"))), None)
    with pytest.raises(ValueError, match=r"seed_everything is False"):
        substitute_seed("s{seed}", False)


def test_checkpoint_folders_follow_the_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", digits("joint"), "--seed_everything", "4"], run=False)
    (folder,) = [cb.dirpath for cb in cli.trainer.checkpoint_callbacks]
    assert Path(folder) == tmp_path / "runs/digits_lt/joint/seed4"


# ------------------------------------------------------------------------------ runs
@pytest.mark.slow
def test_fit_refuses_a_folder_holding_a_previous_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    joint = ["fit", "-c", digits("joint"), *FAST]
    build_cli(joint)
    folder = tmp_path / "runs/digits_lt/joint/seed0"
    first = load_checkpoint_file(folder / "last.ckpt")["state_dict"]
    with pytest.raises(SystemExit) as info:
        main(joint)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "holds checkpoints of a previous run" in err and "--overwrite_run true" in err
    assert torch.equal(
        load_checkpoint_file(folder / "last.ckpt")["state_dict"]["head.weight"], first["head.weight"]
    )
    # another seed gets its own folder; stage 2 of that seed reads it
    build_cli([*joint, "--seed_everything", "1", "--model.init_args.seed", "1"])
    assert (tmp_path / "runs/digits_lt/joint/seed1/last.ckpt").is_file()
    cli = build_cli(["fit", "-c", digits("crt"), *FAST, "--seed_everything", "1"])
    assert cli.model.hparams.stage1_checkpoint == "runs/digits_lt/joint/seed1/last.ckpt"
    # asked to: the old checkpoints go, the new run's last.ckpt is the only one (no last-v1.ckpt)
    build_cli([*joint, "--overwrite_run", "true", "--data.init_args.seed", "3"])
    names = sorted(p.name for p in folder.glob("*.ckpt"))
    assert "last.ckpt" in names and not any("-v" in n for n in names)
    assert not torch.equal(
        load_checkpoint_file(folder / "last.ckpt")["state_dict"]["head.weight"], first["head.weight"]
    )


@pytest.mark.slow
def test_a_diverging_fit_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jump = "--trainer.callbacks+={class_path: tests.cli.helpers.LrJump, init_args: {epoch: 1}}"
    cli = build_cli(["--config", digits("joint"), "--trainer.max_epochs", "3", *QUIET, jump], run=False)
    with pytest.raises(NonFiniteError) as info:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    steps_per_epoch = cli.trainer.num_training_batches
    found = re.search(r"at training step (\d+) \(noticed at step (\d+)\)", str(info.value))
    # one step at lr 1e30, then the loss of the next is not finite; read every log_every_n_steps (5)
    assert int(found.group(1)) == steps_per_epoch + 1
    assert int(found.group(2)) == 5 * (steps_per_epoch // 5 + 1)
    # the bad steps' updates were skipped: the weights in memory are still finite
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
    last = load_checkpoint_file(tmp_path / "runs/digits_lt/joint/seed0/last.ckpt")
    assert last["epoch"] == 0 and last["global_step"] == steps_per_epoch  # epoch 0's, untouched
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
def test_non_finite_features_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = ["--model", "tests.cli.helpers.NaNFeaturesJointModule", "--model.init_args.nan_step", "3"]
    with pytest.raises(
        NonFiniteError, match=r"non-finite loss and features \(NaN or inf\) at training step 3 "
    ):
        build_cli(["fit", "-c", digits("joint"), *model, "--trainer.max_epochs", "1", *QUIET])


@pytest.mark.slow
def test_no_checkpoint_with_non_finite_weights_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["fit", "-c", digits("joint"), *FAST])
    with torch.no_grad():
        cli.model.head.weight[0, 0] = torch.inf
    with pytest.raises(NonFiniteError, match=r"non-finite weights in head\.weight"):
        cli.trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


# ------------------------------------------------------------------------------ tables and warnings
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


@pytest.mark.slow
def test_fit_prints_validation_and_test_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", digits("joint"), *FAST, "--test_after_fit", "true"]
    cli = build_cli([*args, "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]"])
    out = capsys.readouterr().out
    assert "final validation metrics" in out and "test metrics (final model)" in out
    metrics = cli.final_metrics
    rows = dict(line.split() for line in out.splitlines() if line.startswith(("val/", "test/")))
    for key in ("val/acc", "val/few_acc", "test/acc", "test/balanced_acc", "test/few_acc"):
        assert rows[key] == significant(float(metrics[key])), key  # 4 significant digits
    assert metrics["test/acc"] == pytest.approx(accuracy_by_hand(cli.model, cli.datamodule), abs=1e-6)


@pytest.mark.slow
def test_test_without_a_checkpoint_warns_loudly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="UNTRAINED model"):
        build_cli(["test", "-c", digits("joint"), "--trainer.limit_test_batches", "1", *QUIET])


# ------------------------------------------------------------------------------ the two-stage flow
@pytest.fixture(scope="module")
def two_stage(tmp_path_factory) -> Path:
    """A folder where joint (stage 1), then crt and lws (stage 2) were fitted with the shipped configs."""
    tmp = tmp_path_factory.mktemp("two_stage")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        build_cli(["fit", "-c", digits("joint"), *FAST, "--trainer.max_epochs", "2"])
        for method in ("crt", "lws"):
            cli = build_cli(["fit", "-c", digits(method), *FAST])
            assert cli.model.hparams.stage1_checkpoint == "runs/digits_lt/joint/seed0/last.ckpt"
    return tmp


def _test(config: str, *args: str) -> dict[str, float]:
    cli = build_cli(["test", "-c", digits(config), *QUIET, *args])
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}


@pytest.mark.slow
def test_every_stage2_method_runs_on_the_stage1_run(two_stage, monkeypatch):
    monkeypatch.chdir(two_stage)
    for method, cls in (("crt", CRTModule), ("lws", LWSModule)):
        ckpt = two_stage / f"runs/digits_lt/{method}/seed0/last.ckpt"
        assert type(load_module_from_checkpoint(str(ckpt))) is cls
        metrics = _test(method, "--ckpt_path", str(ckpt))
        assert 0.0 <= metrics["test/acc"] <= 1.0 and "test/few_acc" in metrics
    for method in ("tau_norm", "ncm"):  # nothing to train: they read the stage-1 run and are tested
        metrics = _test(method)
        assert 0.0 <= metrics["test/acc"] <= 1.0 and "test/few_acc" in metrics


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tau_norm", "ncm"])
def test_post_hoc_methods_evaluate_in_bf16_true(two_stage, monkeypatch, method):
    # bug 3 of issue 15: `test --trainer.precision bf16-true` crashed ("expected m1 and m2 to have the same dtype")
    monkeypatch.chdir(two_stage)
    full = _test(method)
    half = _test(method, "--trainer.precision", "bf16-true")
    assert set(half) == set(full)
    # bf16 rounds the features (8 bits of mantissa): the same classifier, a few predictions may move
    assert half["test/acc"] == pytest.approx(full["test/acc"], abs=0.03)
    if method == "tau_norm":  # tau is chosen on the validation split in both
        assert half["test/tau_norm/tau"] == pytest.approx(full["test/tau_norm/tau"], abs=0.3)


@pytest.mark.slow
def test_a_stage2_checkpoint_evaluates_without_the_stage1_run(two_stage, tmp_path, monkeypatch):
    monkeypatch.chdir(two_stage)
    before = {m: _test(m, "--ckpt_path", f"runs/digits_lt/{m}/seed0/last.ckpt") for m in ("crt", "lws")}
    # the stage-2 runs alone, in a folder without the stage-1 run (moved, deleted, another machine)
    for method in ("crt", "lws"):
        shutil.copytree(two_stage / f"runs/digits_lt/{method}", tmp_path / f"runs/digits_lt/{method}")
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "runs/digits_lt/joint").exists()
    for method in ("crt", "lws"):
        assert _test(method, "--ckpt_path", f"runs/digits_lt/{method}/seed0/last.ckpt") == before[method]
    # --ckpt_path may name the run folder by {seed} too
    assert _test("crt", "--ckpt_path", "runs/digits_lt/crt/seed{seed}/last.ckpt") == before["crt"]
    # from Python too: the architecture comes from the stage-2 hyper-parameters, the weights from its state
    crt = tmp_path / "runs/digits_lt/crt/seed0/last.ckpt"
    model = load_module_from_checkpoint(str(crt))
    state = load_checkpoint_file(crt)["state_dict"]
    assert type(model) is CRTModule and model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.hparams.stage1_module["class_path"] == "lt_lightning.models.joint.JointModule"


@pytest.mark.slow
def test_a_resumed_stage2_fit_writes_checkpoints_that_load_weights_only(two_stage, tmp_path, monkeypatch):
    # before: the stage-1 record came back from --ckpt_path with its optimizer as a jsonargparse Namespace,
    # so the resumed run's checkpoints were refused by every weights-only loader ("could run code")
    shutil.copytree(two_stage / "runs/digits_lt/joint", tmp_path / "runs/digits_lt/joint")
    monkeypatch.chdir(tmp_path)
    build_cli(["fit", "-c", digits("crt"), *FAST])
    ckpt = tmp_path / "runs/digits_lt/crt/seed0/last.ckpt"
    cli = build_cli(
        ["fit", "-c", digits("crt"), *FAST, "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)]
    )
    assert cli.trainer.current_epoch == 2
    saved = load_checkpoint_file(ckpt)  # weights-only
    optimizer = saved["hyper_parameters"]["stage1_module"]["init_args"]["optimizer"]
    assert saved["epoch"] == 1 and type(optimizer) is dict and type(optimizer["init_args"]) is dict
    assert optimizer["class_path"] == "torch.optim.SGD" and optimizer["init_args"]["lr"] == 0.05
    assert type(load_module_from_checkpoint(str(ckpt))) is CRTModule
    # an evaluation from it, saved by the user, too
    cli = build_cli(["test", "-c", digits("crt"), "--ckpt_path", str(ckpt), *QUIET])
    cli.trainer.save_checkpoint(tmp_path / "tested.ckpt")
    assert type(load_module_from_checkpoint(str(tmp_path / "tested.ckpt"))) is CRTModule


# ------------------------------------------------------------------------------ predict
@pytest.mark.slow
def test_predict_writes_predictions_that_match_test(two_stage, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(two_stage)
    ckpt = two_stage / "runs/digits_lt/joint/seed0/last.ckpt"
    args = ["predict", "-c", digits("joint"), "--ckpt_path", str(ckpt), *QUIET]
    writer = (
        f"[{{class_path: lt_lightning.callbacks.PredictionWriter, init_args: {{output_dir: {tmp_path}}}}}]"
    )
    cli = build_cli([*args, "--trainer.callbacks", writer])
    saved = torch.load(tmp_path / "predictions.pt", weights_only=True)
    acc = (saved["preds"] == saved["targets"]).double().mean().item()
    reference = accuracy_by_hand(load_module_from_checkpoint(str(ckpt)), cli.datamodule)
    assert acc == pytest.approx(reference, abs=1e-6)
    assert f"top-1 accuracy {acc:.4f}" in capsys.readouterr().out
    # without a writer in the config the CLI adds one (files in the logger's folder)
    cli = build_cli([*args, "--trainer.callbacks", "[]"])
    writers = [cb for cb in cli.trainer.callbacks if isinstance(cb, PredictionWriter)]
    assert len(writers) == 1 and Path(writers[0].last_path).is_file()
