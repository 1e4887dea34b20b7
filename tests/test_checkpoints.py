"""lt_lightning.checkpoints: atomic writes (a kill mid-save keeps the previous file) and weights-only loads
(a checkpoint cannot run code, bad files are named, a file may only name lt_lightning classes or ones
already imported)."""

from __future__ import annotations

import copy
import errno
import functools
import os
import pickle
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from lt_lightning.checkpoints import (
    TRUSTED_MODULES,
    AtomicCheckpointIO,
    CheckpointWriteError,
    atomic_torch_save,
    check_class_paths,
    load_checkpoint_file,
    resolve_class,
)
from lt_lightning.data import SyntheticLTDataModule
from lt_lightning.data.augment import Mixup
from lt_lightning.models import (
    CLASS_PATH_KEY,
    DecoupledModule,
    FixedETFModule,
    ImplicitETFModule,
    JointModule,
    LongTailModule,
    LWSModule,
    TDEModule,
    load_module_from_checkpoint,
)
from lt_lightning.optim import LRSchedule
from tests.cli.helpers import run_fit


def _dm(**kwargs) -> SyntheticLTDataModule:
    args = {
        "num_classes": 6,
        "feature_dim": 16,
        "max_count": 120,
        "imbalance_ratio": 10,
        "test_per_class": 20,
    }
    return SyntheticLTDataModule(**{**args, "batch_size": 32, "seed": 0, **kwargs})


def _model_kwargs(dm: SyntheticLTDataModule, **kwargs) -> dict:
    return {
        "num_classes": dm.num_classes,
        "class_counts": dm.class_counts,
        "backbone": "mlp",
        "backbone_kwargs": {"in_features": 16, "hidden": [32]},
        "optimizer": functools.partial(torch.optim.SGD, lr=0.05),
        "lr_schedule": LRSchedule(name="constant"),
        **kwargs,
    }


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    args = {
        "max_epochs": 1,
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
        "num_sanity_val_steps": 0,
        "plugins": [AtomicCheckpointIO()],
    }
    return L.Trainer(**{**args, **kwargs})


def _fitted(tmp_path: Path, cls=JointModule, dm=None, **kwargs) -> Path:
    """A checkpoint of ``cls`` after one epoch on the synthetic problem."""
    dm = dm or _dm()
    trainer = _trainer(tmp_path)
    trainer.fit(cls(**_model_kwargs(dm, **kwargs)), datamodule=dm)
    path = tmp_path / f"{cls.__name__}.ckpt"
    trainer.save_checkpoint(path)
    return path


# ---------------------------------------------------------------------------------- atomic writes
def test_atomic_save_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "last.ckpt"
    atomic_torch_save({"a": torch.ones(2)}, path)
    atomic_torch_save({"a": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_a_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"a": torch.ones(2)}, path)
    with pytest.raises(AttributeError, match="Can't pickle local object"):
        atomic_torch_save({"b": torch.zeros(4), "a": lambda: 0}, path)  # fails half-way through pickling
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # the temporary file is removed


def test_checkpoint_io_takes_no_storage_options(tmp_path):
    with pytest.raises(TypeError, match="takes no storage_options"):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "x.ckpt", storage_options={"a": 1})


@pytest.mark.slow
def test_kill_while_writing_last_ckpt_keeps_the_previous_one(tmp_path):
    args = ["--config", "configs/digits_lt/joint.yaml", "--trainer.max_epochs", "4"]
    args = [str(Path(__file__).parents[1] / a) if a.endswith(".yaml") else a for a in args]
    assert run_fit(tmp_path, "save:2", *args).returncode == -9
    folder = tmp_path / "runs/digits_lt/joint/seed0"
    last = load_checkpoint_file(folder / "last.ckpt")  # loads: not truncated
    assert last["epoch"] == 1  # the good checkpoint of epoch 1, not a half-written epoch 2
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".ckpt") == [
        "last.ckpt"
    ]  # one file per epoch
    leftovers = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the half-written temp file
    # and the run resumes from it
    assert run_fit(tmp_path, "none", *args, "--ckpt_path", str(folder / "last.ckpt")).returncode == 0
    assert load_checkpoint_file(folder / "last.ckpt")["epoch"] == 3


