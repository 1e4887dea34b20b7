"""Small shared pieces for the method tests: a fast synthetic long-tailed problem, the arguments of a
module built from Python with today's parts (an optimizer ``functools.partial``, an
:class:`~lt_lightning.optim.LRSchedule`, the datamodule's facts), and a CPU trainer."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import torch

from lt_lightning.data import SyntheticLTDataModule
from lt_lightning.optim import LRSchedule

#: classes and input dimension of :func:`synthetic_dm`
K, D = 6, 16


def synthetic_dm(**kwargs) -> SyntheticLTDataModule:
    """6 Gaussian classes in 16-d, counts ``[120, 75, 47, 30, 19, 12]``, groups ``[0, 0, 1, 1, 2, 2]``."""
    args = {
        "num_classes": K,
        "feature_dim": D,
        "max_count": 120,
        "imbalance_ratio": 10,
        "test_per_class": 40,
        "batch_size": 32,
        "center_norm": 4.0,
        "noise_std": 1.0,
        "seed": 0,
        "many_threshold": 60,
        "few_threshold": 20,
    }
    args.update(kwargs)
    return SyntheticLTDataModule(**args)


def sgd(lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4, **kwargs) -> functools.partial:
    """The optimizer part as a user writes it in Python."""
    return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)


def facts(dm) -> dict:
    """The facts the CLI links from the datamodule into the model."""
    return {"num_classes": dm.num_classes, "class_counts": dm.class_counts, "shot_groups": dm.shot_groups}


def model_kwargs(dm, **kwargs) -> dict:
    """A stage-1 method on ``dm``: an MLP (16 → 32), SGD lr 0.05, a constant schedule, ``dm``'s facts."""
    args = {
        **facts(dm),
        "backbone": "mlp",
        "backbone_kwargs": {"in_features": D, "hidden": [32]},
        "optimizer": sgd(),
        "lr_schedule": LRSchedule("constant"),
    }
    args.update(kwargs)
    return args


def stage2_kwargs(dm, stage1_checkpoint: str | Path, **kwargs) -> dict:
    """A stage-2 method on ``dm`` over ``stage1_checkpoint`` (no representation options of its own)."""
    args = {
        **facts(dm),
        "stage1_checkpoint": str(stage1_checkpoint),
        "optimizer": sgd(),
        "lr_schedule": LRSchedule("constant"),
    }
    args.update(kwargs)
    return args


def cpu_trainer(tmp_path, max_epochs: int = 3, **kwargs) -> L.Trainer:
    args = {
        "max_epochs": max_epochs,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
        "num_sanity_val_steps": 0,
    }
    args.update(kwargs)
    return L.Trainer(**args)


def fit_stage1(tmp_path: Path, cls=None, max_epochs: int = 4, **kwargs) -> str:
    """Fit a stage-1 method (default: ``JointModule``) on :func:`synthetic_dm` and save its checkpoint."""
    from lt_lightning.models import JointModule

    cls = cls or JointModule
    dm = synthetic_dm()
    torch.manual_seed(0)
    trainer = cpu_trainer(tmp_path, max_epochs=max_epochs)
    trainer.fit(cls(**model_kwargs(dm, **kwargs)), datamodule=dm)
    path = Path(tmp_path) / f"{cls.__name__}.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def outputs_on(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` in eval mode without gradients (the module's mode is put back)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was)
    return out
