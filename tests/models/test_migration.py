"""models/migration.py: 0.1 hyper-parameter records rewritten into today's parts, against hand-written
expected records; a current record passes through unchanged. The real 0.1 files are loaded in
tests/models/test_legacy_checkpoints.py."""

from __future__ import annotations

import io

import pytest
import torch

from lt_lightning.models import JointModule, TDEModule
from lt_lightning.models.base import LongTailModule
from lt_lightning.models.migration import (
    LEGACY_KEYS,
    checkpoint_source,
    is_legacy,
    migrate_checkpoint,
    migrate_hparams,
)
from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm

#: a 0.1 JointModule record, as its CLI wrote it (flat optimizer and schedule options, thresholds)
V01 = {
    "num_classes": 6,
    "class_counts": [120, 75, 47, 30, 19, 12],
    "many_threshold": 60,
    "few_threshold": 20,
    "backbone": "mlp",
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.8,
    "nesterov": True,
    "weight_decay": 0.0005,
    "gain": 1.0,
    "lr_schedule": "multistep",
    "lr_interval": "epoch",
    "lr_epoch_offset": 1,
    "warmup_epochs": 2.0,
    "warmup_start_factor": 0.1,
    "milestones": (3, 6),
    "milestone_factors": (0.1, 0.01),
    "mixup_alpha": 0.0,
    "seed": 0,
    "loss": "ce",
}


def test_a_01_record_becomes_todays_parts():
    out = migrate_hparams(V01)
    assert out["optimizer"] == {
        "class_path": "torch.optim.SGD",
        "init_args": {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.0005},
    }
    assert out["lr_schedule"] == {
        "name": "multistep",
        "interval": "epoch",
        "epoch_offset": 1,
        "warmup_epochs": 2.0,
        "warmup_start_factor": 0.1,
        "milestones": [3, 6],
        "milestone_factors": [0.1, 0.01],
    }
    assert out["mixup"] is None
    assert not LEGACY_KEYS & set(out)  # no flat option and no threshold is left
    keep = {
        k: v for k, v in V01.items() if k not in LEGACY_KEYS | {"optimizer", "lr_schedule", "mixup_alpha"}
    }
    assert {k: out[k] for k in keep} == keep  # every other option as it was
    JointModule(**{**out, "backbone_kwargs": {"in_features": 16, "hidden": [8]}})  # today's module takes it
    assert V01["optimizer"] == "sgd"  # the input is not modified


@pytest.mark.parametrize(
    ("flat", "expected"),
    [
        (
            {"optimizer": "adamw", "lr": 0.01},
            {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01, "weight_decay": 5e-4}},
        ),
        (
            {"optimizer": "agd", "gain": 10.0},
            {"class_path": "lt_lightning.optim.AGD", "init_args": {"gain": 10.0}},
        ),
        (
            {"lr": 0.2},
            {
                "class_path": "torch.optim.SGD",
                "init_args": {"lr": 0.2, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4},
            },
        ),
    ],
    ids=["adamw", "agd", "sgd-by-default"],
)
def test_each_01_optimizer_and_its_defaults(flat, expected):
    assert migrate_hparams(flat)["optimizer"] == expected


def test_mixup_alpha_becomes_a_mixup_record():
    assert migrate_hparams({"mixup_alpha": 1.0})["mixup"] == {"alpha": 1.0}
    assert migrate_hparams({"mixup_alpha": 0.0})["mixup"] is None


def test_a_current_record_passes_through_unchanged():
    current = dict(JointModule(**model_kwargs(synthetic_dm())).hparams)
    assert not is_legacy(current)
    out = migrate_hparams(current)
    assert out == current and out is not current
    assert is_legacy({"lr": 0.1}) and is_legacy({"optimizer": "sgd"}) and is_legacy({"lr_schedule": "cosine"})


