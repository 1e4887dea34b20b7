"""Small shared pieces for the method tests: a fast synthetic long-tailed problem and a CPU trainer."""

from __future__ import annotations

import lightning as L

from lt_lightning.data import SyntheticLTDataModule

K, D = 6, 16


def synthetic_dm(**kwargs) -> SyntheticLTDataModule:
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


def model_kwargs(dm: SyntheticLTDataModule, **kwargs) -> dict:
    args = {
        "num_classes": dm.num_classes,
        "class_counts": dm.class_counts,
        "many_threshold": dm.many_threshold,
        "few_threshold": dm.few_threshold,
        "backbone": "mlp",
        "backbone_kwargs": {"in_features": D, "hidden": [32]},
        "lr": 0.05,
        "lr_schedule": "constant",
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
