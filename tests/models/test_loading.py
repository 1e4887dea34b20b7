"""models/loading.py: ``load_module_from_checkpoint`` rebuilds any method from its checkpoint alone
(weights-only), and refuses files that are not checkpoints of an lt_lightning module by saying so. (Each
method's round trip is in tests/models/test_contract.py; 0.1 files in test_legacy_checkpoints.py.)"""

from __future__ import annotations

import pytest
import torch

from lt_lightning.models import CLASS_PATH_KEY, JointModule, TDEModule, load_module_from_checkpoint
from lt_lightning.models.loading import checkpoint_class
from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm


@pytest.fixture(scope="module")
def joint_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("joint")
    dm = synthetic_dm()
    trainer = cpu_trainer(tmp, max_epochs=1, max_steps=2)
    trainer.fit(JointModule(**model_kwargs(dm)), datamodule=dm)
    trainer.save_checkpoint(tmp / "joint.ckpt")
    return tmp / "joint.ckpt"


def _rewritten(tmp_path, joint_ckpt, **changes):
    ckpt = torch.load(joint_ckpt, weights_only=True)
    ckpt.update(changes)
    path = tmp_path / "changed.ckpt"
    torch.save(ckpt, path)
    return path


def test_the_class_is_read_from_the_checkpoint(joint_ckpt):
    ckpt = torch.load(joint_ckpt, weights_only=True)
    assert ckpt[CLASS_PATH_KEY] == "lt_lightning.models.joint.JointModule"
    assert checkpoint_class(ckpt, "here") is JointModule
    assert type(load_module_from_checkpoint(joint_ckpt)) is JointModule
    assert type(load_module_from_checkpoint(str(joint_ckpt), map_location="cpu")) is JointModule


def test_missing_empty_and_foreign_files_are_named(tmp_path, joint_ckpt):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_module_from_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_module_from_checkpoint(tmp_path / "empty.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="not a checkpoint of an lt_lightning module"):
        load_module_from_checkpoint(tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="not a checkpoint of an lt_lightning module"):
        load_module_from_checkpoint(_no_state(tmp_path, joint_ckpt))


def _no_state(tmp_path, joint_ckpt):
    ckpt = torch.load(joint_ckpt, weights_only=True)
    del ckpt["state_dict"]
    torch.save(ckpt, tmp_path / "nostate.ckpt")
    return tmp_path / "nostate.ckpt"


@pytest.mark.parametrize(
    ("class_path", "match"),
    [
        ("torch.nn.Linear", "which is not a lt_lightning.models.base.LongTailModule"),
        ("lt_lightning.models.joint.NoSuchModule", "cannot be found"),
        ("evil_package.Module", "which is not imported"),
    ],
)
def test_a_class_path_that_is_not_a_method_is_refused(tmp_path, joint_ckpt, class_path, match):
    with pytest.raises(ValueError, match=match):
        load_module_from_checkpoint(_rewritten(tmp_path, joint_ckpt, **{CLASS_PATH_KEY: class_path}))


def test_a_file_holding_python_objects_is_refused_unread(tmp_path, joint_ckpt):
    ckpt = torch.load(joint_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["note"] = _Note()
    torch.save(ckpt, tmp_path / "objects.ckpt")
    for load in (load_module_from_checkpoint, JointModule.load_from_checkpoint):
        with pytest.raises(ValueError, match="holds the Python object .*a pickle that could run code"):
            load(tmp_path / "objects.ckpt")


class _Note:
    """Any class: a weights-only load refuses to build it."""


def test_another_methods_checkpoint_is_refused_by_a_class(joint_ckpt):
    with pytest.raises(ValueError, match="is a JointModule checkpoint, not a TDEModule"):
        TDEModule.load_from_checkpoint(joint_ckpt)