def test_an_unknown_01_optimizer_is_named():
    with pytest.raises(ValueError, match="name the optimizer 'rmsprop'; 0.1 had sgd, adamw, agd"):
        migrate_hparams({"optimizer": "rmsprop"})


def test_stage2_records_lose_the_representation_options():
    out = migrate_hparams({**V01, "neck": "none", "fixdim": False}, stage2=True)
    assert not {"backbone", "neck", "fixdim"} & set(out)


@pytest.mark.parametrize(
    ("mode", "class_name", "own"),
    [
        ("crt", "CRTModule", set()),
        ("lws", "LWSModule", set()),
        ("tau_norm", "TauNormModule", {"tau", "tau_grid"}),
        ("ncm", "NCMModule", {"ncm_center", "ncm_normalize", "ncm_metric"}),
    ],
)
def test_a_01_decoupled_checkpoint_names_its_modes_class(mode, class_name, own):
    every = {
        "tau": None,
        "tau_grid": [0.0, 1.0],
        "ncm_center": True,
        "ncm_normalize": True,
        "ncm_metric": "cosine",
    }
    hparams = {
        **V01,
        "mode": mode,
        "stage1_checkpoint": "s1.ckpt",
        "bn_mode": "frozen",
        **every,
        "_class_path": "x.DecoupledModule",
    }
    ckpt = {
        "lt_lightning_class_path": "lt_lightning.models.decoupled.DecoupledModule",
        "hyper_parameters": hparams,
        "state_dict": {},
    }
    out = migrate_checkpoint(ckpt)
    assert out["lt_lightning_class_path"].rpartition(".")[2] == class_name
    hp = out["hyper_parameters"]
    assert hp["_class_path"] == out["lt_lightning_class_path"]
    assert "mode" not in hp and {k for k in every if k in hp} == own
    assert {"stage1_checkpoint", "bn_mode", "optimizer", "lr_schedule"} <= set(hp)
    assert "backbone" not in hp
    assert ckpt["hyper_parameters"]["mode"] == mode  # a shallow copy: the input is not modified


def test_an_unknown_decoupled_mode_is_named():
    ckpt = {"lt_lightning_class_path": "a.DecoupledModule", "hyper_parameters": {"mode": "cb"}}
    with pytest.raises(ValueError, match="decoupled mode 'cb'; valid: crt, lws, tau_norm, ncm"):
        migrate_checkpoint(ckpt)


def test_checkpoint_source(tmp_path):
    dm = synthetic_dm()
    trainer = cpu_trainer(tmp_path, max_epochs=1, max_steps=1)
    trainer.fit(JointModule(**model_kwargs(dm)), datamodule=dm)
    current = tmp_path / "current.ckpt"
    trainer.save_checkpoint(current)
    assert checkpoint_source(current, JointModule, LongTailModule) == (JointModule, current)  # read as it is
    assert checkpoint_source(current, LongTailModule, LongTailModule)[0] is JointModule
    with pytest.raises(ValueError, match="is a JointModule checkpoint, not a TDEModule"):
        checkpoint_source(current, TDEModule, LongTailModule)
    old = torch.load(current, weights_only=True)
    # the same run as 0.1 recorded it: a named optimizer and schedule with flat options
    old["hyper_parameters"] = {
        **old["hyper_parameters"],
        "optimizer": "sgd",
        "lr": 0.3,
        "lr_schedule": "constant",
    }
    legacy = tmp_path / "legacy.ckpt"
    torch.save(old, legacy)
    cls, source = checkpoint_source(legacy, JointModule, LongTailModule)
    assert cls is JointModule and isinstance(source, io.BytesIO)  # an in-memory migrated copy
    migrated = torch.load(source, weights_only=True)
    assert migrated["hyper_parameters"]["optimizer"]["init_args"]["lr"] == 0.3
    assert JointModule.load_from_checkpoint(legacy).hparams.optimizer["init_args"]["lr"] == 0.3
