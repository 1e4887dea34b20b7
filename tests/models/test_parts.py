"""models/parts.py: the injected parts and the plain records of them a checkpoint keeps.

A checkpoint is read weights-only, so a module built from Python with ``functools.partial(SGD, ...)``,
an ``LRSchedule`` and a ``Mixup`` must record them as plain data and rebuild the same optimizer from the
record; an optimizer that cannot be described is left out with a warning; AGD with a schedule that is
not constant is refused. Also the representation builder's guards and ``check_data_facts``."""

from __future__ import annotations

import functools
import io

import pytest
import torch
import torchvision

from lt_lightning.data.augment import Mixup
from lt_lightning.models import FixedETFModule, JointModule, load_module_from_checkpoint
from lt_lightning.models.parts import check_data_facts, give_parts, mixup_from_config
from lt_lightning.optim import AGD, LRSchedule
from lt_lightning.spec import shot_groups
from tests.models.helpers import cpu_trainer, model_kwargs, sgd, synthetic_dm

SCHEDULE = LRSchedule(
    "multistep", interval="epoch", warmup_epochs=0.5, milestones=(1,), milestone_factors=(0.1,)
)


def _plain(value) -> bool:
    """Plain data: what ``torch.load(weights_only=True)`` reads back (no class, no callable)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, (bool, int, float, str, type(None)))


def test_python_parts_are_recorded_as_plain_data():
    dm = synthetic_dm()
    opt = sgd(lr=0.03, momentum=0.5, weight_decay=1e-3, nesterov=True)
    model = JointModule(**model_kwargs(dm, optimizer=opt, lr_schedule=SCHEDULE, mixup=Mixup(0.4)))
    hp = dict(model.hparams)
    assert hp["optimizer"] == {
        "class_path": "torch.optim.sgd.SGD",
        "init_args": {"lr": 0.03, "momentum": 0.5, "weight_decay": 1e-3, "nesterov": True},
    }
    assert hp["lr_schedule"] == {
        "name": "multistep",
        "interval": "epoch",
        "epoch_offset": 0,
        "warmup_epochs": 0.5,
        "warmup_start_factor": 0.0,
        "milestones": [1],
        "milestone_factors": [0.1],
    }
    assert hp["mixup"] == {"alpha": 0.4}
    assert _plain(hp)
    buffer = io.BytesIO()
    torch.save(hp, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == hp
    # and the objects the module uses are the ones given
    assert model.optimizer is opt and model.lr_schedule is SCHEDULE and model.mixup == Mixup(0.4)


def test_a_checkpoint_of_a_python_built_module_rebuilds_the_same_optimizer(tmp_path):
    dm = synthetic_dm()
    opt = sgd(lr=0.03, momentum=0.5, weight_decay=1e-3, nesterov=True)
    model = JointModule(**model_kwargs(dm, optimizer=opt, lr_schedule=SCHEDULE, mixup=Mixup(0.4)))
    trainer = cpu_trainer(tmp_path, max_epochs=1, max_steps=2)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    torch.load(tmp_path / "m.ckpt", weights_only=True)  # readable weights-only
    loaded = load_module_from_checkpoint(tmp_path / "m.ckpt")
    built = loaded.optimizer(loaded.named_trainable_parameters())
    original = opt(model.parameters())
    assert type(built) is torch.optim.SGD
    assert {k: v for k, v in built.defaults.items()} == original.defaults  # every setting, defaults too
    assert loaded.lr_schedule == SCHEDULE and loaded.mixup == Mixup(0.4)
    assert dict(loaded.hparams) == dict(model.hparams)


def test_an_optimizer_class_is_recorded_with_no_arguments():
    model = JointModule(**model_kwargs(synthetic_dm(), optimizer=torch.optim.AdamW))
    assert model.hparams.optimizer == {"class_path": "torch.optim.adamw.AdamW", "init_args": {}}


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda params: torch.optim.SGD([p for _, p in params], lr=0.1),
        functools.partial(torch.optim.Adam, betas=torch.tensor([0.9, 0.99])),  # a tensor argument
    ],
    ids=["lambda", "partial-with-a-tensor"],
)
def test_an_undescribable_optimizer_warns_and_is_left_out(tmp_path, optimizer):
    dm = synthetic_dm()
    with pytest.warns(
        UserWarning, match=r"cannot be recorded.*load_from_checkpoint\(\.\.\., optimizer=\.\.\.\)"
    ):
        model = JointModule(**model_kwargs(dm, optimizer=optimizer))
    assert "optimizer" not in model.hparams
    assert _plain(dict(model.hparams))
    trainer = cpu_trainer(tmp_path, max_epochs=1, max_steps=1)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    again = JointModule.load_from_checkpoint(tmp_path / "m.ckpt", optimizer=optimizer)  # given again
    assert again.optimizer is optimizer


def test_a_record_is_a_part_too():
    dm = synthetic_dm()
    record = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.2, "momentum": 0.8}}
    model = JointModule(
        **model_kwargs(dm, optimizer=record, lr_schedule={"name": "cosine"}, mixup={"alpha": 1})
    )
    opt = model.optimizer(model.named_trainable_parameters())
    assert type(opt) is torch.optim.SGD and opt.defaults["lr"] == 0.2 and opt.defaults["momentum"] == 0.8
    assert model.lr_schedule == LRSchedule("cosine") and model.mixup == Mixup(1)
    assert model.hparams.optimizer == record  # the record is kept as it was given


@pytest.mark.parametrize(
    "schedule",
    [
        None,
        LRSchedule("cosine"),
        LRSchedule("constant", warmup_epochs=1),
        {"name": "multistep", "milestones": [2], "milestone_factors": [0.1]},
    ],
    ids=["default-cosine", "cosine", "constant-with-warmup", "multistep-record"],
)
@pytest.mark.parametrize("agd", [AGD, functools.partial(AGD, gain=10.0)], ids=["class", "partial"])
def test_agd_with_a_schedule_that_is_not_constant_is_refused(schedule, agd):
    dm = synthetic_dm()
    with pytest.raises(
        ValueError, match="AGD optimizer chooses its own step size: set lr_schedule.name constant"
    ):
        FixedETFModule(**model_kwargs(dm, optimizer=agd, lr_schedule=schedule))


def test_agd_with_a_constant_schedule_is_accepted():
    dm = synthetic_dm()
    for schedule in (LRSchedule("constant"), LRSchedule("constant", warmup_epochs=1, epoch_offset=1)):
        model = FixedETFModule(
            **model_kwargs(dm, optimizer=functools.partial(AGD, gain=10.0), lr_schedule=schedule)
        )
        assert model.hparams.optimizer == {
            "class_path": "lt_lightning.optim.AGD",
            "init_args": {"gain": 10.0},
        }


def test_give_parts_keeps_a_record_the_cli_already_wrote():
    hparams = {"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.3}}, "lr_schedule": None}
    factory, schedule, mix = give_parts(hparams, hparams["optimizer"], None, None)
    assert hparams["optimizer"] == {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.3}}
    assert hparams["lr_schedule"] == LRSchedule().to_config() and mix is None
    assert factory.func is torch.optim.SGD and factory.keywords == {"lr": 0.3}


def test_mixup_from_config():
    assert mixup_from_config(None) is None
    assert mixup_from_config(Mixup(0.2)) == Mixup(0.2) == mixup_from_config({"alpha": 0.2})
    with pytest.raises(ValueError, match="mixup must be a Mixup, a dict of its fields or None"):
        mixup_from_config(0.2)


# ---- the datamodule's facts ---------------------------------------------------------------------------
def test_check_data_facts():
    dm = synthetic_dm()
    none = {"num_classes": None, "class_counts": None, "shot_groups": None}
    assert check_data_facts("M", none, dm) == dm.shot_groups  # not given: the datamodule's
    given = {"num_classes": 6, "class_counts": tuple(dm.class_counts), "shot_groups": list(dm.shot_groups)}
    assert check_data_facts("M", given, dm) is None  # given and equal: the module's own
    with pytest.raises(ValueError, match=r"M was built with class_counts=\[1, 2, 3, 4, 5, 6\] but"):
        check_data_facts("M", {**none, "class_counts": [1, 2, 3, 4, 5, 6]}, dm)


def test_equal_facts_given_as_tensors_are_equal(tmp_path):
    # regression: shot_groups from lt_lightning.spec.shot_groups (a LongTensor) equal to the datamodule's
    # were refused as different ("built with shot_groups=tensor([0, 0, 1, 1, 2, 2]) but ... [0, 0, 1, 1, 2, 2]")
    dm = synthetic_dm()
    groups = shot_groups(dm.class_counts, 60, 20)
    assert isinstance(groups, torch.Tensor) and groups.tolist() == dm.shot_groups
    model = JointModule(**model_kwargs(dm, shot_groups=groups, class_counts=torch.tensor(dm.class_counts)))
    cpu_trainer(tmp_path, max_epochs=1, max_steps=1).fit(model, datamodule=dm)
    assert model.global_step == 1
    with pytest.raises(ValueError, match="built with shot_groups="):
        check_data_facts("M", {"num_classes": 6, "class_counts": None, "shot_groups": 2 - groups}, dm)


# ---- the representation ---------------------------------------------------------------------------------
def test_trainable_backbone_without_weights_fails_at_construction():
    # Places-LT trains only layer4 of a pretrained ResNet: without the weights that is a frozen random net
    with pytest.raises(ValueError, match="weights_path"):
        JointModule(num_classes=5, backbone="resnet18", trainable_backbone=["net.layer4"])
    with pytest.raises(ValueError, match="weights_path"):
        JointModule(
            num_classes=5,
            backbone="resnet18",
            backbone_kwargs={"weights_path": None},
            trainable_backbone=["net.layer4"],
        )


def test_trainable_backbone_with_weights_freezes_all_but_the_prefix(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = JointModule(
        num_classes=5,
        backbone="resnet18",
        backbone_kwargs={"weights_path": str(path)},
        trainable_backbone=["net.layer4"],
    )
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("net.layer4") for n in trainable)
    assert any(not p.requires_grad for p in model.backbone.parameters())


def test_a_backbone_module_from_python_needs_a_feature_dimension():
    dm = synthetic_dm()
    with pytest.raises(ValueError, match="out_features|num_features"):
        JointModule(**model_kwargs(dm, backbone=torch.nn.Sequential(torch.nn.Linear(16, 8))))
