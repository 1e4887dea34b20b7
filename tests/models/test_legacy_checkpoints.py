"""Checkpoints written by lt_lightning 0.1 (tests/fixtures/legacy_checkpoints, see its README) load through
every path today: ``load_module_from_checkpoint``, their class's ``load_from_checkpoint``,
``DecoupledModule.load_from_checkpoint`` (stage 2) and as a ``stage1_checkpoint`` (stage 1), with the
weights equal to the file's state dict and the 0.1 options mapped to today's parts. The reference is
the file itself, read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from lt_lightning.data import DigitsLTDataModule
from lt_lightning.data.augment import Mixup
from lt_lightning.models import (
    CRTModule,
    DecoupledModule,
    LongTailModule,
    Stage2Module,
    load_module_from_checkpoint,
)
from lt_lightning.models import __dict__ as MODELS
from lt_lightning.models.migration import LEGACY_KEYS
from lt_lightning.optim import LRSchedule
from tests.models.helpers import cpu_trainer

FIXTURES = Path(__file__).parents[1] / "fixtures" / "legacy_checkpoints"
#: every file of the folder and the class it is today
FILES = {
    "crt": "CRTModule",
    "fixed_etf": "FixedETFModule",
    "fixed_etf_ce": "FixedETFModule",
    "fixed_etf_mixup_step3": "FixedETFModule",
    "implicit_etf": "ImplicitETFModule",
    "joint": "JointModule",
    "ldam_drw": "JointModule",
    "logit_adjust_posthoc": "JointModule",
    "lws": "LWSModule",
    "ncm": "NCMModule",
    "python_joint": "JointModule",
    "tau_norm": "TauNormModule",
    "tde": "TDEModule",
}
STAGE1 = sorted(n for n, c in FILES.items() if not issubclass(MODELS[c], Stage2Module))
STAGE2 = sorted(n for n, c in FILES.items() if issubclass(MODELS[c], Stage2Module))


def _file(name: str) -> Path:
    return FIXTURES / f"{name}.ckpt"


def _state(name: str) -> dict[str, torch.Tensor]:
    return torch.load(_file(name), weights_only=True)["state_dict"]


def _assert_weights_are_the_files(module: LongTailModule, name: str) -> None:
    expected, got = _state(name), module.state_dict()
    assert got.keys() == expected.keys(), name
    for key, value in expected.items():
        assert torch.equal(got[key], value), (name, key)


def test_the_folder_holds_exactly_these_files():
    # the .ckpt files must be committed (the repository's .gitignore ignores *.ckpt elsewhere)
    assert sorted(p.stem for p in FIXTURES.glob("*.ckpt")) == sorted(FILES)


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_load_path_reads_it_with_the_files_weights(name):
    cls = MODELS[FILES[name]]
    loaded = {
        "load_module_from_checkpoint": load_module_from_checkpoint(_file(name)),
        f"{cls.__name__}.load_from_checkpoint": cls.load_from_checkpoint(_file(name)),
        "LongTailModule.load_from_checkpoint": LongTailModule.load_from_checkpoint(_file(name)),
    }
    if name in STAGE2:
        loaded["DecoupledModule.load_from_checkpoint"] = DecoupledModule.load_from_checkpoint(_file(name))
    for how, module in loaded.items():
        assert type(module) is cls, how
        _assert_weights_are_the_files(module, name)
        assert not LEGACY_KEYS & set(module.hparams), how  # today's record, no 0.1 option left
        assert "mode" not in module.hparams


@pytest.mark.parametrize("name", STAGE1)
def test_a_stage1_one_is_a_stage1_checkpoint(name):
    hp = torch.load(_file(name), weights_only=True)["hyper_parameters"]
    model = CRTModule(stage1_checkpoint=str(_file(name)), num_classes=10, class_counts=hp["class_counts"])
    state = _state(name)
    representation = {k: v for k, v in state.items() if k.startswith(("backbone.", "neck."))}
    assert any(k.startswith("backbone.") for k in representation)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in representation.items())
    weight, bias = load_module_from_checkpoint(_file(name)).classifier_weight_bias()
    assert torch.equal(model.stage1_classifier[0], weight)
    assert model.hparams.stage1_module["class_path"].endswith(FILES[name])


def _optimizer_defaults(module: LongTailModule) -> dict:
    return module.optimizer(module.named_trainable_parameters()).defaults


@pytest.mark.parametrize(
    ("name", "optimizer", "settings", "schedule", "mixup"),
    [
        # built from Python with AdamW and a multistep schedule
        ("python_joint", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 5e-4},
         LRSchedule("multistep", milestones=(1,), milestone_factors=(0.1,)), None),
        ("joint", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
         LRSchedule("cosine", warmup_epochs=1.0), None),
        ("fixed_etf_mixup_step3", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9},
         LRSchedule("cosine", warmup_epochs=1.0), Mixup(1.0)),
        ("crt", torch.optim.SGD, {"lr": 0.05, "weight_decay": 5e-4}, LRSchedule("cosine", interval="epoch"), None),
        ("lws", torch.optim.SGD, {"lr": 0.2}, LRSchedule("cosine", interval="epoch"), None),
    ],
)  # fmt: skip
def test_the_01_options_map_to_todays_parts(name, optimizer, settings, schedule, mixup):
    module = load_module_from_checkpoint(_file(name))
    defaults = _optimizer_defaults(module)
    assert type(module.optimizer(module.named_trainable_parameters())) is optimizer
    assert {k: defaults[k] for k in settings} == pytest.approx(settings)
    assert module.lr_schedule == schedule
    assert module.mixup == mixup


@pytest.mark.parametrize("name", sorted(FILES))
def test_it_evaluates_on_its_data_without_refitting(name, tmp_path):
    module = load_module_from_checkpoint(_file(name))
    dm = DigitsLTDataModule(batch_size=64, seed=0, max_count=module.class_counts[0])
    assert dm.class_counts == module.class_counts  # the data the checkpoint was trained on
    res = cpu_trainer(tmp_path).test(module, datamodule=dm, verbose=False)[0]
    _assert_weights_are_the_files(module, name)  # tau and centroids were not fitted again
    module.eval()
    with torch.no_grad():
        pred = torch.cat([module(x).argmax(1) for x, _ in dm.test_dataloader()])
    assert res["test/acc"] == pytest.approx((pred == dm.test_dataset.targets).double().mean().item())


class _Count(L.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args) -> None:
        self.batches += 1


def test_a_01_mid_epoch_checkpoint_resumes_where_it_stopped(tmp_path):
    # 0.1 saved its mixup generator in the checkpoint and the loader position as {"batches_done": 3}
    name = "fixed_etf_mixup_step3"
    module = load_module_from_checkpoint(_file(name))
    dm = DigitsLTDataModule(batch_size=32, seed=0)
    count = _Count()
    trainer = cpu_trainer(tmp_path, max_epochs=1, callbacks=[count], limit_val_batches=0)
    trainer.fit(module, datamodule=dm, ckpt_path=str(_file(name)))
    per_epoch = trainer.num_training_batches
    assert count.batches == per_epoch - 3 and trainer.global_step == per_epoch
    assert not torch.equal(
        module.state_dict()["backbone.layers.1.weight"], _state(name)["backbone.layers.1.weight"]
    )
