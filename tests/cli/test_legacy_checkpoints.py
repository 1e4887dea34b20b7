"""Checkpoints written by lt_lightning 0.1 (tests/fixtures/legacy_checkpoints, see its README) through the
command line: ``test --ckpt_path`` for every method, a mid-epoch ``fit --ckpt_path`` resume with 0.1's
loader state, and a 0.1 stage-1 run as a stage-2 fit's ``stage1_checkpoint``."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.checkpoints import load_checkpoint_file
from lt_lightning.cli import build_cli
from lt_lightning.data.augment import Mixup
from lt_lightning.models import (
    CRTModule,
    FixedETFModule,
    ImplicitETFModule,
    JointModule,
    LWSModule,
    NCMModule,
    TauNormModule,
    TDEModule,
    load_module_from_checkpoint,
)
from lt_lightning.models.migration import LEGACY_KEYS
from tests.cli.helpers import LEGACY, QUIET, RecordTrainBatches, accuracy_by_hand, digits

pytestmark = pytest.mark.slow  # each builds the digits data and scores its test split

#: fixture -> (the digits config that trains that method, the class it loads as)
FIXTURES = {
    "joint": ("joint", JointModule),
    "ldam_drw": ("ldam_drw", JointModule),
    "logit_adjust_posthoc": ("logit_adjust_posthoc", JointModule),
    "python_joint": ("joint", JointModule),  # AdamW and a multistep schedule, from Python
    "fixed_etf": ("fixed_etf", FixedETFModule),
    "fixed_etf_ce": ("fixed_etf_ce", FixedETFModule),
    "fixed_etf_mixup_step3": ("fixed_etf", FixedETFModule),
    "tde": ("tde", TDEModule),
    "implicit_etf": ("implicit_etf", ImplicitETFModule),
    "crt": ("crt", CRTModule),  # 0.1's DecoupledModule(mode=...): the mode's class now
    "lws": ("lws", LWSModule),
    "tau_norm": ("tau_norm", TauNormModule),
    "ncm": ("ncm", NCMModule),
}


def test_every_fixture_is_tested():
    assert sorted(p.stem for p in LEGACY.glob("*.ckpt")) == sorted(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_a_legacy_checkpoint_tests_through_the_cli(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # no stage-1 run here: a stage-2 checkpoint holds its representation
    config, cls = FIXTURES[name]
    path = LEGACY / f"{name}.ckpt"
    saved = load_checkpoint_file(path)
    assert LEGACY_KEYS & set(saved["hyper_parameters"])  # really a 0.1 record (flat lr, thresholds, ...)
    args = ["test", "-c", digits(config), "--ckpt_path", str(path), *QUIET]
    if cls.is_stage2:
        cli = build_cli(args)
    else:  # the fixtures' MLP is narrower than the config's: the checkpoint's architecture is used
        with pytest.warns(UserWarning, match=r"replaced by the checkpoint's values.*'hidden': \[16\]"):
            cli = build_cli(args)
    assert type(cli.model) is cls
    # the weights are the file's (tau_norm and ncm were fitted when saved: nothing is refitted)
    state = cli.model.state_dict()
    for key, value in saved["state_dict"].items():
        assert torch.equal(state[key].cpu(), value), key
    # and the CLI's score is the score of the module rebuilt from the file by hand
    reference = load_module_from_checkpoint(str(path))
    acc = float(cli.trainer.callback_metrics["test/acc"])
    assert acc == pytest.approx(accuracy_by_hand(reference, cli.datamodule), abs=1e-6)


def test_a_legacy_mid_epoch_checkpoint_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = LEGACY / "fixed_etf_mixup_step3.ckpt"
    saved = load_checkpoint_file(path)
    # 0.1's loader state: batches, not samples
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"batches_done": 3, "batch_size": 32}
    ]
    assert saved["global_step"] == 3 and saved["hyper_parameters"]["mixup_alpha"] == 1.0
    record = "--trainer.callbacks+=tests.cli.helpers.RecordTrainBatches"
    cli = build_cli(
        [
            "fit",
            "-c",
            digits("fixed_etf"),
            "--ckpt_path",
            str(path),
            "--trainer.max_epochs",
            "1",
            *QUIET,
            record,
        ]
    )
    assert type(cli.model) is FixedETFModule and cli.model.mixup == Mixup(alpha=1.0)  # 0.1's mixup_alpha
    assert cli.model.hparams.backbone_kwargs["hidden"] == [16]  # the checkpoint's model, not the config's
    (recorder,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, RecordTrainBatches)]
    batches = recorder.batches
    per_epoch = cli.trainer.num_training_batches
    # the resumed epoch trains the batches the interrupted one had left, from step 3 on
    assert [step for step, _ in batches] == list(range(3, per_epoch))
    sampler = cli.trainer.train_dataloader.sampler
    order = sampler.global_indices(0)
    expected = [sampler.labels[order[i * 32 : (i + 1) * 32]] for i in range(3, per_epoch)]
    assert all(torch.equal(got, want) for (_, got), want in zip(batches, expected))
    # the run's own checkpoint is today's: the position in samples, the parts as records
    last = load_checkpoint_file(tmp_path / "runs/digits_lt/fixed_etf/seed0/last.ckpt")
    assert last["global_step"] == per_epoch
    assert last["hyper_parameters"]["mixup"] == {"alpha": 1.0}
    assert not LEGACY_KEYS & set(last["hyper_parameters"])


@pytest.mark.parametrize(("method", "stage1"), [("crt", "joint"), ("lws", "fixed_etf")])
def test_a_legacy_stage1_run_starts_a_stage2_fit(tmp_path, monkeypatch, method, stage1):
    monkeypatch.chdir(tmp_path)
    path = LEGACY / f"{stage1}.ckpt"
    saved = load_checkpoint_file(path)["state_dict"]
    fast = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", *QUIET]
    cli = build_cli(["fit", "-c", digits(method), "--model.init_args.stage1_checkpoint", str(path), *fast])
    model = cli.model
    assert type(model) is {"crt": CRTModule, "lws": LWSModule}[method]
    record = model.hparams.stage1_module
    assert record["class_path"].endswith(FIXTURES[stage1][1].__name__)
    assert not LEGACY_KEYS & set(record["init_args"])  # migrated: today's record
    assert record["init_args"]["optimizer"]["class_path"] == "torch.optim.SGD"
    # the frozen representation is the 0.1 run's, bit for bit, after a stage-2 epoch (its BatchNorm
    # statistics are re-estimated under the stage-2 sampler: bn_mode reestimate, as Kang's code)
    frozen = {n: p for n, p in model.named_parameters() if n.startswith("backbone.")}
    assert frozen and not any(p.requires_grad for p in frozen.values())
    assert all(torch.equal(p, saved[n]) for n, p in frozen.items())
    # and the stage-2 checkpoint tests without the 0.1 file
    ckpt = tmp_path / f"runs/digits_lt/{method}/seed0/last.ckpt"
    again = build_cli(["test", "-c", digits(method), "--ckpt_path", str(ckpt), *QUIET])
    assert 0.0 <= float(again.trainer.callback_metrics["test/acc"]) <= 1.0