# ---------------------------------------------------------------------------------- weights-only loads
class _Payload:
    """Pickles to a call that creates a marker file: what a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_a_pickle_payload_is_refused_on_every_load_path_not_run(tmp_path):
    good = torch.load(_fitted(tmp_path), weights_only=True)
    marker = tmp_path / "pwned"
    good["hyper_parameters"]["note"] = _Payload(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(good, evil)
    with pytest.raises(ValueError, match=r"evil\.ckpt.*could run code") as info:
        load_module_from_checkpoint(str(evil))
    assert "weights_only=False" not in str(info.value)  # never advise the unsafe load
    with pytest.raises(ValueError, match="could run code"):
        JointModule.load_from_checkpoint(str(evil))
    dm = _dm()
    with pytest.raises(ValueError, match=r"stage-1 checkpoint .*could run code"):
        DecoupledModule(stage1_checkpoint=str(evil), mode="crt", num_classes=dm.num_classes)
    with pytest.raises(ValueError, match="could run code"):
        AtomicCheckpointIO().load_checkpoint(evil)  # --ckpt_path resumes go through it too
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (JointModule, {}),
        (FixedETFModule, {"mixup": Mixup(alpha=1.0)}),
        (TDEModule, {}),
        (ImplicitETFModule, {}),
    ],
    ids=lambda v: getattr(v, "__name__", "") or ",".join(v) or "-",
)
def test_every_methods_checkpoint_loads_weights_only(tmp_path, cls, kwargs):
    path = _fitted(tmp_path, cls, **kwargs)
    module = load_module_from_checkpoint(str(path))
    assert type(module) is cls
    saved = load_checkpoint_file(path)["state_dict"]
    assert module.state_dict().keys() == saved.keys()
    for key, value in module.state_dict().items():
        assert torch.equal(value, saved[key]), key
    if "mixup" in kwargs:  # the part comes back from its plain record
        assert module.mixup == kwargs["mixup"]


@pytest.fixture(scope="module")
def stage2_ckpt(tmp_path_factory) -> Path:
    """An LWS checkpoint of a module built from Python through the ``DecoupledModule`` factory."""
    tmp_path = tmp_path_factory.mktemp("stage2")
    stage1 = _fitted(tmp_path)
    dm = _dm(sampler="class")
    kw = _model_kwargs(dm, stage1_checkpoint=str(stage1), mode="lws")
    for name in ("backbone", "backbone_kwargs"):  # stage 2 keeps the stage-1 representation
        kw.pop(name)
    model = DecoupledModule(**kw)
    assert type(model) is LWSModule  # DecoupledModule is a factory
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "stage2.ckpt")
    return tmp_path / "stage2.ckpt"


@pytest.mark.slow
def test_a_stage2_checkpoint_records_its_own_class(stage2_ckpt):
    assert load_checkpoint_file(stage2_ckpt)[CLASS_PATH_KEY] == "lt_lightning.models.decoupled.crt.LWSModule"
    with pytest.raises(ValueError, match=r"is a LWSModule checkpoint, not a JointModule"):
        JointModule.load_from_checkpoint(stage2_ckpt)


@pytest.mark.slow
def test_a_stage2_checkpoint_built_from_python_loads_as_its_own_class(stage2_ckpt):
    saved = load_checkpoint_file(stage2_ckpt)["state_dict"]
    for loaded in (
        load_module_from_checkpoint(str(stage2_ckpt)),
        DecoupledModule.load_from_checkpoint(stage2_ckpt),
    ):
        assert type(loaded) is LWSModule
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, saved[key]), key


@pytest.mark.slow
def test_bad_checkpoint_files_name_the_file(tmp_path):
    good = _fitted(tmp_path).read_bytes()
    cases = {
        "empty.ckpt": b"",
        "garbage.ckpt": b"this is not a checkpoint at all" * 10,
        "truncated.ckpt": good[: len(good) // 2],
        "pickle.ckpt": pickle.dumps({"a": 1}),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*missing\.ckpt"):
        load_module_from_checkpoint(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match=r"empty\.ckpt' is empty"):
        load_module_from_checkpoint(str(tmp_path / "empty.ckpt"))
    for name in ("garbage.ckpt", "truncated.ckpt", "pickle.ckpt"):
        with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}'"):
            load_module_from_checkpoint(str(tmp_path / name))
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(ValueError, match=r"list\.ckpt' holds a list, not a checkpoint dict"):
        load_checkpoint_file(tmp_path / "list.ckpt")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 0}, foreign)
    with pytest.raises(ValueError, match=f"not a checkpoint of an lt_lightning module .*{CLASS_PATH_KEY}"):
        load_module_from_checkpoint(str(foreign))
    torch.save({"state_dict": {}, CLASS_PATH_KEY: "os.system"}, foreign)
    with pytest.raises(
        ValueError, match=r"names 'os.system', which is not a lt_lightning.models.base.LongTailModule"
    ):
        load_module_from_checkpoint(str(foreign))


# ---------------------------------------------------------------------------------- resolve_class
def test_resolve_class_imports_only_lt_lightning_modules(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "lt_test_evil_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\nclass Model: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"'lt_test_evil_module', which is not imported"):
        resolve_class("lt_test_evil_module.Model", object, "checkpoint 'x.ckpt'")
    assert not marker.exists()  # a file cannot make us import (and so run) a module
    assert "lt_test_evil_module" not in sys.modules
    # our own modules are imported; a class of an already imported module is found
    assert resolve_class("lt_lightning.models.joint.JointModule", LongTailModule) is JointModule
    assert resolve_class("torch.optim.SGD", torch.optim.Optimizer) is torch.optim.SGD
    with pytest.raises(ValueError, match="'lt_lightning.models.joint.NoSuchModule', which cannot be found"):
        resolve_class("lt_lightning.models.joint.NoSuchModule", LongTailModule)
    with pytest.raises(ValueError, match="which is not a torch.optim.optimizer.Optimizer"):
        resolve_class("lt_lightning.models.joint.JointModule", torch.optim.Optimizer)
    with pytest.raises(ValueError, match="not imported"):
        resolve_class("NoModule", object)


# ---------------------------------------------------------------------------------- the import rule (issue 20)
#: where a checkpoint can name the module ``this`` (the Zen of Python is printed when it is imported)
THIS_PLACES = {
    "class": lambda c: c.__setitem__(CLASS_PATH_KEY, "this.Model"),
    "record": lambda c: c["hyper_parameters"].__setitem__("_class_path", "this.Model"),
    "instantiator": lambda c: c["hyper_parameters"].__setitem__("_instantiator", "this.build"),
    "optimizer": lambda c: c["hyper_parameters"].__setitem__(
        "optimizer", {"class_path": "this.Opt", "init_args": {}}
    ),
    "nested": lambda c: c["hyper_parameters"].__setitem__("stage1_module", {"a": [{"class_path": "this.M"}]}),
}


@pytest.fixture(scope="module")
def joint_ckpt(tmp_path_factory) -> dict:
    return torch.load(_fitted(tmp_path_factory.mktemp("joint")), weights_only=True)


def _naming_this(joint_ckpt: dict, tmp_path: Path, place: str) -> Path:
    ckpt = copy.deepcopy(joint_ckpt)
    THIS_PLACES[place](ckpt)
    path = tmp_path / f"this_{place}.ckpt"
    torch.save(ckpt, path)
    return path


def _load_paths(path: Path) -> dict:
    """Every library load path of a checkpoint file (the command-line ones: tests/cli/test_reliability_imports)."""
    dm = _dm(sampler="class")
    return {
        "load_module_from_checkpoint": lambda: load_module_from_checkpoint(str(path)),
        "load_from_checkpoint": lambda: JointModule.load_from_checkpoint(path),
        "trainer resume (AtomicCheckpointIO)": lambda: AtomicCheckpointIO().load_checkpoint(path),
        "stage1_checkpoint": lambda: (
            DecoupledModule(stage1_checkpoint=str(path), mode="crt", num_classes=6) if dm else None
        ),
        "load_checkpoint_file": lambda: load_checkpoint_file(path),
    }


@pytest.mark.slow
@pytest.mark.parametrize("place", list(THIS_PLACES))
def test_a_checkpoint_naming_a_module_is_refused_on_every_load_path_before_importing_it(
    tmp_path, joint_ckpt, place, capsys
):
    assert "this" not in sys.modules
    path = _naming_this(joint_ckpt, tmp_path, place)
    for name, load in _load_paths(path).items():
        with pytest.raises(ValueError) as info:
            load()
        message = str(info.value)
        assert "\n" not in message, name
        assert str(path) in message and "'this'" in message and "refused" in message, (name, message)
    assert "this" not in sys.modules  # nothing was imported ...
    assert "Beautiful is better than ugly" not in capsys.readouterr().out  # ... so nothing printed


def test_check_class_paths_allows_ours_imported_and_trusted_modules(monkeypatch):
    ok = {
        CLASS_PATH_KEY: "lt_lightning.models.joint.JointModule",
        "hyper_parameters": {
            "_instantiator": "lightning.pytorch.cli.instantiate_module",  # Lightning's own
            "optimizer": {"class_path": "torch.optim.SGD"},  # imported already
            "x": [{"class_path": "lt_lightning.optim.AGD"}],
        },
    }
    check_class_paths(ok, "checkpoint 'ok.ckpt'")
    bad = {"hyper_parameters": {"optimizer": {"class_path": "lt_test_not_imported.Opt"}}}
    with pytest.raises(ValueError, match=r"'ok.ckpt' names 'lt_test_not_imported.Opt' \(hyper_parameters"):
        check_class_paths(bad, "checkpoint 'ok.ckpt'")
    monkeypatch.setattr("lt_lightning.checkpoints.TRUSTED_MODULES", {"lt_test_not_imported"})
    check_class_paths(bad, "checkpoint 'ok.ckpt'")  # an explicit allow-list
    assert TRUSTED_MODULES == set()  # empty by default
    # a prefix is not a parent module: lt_lightning_evil is not lt_lightning
    with pytest.raises(ValueError, match="lt_lightning_evil"):
        check_class_paths({CLASS_PATH_KEY: "lt_lightning_evil.M"}, "x")


# ---------------------------------------------------------------------------------- bad files, one line each
@pytest.mark.slow
def test_bad_files_give_one_line_naming_the_file_and_never_advise_an_unsafe_load(tmp_path, joint_ckpt):
    good_path = tmp_path / "good.ckpt"
    torch.save(joint_ckpt, good_path)
    good = good_path.read_bytes()
    cases = {
        "empty.ckpt": (b"", "is empty"),
        "truncated.ckpt": (good[: len(good) // 2], "is truncated"),
        "head.ckpt": (good[:100], "is truncated"),
        "random.ckpt": (
            bytes(torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0)).tolist()),
            "not a readable",
        ),
        "text.ckpt": (b"epoch: 3\n" * 20, "not a readable"),
        "json.ckpt": (b'{"state_dict": {}}', "not a readable"),
        "object.ckpt": (pickle.dumps(os.getcwd, protocol=2), "holds the Python object posix.getcwd"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError) as info:
            load_checkpoint_file(tmp_path / name)
        message = str(info.value)
        assert expected in message and repr(str(tmp_path / name)) in message, (name, message)
        assert "\n" not in message and "weights_only=False" not in message, (name, message)
    with pytest.raises(IsADirectoryError, match="is a folder; give a .ckpt file"):
        load_checkpoint_file(tmp_path)


# ---------------------------------------------------------------------------------- failed writes
@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"), (errno.EACCES, "permission denied")],
)
def test_a_failed_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, code, reason):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"a": torch.ones(2)}, path)
    real_fsync = os.fsync

    def fail(fd):  # the kernel reports a full disk at the write or, with delayed allocation, at fsync
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(CheckpointWriteError) as info:
        AtomicCheckpointIO().save_checkpoint({"a": torch.zeros(3)}, path)
    monkeypatch.setattr(os, "fsync", real_fsync)
    message = str(info.value)
    assert reason in message and str(path) in message and "\n" not in message
    assert info.value.__cause__ is None  # the command line prints it as one line (root cause)
    assert isinstance(info.value, PermissionError)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))  # intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left


def test_other_os_errors_of_a_write_are_not_renamed(tmp_path, monkeypatch):
    def fail(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="I/O error") as info:
        atomic_torch_save({"a": torch.ones(1)}, tmp_path / "x.ckpt")
    assert not isinstance(info.value, CheckpointWriteError)


def test_a_run_saved_with_save_last_resumes_into_one_last_ckpt(tmp_path):
    # runs written before the configs named their per-epoch checkpoint `last` (an epoch file plus a copy
    # as last.ckpt) resume with the new callback into the same last.ckpt: no last-v1.ckpt beside it
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    def fit(checkpoint, epochs, ckpt_path=None):
        trainer = L.Trainer(
            max_epochs=epochs,
            limit_train_batches=2,
            limit_val_batches=0,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[checkpoint],
        )
        trainer.fit(BoringModel(), ckpt_path=ckpt_path)

    fit(ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=1), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=1-step=4.ckpt", "last.ckpt"]
    new = ModelCheckpoint(dirpath=tmp_path, filename="last", save_top_k=1, enable_version_counter=False)
    fit(new, 4, ckpt_path=str(tmp_path / "last.ckpt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert load_checkpoint_file(tmp_path / "last.ckpt")["epoch"] == 3
